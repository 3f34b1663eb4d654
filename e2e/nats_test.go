package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// The publisher and the subscriber against one NATS node (its MQTT
// gateway, JetStream behind it) instead of Mosquitto: an HTTP publish at
// each QoS is stored byte for byte, as with Mosquitto.
func TestNATSRoundTripQoS(t *testing.T) {
	n := harness.StartNATS(t)
	sub, pub := startServices(t, n, nil)
	roundTripQoS(t, sub, pub)
}

// A retained publish through NATS reaches a subscriber that connects
// afterwards, stored with retained: true.
func TestNATSRoundTripRetained(t *testing.T) {
	roundTripRetained(t, harness.StartNATS(t))
}

// A subscription the broker refuses (SUBACK 0x80; NATS does so right after
// a node is lost, and always when a session's subscriptions would together
// exceed 65535 unacknowledged messages) is retried, and /readyz says why
// meanwhile; once the broker takes it the subscriber is ready.
func TestNATSSubscriptionRefusedIsRetried(t *testing.T) {
	n := harness.StartNATS(t, harness.WithMQTTMaxAckPending(40000))
	sub := startSubscriber(t, n, map[string]string{"MQTT_TOPICS": "nr/a,nr/b"})
	sub.WaitLog(t, 20*time.Second, func(l map[string]any) bool { return l["msg"] == "subscribe failed" })
	r := harness.Get(t, sub.URL()+"/readyz")
	t.Logf("/readyz while refused: %d %s", r.Status, r.Body)
	if r.Status != 503 || !strings.Contains(string(r.Body), "refused") {
		t.Errorf("/readyz = %d %s, want 503 saying the subscription was refused", r.Status, r.Body)
	}
	if got := metric(t, sub, "subscriber_mqtt_subscribed"); got != 0 {
		t.Errorf("subscriber_mqtt_subscribed = %v while refused, want 0", got)
	}
	// The broker takes subscriptions again (max_ack_pending applies to new
	// subscriptions, and the server reloads it).
	n.Reconfigure(t, harness.WithMQTTMaxAckPending(1000))
	sub.WaitReady(t, 30*time.Second)
	attempts := 0
	for _, l := range sub.Logs() {
		if l["msg"] == "subscribe failed" {
			attempts++
		}
	}
	t.Logf("subscription refused %d times, then granted", attempts)
	pub := startPublisher(t, n, nil)
	pub.WaitReady(t, 20*time.Second)
	publish(t, pub, publishBody(t, "nr/b", "after", 1))
	waitStored(t, sub, "nr/b", 1, 10*time.Second)
}
