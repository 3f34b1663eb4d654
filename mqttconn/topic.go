package mqttconn

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxTopicBytes is the longest topic name MQTT can carry: a UTF-8 string is
// prefixed by a two-byte length (MQTT 3.1.1 section 1.5.3).
const MaxTopicBytes = 65535

// ValidateTopic checks a topic name a client publishes to, a service's
// status topic as much as the publisher's messages (MQTT 3.1.1 sections
// 1.5.3 and 4.7): at least one byte, at most 65535, well-formed UTF-8
// without U+0000, no wildcard characters, and not a $ topic, which are
// reserved for the broker.
//
// It also refuses control characters (U+0001..U+001F, U+007F..U+009F) and
// Unicode noncharacters. The specification only says a string SHOULD NOT
// hold them and that a receiver MAY close the connection when it does;
// Mosquitto does close it, which would cut every other publish short.
func ValidateTopic(topic string) error {
	switch {
	case topic == "":
		return fmt.Errorf("topic must not be empty")
	case len(topic) > MaxTopicBytes:
		return fmt.Errorf("topic is %d bytes long, longer than %d", len(topic), MaxTopicBytes)
	case !utf8.ValidString(topic):
		return fmt.Errorf("topic is not valid UTF-8")
	case strings.HasPrefix(topic, "$"):
		return fmt.Errorf("topic must not start with \"$\" (reserved for the broker)")
	}
	for i, r := range topic {
		switch {
		case r == 0:
			return fmt.Errorf("topic must not contain U+0000 (at byte %d)", i)
		case r == '+' || r == '#':
			return fmt.Errorf("topic must not contain the wildcard %q (at byte %d)", r, i)
		case r < 0x20 || (r >= 0x7f && r <= 0x9f):
			return fmt.Errorf("topic must not contain the control character %U (at byte %d)", r, i)
		case isNoncharacter(r):
			return fmt.Errorf("topic must not contain the noncharacter %U (at byte %d)", r, i)
		}
	}
	return nil
}

// isNoncharacter reports the 66 code points Unicode reserves as
// noncharacters: U+FDD0..U+FDEF and the last two of every plane.
func isNoncharacter(r rune) bool {
	return (r >= 0xfdd0 && r <= 0xfdef) || r&0xfffe == 0xfffe
}
