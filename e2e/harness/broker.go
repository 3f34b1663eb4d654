package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Broker is a Mosquitto process of the test's own, on a free port, with its
// configuration and persistence in a temporary directory. It survives Stop and
// Kill so that a test can start it again with the same port and the same
// persistence file.
type Broker struct {
	tb   testing.TB
	bin  string
	port int
	dir  string
	conf string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// BrokerOption changes the configuration a Broker is started with.
type BrokerOption func(*brokerConfig)

type brokerConfig struct {
	lines []string
}

// WithConfig adds lines to the generated mosquitto.conf (later lines win for
// settings Mosquitto reads once).
func WithConfig(lines ...string) BrokerOption {
	return func(c *brokerConfig) { c.lines = append(c.lines, lines...) }
}

// StartBroker writes a configuration and starts Mosquitto with it. Anonymous
// clients are allowed; persistence is on, saved every second, and the queue
// of a persistent session is not capped at Mosquitto's default of 1000.
func StartBroker(tb testing.TB, opts ...BrokerOption) *Broker {
	tb.Helper()
	bin := Need(tb, "mosquitto")
	var cfg brokerConfig
	for _, o := range opts {
		o(&cfg)
	}
	b := &Broker{tb: tb, bin: bin, port: FreePort(tb), dir: tb.TempDir()}
	conf := []string{
		fmt.Sprintf("listener %d 127.0.0.1", b.port),
		"allow_anonymous true",
		"persistence true",
		"persistence_location " + b.dir + "/",
		"autosave_interval 1",
		"max_queued_messages 1000000",
		"max_inflight_messages 100",
		"log_dest file " + filepath.Join(b.dir, "mosquitto.log"),
		"log_type error",
		"log_type warning",
		"log_type notice",
		"log_type information",
		"connection_messages true",
	}
	if os.Geteuid() == 0 {
		// Run as root, Mosquitto drops to the user "mosquitto", which cannot
		// write the persistence file into the test's directory.
		conf = append(conf, "user root")
	}
	conf = append(conf, cfg.lines...)
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	if err := os.WriteFile(b.conf, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		tb.Fatalf("write mosquitto.conf: %v", err)
	}
	tb.Cleanup(func() {
		b.signal(syscall.SIGCONT)
		b.stop(syscall.SIGKILL)
		if tb.Failed() {
			if log, err := os.ReadFile(b.LogPath()); err == nil {
				tb.Logf("mosquitto log (last 4 KiB):\n%s", tail(log, 4096))
			}
		}
	})
	b.Start()
	return b
}

// URL is the broker's address as MQTT_BROKER takes it.
func (b *Broker) URL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", b.port) }

// Addr is host:port.
func (b *Broker) Addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }

// Port is the TCP port the broker listens on.
func (b *Broker) Port() int { return b.port }

// Dir holds the configuration, the log and the persistence file.
func (b *Broker) Dir() string { return b.dir }

// LogPath is Mosquitto's log file.
func (b *Broker) LogPath() string { return filepath.Join(b.dir, "mosquitto.log") }

// Start starts the broker (again) and waits until it accepts connections.
func (b *Broker) Start() {
	b.tb.Helper()
	b.mu.Lock()
	if b.cmd != nil {
		b.mu.Unlock()
		b.tb.Fatalf("broker already running")
	}
	cmd := exec.Command(b.bin, "-c", b.conf)
	cmd.Dir = b.dir
	if err := cmd.Start(); err != nil {
		b.mu.Unlock()
		b.tb.Fatalf("start mosquitto: %v", err)
	}
	done := make(chan struct{})
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	if !waitTCP(b.Addr(), 10*time.Second) {
		log, _ := os.ReadFile(b.LogPath())
		b.tb.Fatalf("mosquitto did not listen on %s:\n%s", b.Addr(), tail(log, 2048))
	}
}

// Stop sends SIGTERM and waits for the exit: Mosquitto saves its
// persistence file on the way out.
func (b *Broker) Stop() { b.tb.Helper(); b.stop(syscall.SIGTERM) }

// Kill sends SIGKILL and waits: whatever was not saved yet is gone.
func (b *Broker) Kill() { b.tb.Helper(); b.stop(syscall.SIGKILL) }

// Pause stops the process (SIGSTOP): connections stay open but nothing is
// read or acknowledged.
func (b *Broker) Pause() { b.signal(syscall.SIGSTOP) }

// Resume continues a paused broker (SIGCONT).
func (b *Broker) Resume() { b.signal(syscall.SIGCONT) }

func (b *Broker) signal(sig syscall.Signal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		_ = b.cmd.Process.Signal(sig)
	}
}

func (b *Broker) stop(sig syscall.Signal) {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd, b.done = nil, nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
