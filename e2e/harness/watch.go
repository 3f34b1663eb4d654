package harness

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Message is what a Watcher received.
type Message struct {
	Topic     string
	Payload   []byte
	QoS       byte
	Retained  bool
	Duplicate bool
}

// Watcher is an MQTT client of the test's own that records every message
// arriving on one filter.
type Watcher struct {
	client mqtt.Client

	mu   sync.Mutex
	msgs []Message
}

var clientSeq atomic.Int64

// Watch connects to brokerURL, subscribes to filter at QoS 2 and records what
// arrives until the test ends.
func Watch(tb testing.TB, brokerURL, filter string) *Watcher {
	tb.Helper()
	w := &Watcher{}
	opts := mqtt.NewClientOptions().
		AddBroker(brokerURL).
		SetClientID(fmt.Sprintf("e2e-watch-%d-%d", time.Now().UnixNano()%1e6, clientSeq.Add(1))).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			w.mu.Lock()
			w.msgs = append(w.msgs, Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), QoS: m.Qos(), Retained: m.Retained(), Duplicate: m.Duplicate()})
			w.mu.Unlock()
		})
	w.client = mqtt.NewClient(opts)
	if t := w.client.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		tb.Fatalf("watcher connect %s: %v", brokerURL, t.Error())
	}
	if t := w.client.Subscribe(filter, 2, nil); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		tb.Fatalf("watcher subscribe %s: %v", filter, t.Error())
	}
	tb.Cleanup(func() { w.client.Disconnect(100) })
	return w
}

// Messages returns what arrived so far, in order of arrival.
func (w *Watcher) Messages() []Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Message(nil), w.msgs...)
}

// WaitFor waits up to d for a message for which match is true and returns it.
func (w *Watcher) WaitFor(tb testing.TB, d time.Duration, match func(Message) bool) Message {
	tb.Helper()
	var found Message
	if !Eventually(d, func() bool {
		for _, m := range w.Messages() {
			if match(m) {
				found = m
				return true
			}
		}
		return false
	}) {
		tb.Fatalf("no matching MQTT message within %v; got %d messages", d, len(w.Messages()))
	}
	return found
}

// Client connects a plain paho client (clean session, no reconnect) for a test
// that publishes or subscribes itself.
func Client(tb testing.TB, brokerURL, clientID string, cleanSession bool) mqtt.Client {
	tb.Helper()
	opts := mqtt.NewClientOptions().
		AddBroker(brokerURL).
		SetClientID(clientID).
		SetCleanSession(cleanSession).
		SetAutoReconnect(false)
	c := mqtt.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		tb.Fatalf("connect %s as %s: %v", brokerURL, clientID, t.Error())
	}
	tb.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(100)
		}
	})
	return c
}

// Publish publishes one message with c and waits for its acknowledgement.
func Publish(tb testing.TB, c mqtt.Client, topic string, qos byte, retained bool, payload []byte) {
	tb.Helper()
	t := c.Publish(topic, qos, retained, payload)
	if !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		tb.Fatalf("publish %s: %v", topic, t.Error())
	}
}
