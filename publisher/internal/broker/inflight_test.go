package broker

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

func publishPacket(id uint16, qos byte) *packets.PublishPacket {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.MessageID, p.Qos, p.TopicName = id, qos, "t"
	return p
}

func newDeadline(t *testing.T, d time.Duration) *deadline {
	t.Helper()
	dl := &deadline{ctx: t.Context(), timer: time.NewTimer(d), err: ErrTimeout}
	t.Cleanup(func() { dl.timer.Stop() })
	return dl
}

// A slot is held from acquire until Paho deletes the stored publish; only
// outgoing QoS 1 and 2 publishes hold one.
func TestInflightSlots(t *testing.T) {
	f := newInflight(2)
	f.Open()
	never := make(chan struct{})
	mustAcquire := func() {
		t.Helper()
		if _, err := f.acquire(newDeadline(t, time.Second), never); err != nil {
			t.Fatalf("acquire with a slot free: %v", err)
		}
	}
	check := func(what string, want int) {
		t.Helper()
		if got := f.inUse(); got != want {
			t.Errorf("%s: %d slots in use, want %d", what, got, want)
		}
	}

	mustAcquire()
	f.Put("o.1", publishPacket(1, 1))
	mustAcquire()
	f.Put("o.2", publishPacket(2, 2))
	check("two publishes stored", 2)

	// Not publishes of ours: an incoming QoS 2 publish, a QoS 0 one, an
	// outgoing PUBACK.
	f.Put("i.7", publishPacket(7, 2))
	f.Put("o.8", publishPacket(8, 0))
	pa := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
	pa.MessageID = 9
	f.Put("o.9", pa)
	f.Del("i.7")
	f.Del("o.8")
	f.Del("o.9")
	check("other packets stored and deleted", 2)

	start := time.Now()
	waited, err := f.acquire(newDeadline(t, 50*time.Millisecond), never)
	if !errors.Is(err, ErrTimeout) || waited < 40*time.Millisecond {
		t.Errorf("acquire with every slot taken = %v after %v, want ErrTimeout after the deadline", err, waited)
	}
	lost := make(chan struct{})
	time.AfterFunc(20*time.Millisecond, func() { close(lost) })
	if _, err := f.acquire(newDeadline(t, time.Second), lost); !errors.Is(err, ErrNotConnected) {
		t.Errorf("acquire while the connection drops = %v, want ErrNotConnected", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("the refused acquires took %v", d)
	}

	// The acknowledgement frees a slot for a waiting publish.
	got := make(chan error, 1)
	go func() {
		_, err := f.acquire(newDeadline(t, 5*time.Second), never)
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	f.Del("o.1")
	if err := <-got; err != nil {
		t.Fatalf("acquire after an acknowledgement: %v", err)
	}
	f.Put("o.3", publishPacket(3, 1))
	check("after an acknowledgement and a new publish", 2)
	f.Del("o.1") // deleted twice: no second release
	check("a key deleted twice", 2)

	// A publish Paho refused before storing gives its slot back.
	f.Del("o.3")
	mustAcquire()
	f.release()
	check("a publish refused before storing", 1)

	// A clean session's first connect: Paho forgets what it held.
	f.Reset()
	check("after Reset", 0)
	f.Del("o.2")
	check("an acknowledgement after Reset", 0)
}

// A batch of 1000 QoS 2 messages and 400 concurrent QoS 2 publishes through
// slots of Mosquitto's default max_inflight_messages (20): every one
// acknowledged arrives, the batch in order. Past the broker's limit,
// Mosquitto would acknowledge and drop them.
func TestPublishWithinMaxInflight(t *testing.T) {
	url := startMosquitto(t) // max_inflight_messages 20, the default
	data := record(t, url, "inflight/#")
	c := newClient(t, url) // MaxInflight 20
	waitConnected(t, c)

	var batch []message.Message
	for i := range 1000 {
		batch = append(batch, message.Message{Topic: "inflight/batch", Payload: []byte(fmt.Sprint(i)), QoS: 2})
	}
	for i, err := range c.PublishAll(t.Context(), batch) {
		if err != nil {
			t.Fatalf("batch item %d: %v", i, err)
		}
	}
	got := data.wait(t, 1000)
	for i, m := range got[:1000] {
		if string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("batch message %d is %q: lost or out of order", i, m.Payload())
		}
	}

	var wg sync.WaitGroup
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := message.Message{Topic: "inflight/concurrent", Payload: []byte(fmt.Sprint(i)), QoS: byte(1 + i%2)}
			if err := c.Publish(t.Context(), m); err != nil {
				t.Errorf("concurrent publish %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	got = data.wait(t, 1400)
	seen := map[string]bool{}
	for _, m := range got[1000:] {
		seen[string(m.Payload())] = true
	}
	if len(got) != 1400 || len(seen) != 400 {
		t.Errorf("received %d messages, %d distinct concurrent ones; want 1400 and 400", len(got), len(seen))
	}
	if n := c.inflight.inUse(); n != 0 {
		t.Errorf("%d slots in use after every publish was acknowledged, want 0", n)
	}
}

// A publish that timed out keeps its slot while Paho still holds the message:
// after the reconnect Paho sends it again, and only that copy's
// acknowledgement frees the slot. Meanwhile new publishes wait, so the new
// connection never carries more than MaxInflight unacknowledged publishes.
func TestInflightSlotsAcrossReconnect(t *testing.T) {
	const max = 5
	addr := freeAddr(t)
	broker := runMosquitto(t, addr)
	c := newClient(t, broker.url(), func(o *Options) {
		o.MaxInflight = max
		o.PublishTimeout = 500 * time.Millisecond
	})
	waitConnected(t, c)

	broker.pause()
	var wg sync.WaitGroup
	for i := range max {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Publish(t.Context(), message.Message{Topic: "resent", Payload: []byte(fmt.Sprint(i)), QoS: byte(1 + i%2)})
			if !errors.Is(err, ErrTimeout) {
				t.Errorf("publish %d to a paused broker = %v, want ErrTimeout", i, err)
			}
		}()
	}
	wg.Wait()
	if n := c.inflight.inUse(); n != max {
		t.Fatalf("%d slots in use after the publishes timed out, want %d: Paho still holds them", n, max)
	}
	err := c.Publish(t.Context(), message.Message{Topic: "waits", Payload: []byte("x"), QoS: 1})
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("publish with every slot held = %v, want ErrTimeout", err)
	}

	broker.kill()
	runMosquitto(t, addr)
	deadline := time.Now().Add(15 * time.Second)
	for c.inflight.inUse() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still in use 15s after the broker came back", c.inflight.inUse())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.Publish(t.Context(), message.Message{Topic: "after", Payload: []byte("x"), QoS: 2}); err != nil {
		t.Fatalf("publish after the reconnect: %v", err)
	}
}
