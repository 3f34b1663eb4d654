// Package message holds the publisher's domain: a message to publish, the
// rules its topic must follow and the ways a publish can fail.
package message

import (
	"errors"
	"fmt"

	"github.com/telemetry-stack/mqtt-stack/mqttconn"
)

// Message is one MQTT publication as the broker will see it.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// ErrInvalid marks every error caused by a message that breaks the rules
// (topic, QoS); callers test for it with errors.Is.
var ErrInvalid = errors.New("invalid message")

// The ways a valid publish can fail. They are the domain's words, so that the
// MQTT adapter returns them and the HTTP adapter maps them without either
// importing the other.
var (
	// ErrNotConnected: there is no open connection to the broker; nothing was sent.
	ErrNotConnected = errors.New("not connected to the broker")
	// ErrConnectionLost: the connection dropped before the acknowledgement
	// arrived; the message may or may not have reached the broker.
	ErrConnectionLost = errors.New("connection to the broker lost before the acknowledgement")
	// ErrTimeout: no acknowledgement within the publish timeout; the message
	// may or may not have reached the broker.
	ErrTimeout = errors.New("no acknowledgement from the broker in time")
)

// MaxInflight is the most QoS 1 and 2 publishes a client can have awaiting
// acknowledgement: MQTT numbers them with 16-bit packet identifiers other
// than 0 (MQTT 3.1.1 section 2.3.1). Mosquitto's max_inflight_messages goes
// no higher either.
const MaxInflight = 65535

// MaxTopicBytes is the longest topic name MQTT can carry.
const MaxTopicBytes = mqttconn.MaxTopicBytes

// ValidateTopic checks a topic name for a PUBLISH by the rule both services
// follow (mqttconn.ValidateTopic); its errors are ErrInvalid.
func ValidateTopic(topic string) error {
	if err := mqttconn.ValidateTopic(topic); err != nil {
		return invalidf("%s", err)
	}
	return nil
}

// ValidateQoS reports whether q is an MQTT quality of service level.
func ValidateQoS(q int) error {
	if q < 0 || q > 2 {
		return invalidf("qos must be 0, 1 or 2, got %d", q)
	}
	return nil
}

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }
