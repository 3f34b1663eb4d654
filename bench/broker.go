package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Broker is the run's own Mosquitto on a free loopback port.
type Broker struct {
	Addr   string   // 127.0.0.1:port
	Config []string // the lines of its mosquitto.conf, for the report
	cmd    *exec.Cmd
	done   chan struct{}
}

// URL is the broker as MQTT_BROKER and paho take it.
func (b *Broker) URL() string { return "tcp://" + b.Addr }

// startBroker writes a configuration into dir and starts bin with it.
// Persistence is off: no scenario restarts the broker, and the queue of an
// offline persistent session lives in memory either way. The in-flight
// window and the queue bound are set deliberately because they bound what
// a subscriber can batch and how much an offline one can accumulate.
func startBroker(ctx context.Context, bin, dir string, maxInflight, maxQueued int) (*Broker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b := &Broker{Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	b.Config = []string{
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"allow_anonymous true",
		"persistence false",
		fmt.Sprintf("max_inflight_messages %d", maxInflight),
		fmt.Sprintf("max_queued_messages %d", maxQueued),
		"max_queued_bytes 0",
		"set_tcp_nodelay true",
		"log_dest file " + filepath.Join(dir, "mosquitto.log"),
		"log_type error",
		"log_type warning",
		"log_type notice",
	}
	if os.Geteuid() == 0 {
		// As root Mosquitto would drop to the user "mosquitto", who may
		// not write the log into this directory.
		b.Config = append(b.Config, "user root")
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(b.Config, "\n")+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write mosquitto.conf: %w", err)
	}
	b.cmd = exec.Command(bin, "-c", conf)
	b.cmd.Dir = dir
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	b.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		// Its own log (log_dest file) says why it ended, if it was not us.
		if err := cmd.Wait(); err != nil {
			fmt.Fprintf(logFile{filepath.Join(dir, "mosquitto.log")}, "bench: mosquitto: %v\n", err)
		}
		close(done)
	}(b.cmd, b.done)
	if err := waitTCP(ctx, b.Addr, 10*time.Second); err != nil {
		return nil, errors.Join(fmt.Errorf("mosquitto on %s: %w", b.Addr, err), b.Stop())
	}
	return b, nil
}

// Pid is the broker's process id.
func (b *Broker) Pid() int { return b.cmd.Process.Pid }

// Stop ends the broker with SIGTERM, SIGKILL after 5 s.
func (b *Broker) Stop() error {
	if b == nil || b.cmd == nil {
		return nil
	}
	err := stopProcess(b.cmd.Process, b.done, 5*time.Second)
	b.cmd = nil
	return err
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before it is used; on a bench machine that is unlikely enough.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

func waitTCP(ctx context.Context, addr string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var dialer net.Dialer
	for {
		c, err := dialer.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return errors.New("not listening after " + d.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
