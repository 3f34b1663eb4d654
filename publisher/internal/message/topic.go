package message

import "github.com/telemetry-stack/mqtt-stack/mqttconn"

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
