package e2e

import (
	"testing"

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
