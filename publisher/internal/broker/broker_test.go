package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
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
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("mosquitto not in PATH (CI=true: required)")
		}
		tb.Skip("mosquitto not in PATH")
	}
	addr := freeAddr(tb)
	port := addr[len("127.0.0.1:"):]
	conf := filepath.Join(tb.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\n", port)), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start mosquitto: %v", err)
	}
	tb.Cleanup(func() {
		if err := cmd.Process.Kill(); err != nil {
			tb.Logf("kill mosquitto: %v", err)
		}
		var exit *exec.ExitError
		if err := cmd.Wait(); err != nil && !errors.As(err, &exit) {
			tb.Logf("wait for mosquitto: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return "tcp://" + addr
		}
		if time.Now().After(deadline) {
			tb.Fatalf("mosquitto did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

func newClient(tb testing.TB, url string) *Client {
	tb.Helper()
	c, err := New(slog.New(slog.DiscardHandler), Options{
		URL: url, ClientID: "broker-test", StatusTopic: "clients/broker-test/status",
		PublishTimeout: 2 * time.Second, Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Close(tb.Context()); err != nil {
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
