package message

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateTopic(t *testing.T) {
	tests := []struct {
		name  string
		topic string
		ok    bool
	}{
		// MQTT 3.1.1 section 4.7.1.1: "/" separates levels; levels may be empty.
		{"single level", "sport", true},
		{"several levels", "sport/tennis/player1", true},
		{"leading separator", "/finance", true},
		{"trailing separator", "sport/", true},
		{"only a separator", "/", true},
		{"empty levels", "a//b", true},
		// Section 4.7.3: topics are case sensitive and may hold spaces.
		{"spaces", "living room/temperature sensor", true},
		{"mixed case", "ACCOUNTS/Accounts", true},
		{"multi-byte UTF-8", "capteurs/salle à manger/température", true},
		{"emoji (4-byte UTF-8)", "sensors/\U0001F321", true},
		{"maximum length", strings.Repeat("a", MaxTopicBytes), true},
		{"dollar inside", "price/$/usd", true},
		{"U+FEFF is allowed", "a/\ufeff", true},
		{"U+2028 is allowed", "a\u2028b", true},

		// Section 4.7.3: at least one character long.
		{"empty", "", false},
		// Section 1.5.3: at most 65535 bytes.
		{"too long", strings.Repeat("a", MaxTopicBytes+1), false},
		{"too long in multi-byte characters", strings.Repeat("é", MaxTopicBytes/2+1), false},
		// Section 1.5.3: well-formed UTF-8, no U+0000.
		{"invalid UTF-8 byte", "a/\xff", false},
		{"truncated UTF-8 sequence", "a/\xc3", false},
		{"overlong encoding", "a/\xc0\xaf", false},
		{"encoded surrogate", "a/\xed\xa0\x80", false},
		{"U+0000", "a/\x00/b", false},
		// Section 4.7.1: wildcards are for filters, never in a topic name.
		{"multi-level wildcard", "sport/#", false},
		{"only #", "#", false},
		{"single-level wildcard", "sport/+/player1", false},
		{"only +", "+", false},
		{"wildcard inside a level", "sport+", false},
		{"hash inside a level", "a#b", false},
		// Section 4.7.2: $ topics belong to the server.
		{"$SYS", "$SYS/broker/uptime", false},
		{"only $", "$", false},
		{"$share", "$share/group/t", false},
		// Section 1.5.3: control characters and noncharacters (SHOULD NOT;
		// Mosquitto drops the connection).
		{"C0 control", "a\x01b", false},
		{"tab", "a\tb", false},
		{"DEL", "a\x7fb", false},
		{"C1 control", "a\u0085b", false},
		{"noncharacter U+FDD0", "a\ufdd0b", false},
		{"noncharacter U+FFFF", "a\uffffb", false},
		{"noncharacter U+1FFFE", "a\U0001FFFEb", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateTopic(tt.topic)
			if got := err == nil; got != tt.ok {
				t.Fatalf("ValidateTopic(%.40q) = %v, want ok %v", tt.topic, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("ValidateTopic(%.40q) error %v is not ErrInvalid", tt.topic, err)
			}
		})
	}
}

func TestValidateQoS(t *testing.T) {
	for q := -2; q <= 4; q++ {
		err := ValidateQoS(q)
		if got, want := err == nil, q >= 0 && q <= 2; got != want {
			t.Errorf("ValidateQoS(%d) = %v, want ok %v", q, err, want)
		}
	}
}

// FuzzValidateTopic checks ValidateTopic against the rules restated
// independently, and that it never panics.
func FuzzValidateTopic(f *testing.F) {
	for _, s := range []string{"a/b", "", "#", "+", "$SYS/x", "a\x00", "\xff", "/", "a//b", "\U0001F321", "a\ufdd0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		err := ValidateTopic(topic)
		want := topic != "" && len(topic) <= MaxTopicBytes && utf8.ValidString(topic) &&
			!strings.ContainsAny(topic, "+#\x00") && !strings.HasPrefix(topic, "$")
		if want {
			for _, r := range topic {
				if r < 0x20 || (r >= 0x7f && r <= 0x9f) || (r >= 0xfdd0 && r <= 0xfdef) || r&0xfffe == 0xfffe {
					want = false
				}
			}
		}
		if got := err == nil; got != want {
			t.Fatalf("ValidateTopic(%q) = %v, want ok %v", topic, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ValidateTopic(%q) error %v is not ErrInvalid", topic, err)
		}
	})
}
