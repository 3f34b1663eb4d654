package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// startMosquitto runs a real broker on a free port for the test. Without
// mosquitto in PATH the test is skipped, or fails in CI (CI=true).
func startMosquitto(tb testing.TB) string {
	tb.Helper()
	return runMosquitto(tb, freeAddr(tb)).url()
}

// mosquitto is a broker process of the test's own, with Mosquitto's
// defaults (max_inflight_messages 20).
type mosquitto struct {
	tb   testing.TB
	addr string
	cmd  *exec.Cmd
	once sync.Once
}

// runMosquitto starts a broker on addr and waits until it listens; the test's
// end kills it.
func runMosquitto(tb testing.TB, addr string) *mosquitto {
	tb.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("mosquitto not in PATH (CI=true: required)")
		}
		tb.Skip("mosquitto not in PATH")
	}
	port := addr[len("127.0.0.1:"):]
	conf := filepath.Join(tb.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\n", port)), 0o600); err != nil {
		tb.Fatal(err)
	}
	m := &mosquitto{tb: tb, addr: addr, cmd: exec.Command(bin, "-c", conf)}
	if err := m.cmd.Start(); err != nil {
		tb.Fatalf("start mosquitto: %v", err)
	}
	tb.Cleanup(m.kill)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return m
		}
		if time.Now().After(deadline) {
			tb.Fatalf("mosquitto did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *mosquitto) url() string { return "tcp://" + m.addr }

// pause stops the process (SIGSTOP): its connections stay open, nothing is
// acknowledged.
func (m *mosquitto) pause() {
	if err := m.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		m.tb.Fatalf("pause mosquitto: %v", err)
	}
}

// kill sends SIGKILL and waits for the exit; the kernel closes its sockets.
func (m *mosquitto) kill() {
	m.once.Do(func() {
		if err := m.cmd.Process.Kill(); err != nil {
			m.tb.Logf("kill mosquitto: %v", err)
		}
		var exit *exec.ExitError
		if err := m.cmd.Wait(); err != nil && !errors.As(err, &exit) {
			m.tb.Logf("wait for mosquitto: %v", err)
		}
	})
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newClient(tb testing.TB, url string, change ...func(*Options)) *Client {
	tb.Helper()
	o := Options{
		Brokers: []string{url}, ClientID: "broker-test", StatusTopic: "clients/broker-test/status",
		PublishTimeout: 2 * time.Second, MaxInflight: 20, Registerer: prometheus.NewRegistry(),
	}
	for _, f := range change {
		f(&o)
	}
	c, err := New(slog.New(slog.DiscardHandler), o)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		// The test's context is cancelled before its cleanups run.
		if err := c.Close(context.WithoutCancel(tb.Context())); err != nil {
			tb.Logf("close: %v", err)
		}
	})
	return c
}

// recorder subscribes to filter with its own client and records arrivals.
type recorder struct {
	mu   sync.Mutex
	msgs []mqtt.Message
}

func record(tb testing.TB, url, filter string) *recorder {
	tb.Helper()
	r := &recorder{}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("recorder-" + filter).SetOrderMatters(true))
	if t := c.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		tb.Fatalf("recorder connect: %v", t.Error())
	}
	tb.Cleanup(func() { c.Disconnect(50) })
	t := c.Subscribe(filter, 2, func(_ mqtt.Client, m mqtt.Message) {
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	})
	if !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		tb.Fatalf("recorder subscribe: %v", t.Error())
	}
	return r
}

func (r *recorder) wait(tb testing.TB, n int) []mqtt.Message {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := append([]mqtt.Message(nil), r.msgs...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			tb.Fatalf("recorded %d messages, want %d", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitConnected(tb testing.TB, c *Client) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !c.Connected() {
		if time.Now().After(deadline) {
			tb.Fatal("not connected within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Without a broker, Publish refuses at once instead of queueing the message
// for a connection that may never come.
func TestPublishNotConnected(t *testing.T) {
	c := newClient(t, "tcp://"+freeAddr(t))
	start := time.Now()
	err := c.Publish(t.Context(), message.Message{Topic: "a", Payload: []byte("x"), QoS: 1})
	took := time.Since(start)
	if !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Publish without a broker = %v, want ErrNotConnected", err)
	}
	t.Logf("refused in %v", took)
	if took > time.Second {
		t.Errorf("Publish without a broker took %v, want an answer at once", took)
	}
	errs := c.PublishAll(t.Context(), []message.Message{{Topic: "a"}, {Topic: "b"}})
	for i, err := range errs {
		if !errors.Is(err, ErrNotConnected) {
			t.Errorf("PublishAll item %d = %v, want ErrNotConnected", i, err)
		}
	}
}

func TestPublishAndStatus(t *testing.T) {
	url := startMosquitto(t)
	status := record(t, url, "clients/broker-test/status")
	data := record(t, url, "data/#")
	c := newClient(t, url)
	waitConnected(t, c)
	if got := status.wait(t, 1); string(got[0].Payload()) != statusOnline {
		t.Errorf("status %q, want %q", got[0].Payload(), statusOnline)
	}

	for q := byte(0); q <= 2; q++ {
		if err := c.Publish(t.Context(), message.Message{Topic: fmt.Sprintf("data/q%d", q), Payload: []byte{q, 0, 0xff}, QoS: q}); err != nil {
			t.Errorf("Publish QoS %d: %v", q, err)
		}
	}
	var batch []message.Message
	for i := range 100 {
		batch = append(batch, message.Message{Topic: "data/batch", Payload: []byte(fmt.Sprint(i)), QoS: 1})
	}
	for i, err := range c.PublishAll(t.Context(), batch) {
		if err != nil {
			t.Errorf("PublishAll item %d: %v", i, err)
		}
	}
	got := data.wait(t, 103)
	for q := range 3 {
		m := got[q]
		if m.Topic() != fmt.Sprintf("data/q%d", q) || string(m.Payload()) != string([]byte{byte(q), 0, 0xff}) || m.Qos() != byte(q) {
			t.Errorf("message %d: %s %x qos %d, want data/q%d %x qos %d", q, m.Topic(), m.Payload(), m.Qos(), q, []byte{byte(q), 0, 0xff}, q)
		}
	}
	for i, m := range got[3:] {
		if string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("batch message %d is %q: out of order", i, m.Payload())
		}
	}

	if err := c.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := status.wait(t, 2); string(got[1].Payload()) != statusOffline || c.Connected() {
		t.Errorf("after Close: status %q, connected %v; want %q, false", got[1].Payload(), c.Connected(), statusOffline)
	}
}

// fakeToken is a publish token that Paho completed with err.
type fakeToken struct{ err error }

func (f fakeToken) Wait() bool                     { return true }
func (f fakeToken) WaitTimeout(time.Duration) bool { return true }
func (f fakeToken) Done() <-chan struct{}          { return closedChan() }
func (f fakeToken) Error() error                   { return f.err }

// Every error Paho can complete a publish token with is one of the domain's,
// so that the API answers 503 or 504 for it, never 500.
func TestTokenErrors(t *testing.T) {
	epipe := &net.OpError{Op: "write", Net: "tcp",
		Source: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 39192},
		Addr:   &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1883},
		Err:    os.NewSyscallError("write", syscall.EPIPE)}
	tests := []struct {
		name   string
		err    error
		lost   bool // the connection was lost meanwhile
		want   error
		detail string // what the error must say ("": anything)
	}{
		{"broken pipe", epipe, false, ErrConnectionLost, "write: broken pipe"},
		{"broken pipe, connection lost", epipe, true, ErrConnectionLost, ""},
		{"reset", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ECONNRESET)}, false, ErrConnectionLost, "connection reset by peer"},
		{"closed connection", net.ErrClosed, false, ErrConnectionLost, "use of closed network connection"},
		{"lost before completion", errors.New("connection lost before Publish completed"), false, ErrConnectionLost, "lost before Publish completed"},
		{"unknown", errors.New("something else"), false, ErrConnectionLost, "something else"},
		{"not connected", mqtt.ErrNotConnected, false, ErrNotConnected, "not connected"},
		{"writer timeout", errors.New(pahoWriteTimeout), false, ErrTimeout, pahoWriteTimeout},
		{"writer timeout, connection lost", errors.New(pahoWriteTimeout), true, ErrConnectionLost, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lost := make(chan struct{})
			if tt.lost {
				close(lost)
			}
			d := deadline{ctx: t.Context(), timer: time.NewTimer(time.Minute)}
			defer d.timer.Stop()
			got := wait(&d, fakeToken{tt.err}, lost)
			if !errors.Is(got, tt.want) {
				t.Errorf("wait on a token failed with %q = %v, want %v", tt.err, got, tt.want)
			}
			if !strings.Contains(got.Error(), tt.detail) {
				t.Errorf("error %q, want it to say %q", got, tt.detail)
			}
			if strings.Contains(got.Error(), "10.0.0.") {
				t.Errorf("error %q names the network's addresses", got)
			}
		})
	}
}

// The broker is killed while publishes are under way, again and again: every
// publish either succeeds or fails with one of the domain's errors, and the
// failures of the connection itself (a write that fails on a connection
// that is gone) are ErrConnectionLost.
func TestPublishBrokerKilled(t *testing.T) {
	m := runMosquitto(t, freeAddr(t))
	c := newClient(t, m.url())
	waitConnected(t, c)

	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m := message.Message{Topic: fmt.Sprintf("killed/%d", w), Payload: []byte(fmt.Sprint(i)), QoS: byte(i % 3)}
				err := c.Publish(t.Context(), m)
				kind := "ok"
				switch {
				case err == nil:
				case errors.Is(err, ErrConnectionLost):
					kind = "connection lost"
				case errors.Is(err, ErrNotConnected):
					kind = "not connected"
					time.Sleep(time.Millisecond)
				case errors.Is(err, ErrTimeout):
					kind = "timeout"
				default:
					t.Errorf("publish QoS %d: %v (%T), want nil or a domain error", m.QoS, err, err)
					kind = "other"
				}
				mu.Lock()
				counts[kind]++
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	m.kill()
	// Until the client has noticed: on a loaded machine Paho may take
	// longer than the publishes in flight take to time out.
	refused := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return counts["connection lost"]+counts["not connected"] > 0
	}
	for deadline := time.Now().Add(10 * time.Second); !refused() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("publishes by outcome: %v", counts)
	if counts["ok"] == 0 || counts["connection lost"]+counts["not connected"] == 0 {
		t.Errorf("outcomes %v: want some publishes through and some refused", counts)
	}
}
