package mqttconn

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseBrokers(t *testing.T) {
	tests := []struct {
		raw  string
		want string // the URLs, or the error's start
	}{
		{"tcp://localhost:1883", "[tcp://localhost:1883]"},
		{"tcp://localhost", "[tcp://localhost:1883]"},
		{"ssl://b.example", "[ssl://b.example:8883]"},
		{"ws://b:8080/mqtt", "[ws://b:8080/mqtt]"},
		{"wss://b/mqtt", "[wss://b/mqtt]"},
		{"tcp://[::1]", "[tcp://[::1]:1883]"},
		{"tcp://a:1,tcp://b:2", "[tcp://a:1 tcp://b:2]"},
		{" tcp://a:1 , ssl://b ", "[tcp://a:1 ssl://b:8883]"},
		{"tcp://a:1/", "[tcp://a:1]"},
		{"", "error: empty broker URL"},
		{"tcp://a:1,", "error: element 2 of 2: empty broker URL"},
		{"tcp://a:1,,tcp://b", "error: element 2 of 3: empty broker URL"},
		{"mqtt://a:1", "error: \"mqtt://a:1\": the scheme must be"},
		{"tls://a:1", "error: \"tls://a:1\": the scheme must be"},
		{"tcp://a:1,http://b", "error: element 2 of 2: \"http://b\": the scheme must be"},
		{"localhost:1883", "error: \"localhost:1883\": the scheme must be"},
		{"tcp://:1883", "error: \"tcp://:1883\" names no host"},
		{"tcp://127.0.0.1:99999", "error: \"tcp://127.0.0.1:99999\": port must be 1 to 65535"},
		{"tcp://127.0.0.1:0", "error: \"tcp://127.0.0.1:0\": port must be 1 to 65535"},
		{"tcp://u:secret@a:1", "error: \"tcp://xxxxx@a:1\": give credentials"},
		{"tcp://a:1/x", "error: \"tcp://a:1/x\": a tcp:// URL takes no path"},
		{"tcp://a:1?x=1", "error: \"tcp://a:1?x=1\": a broker URL takes no query"},
		{"tcp://a b:1", "error: \"tcp://a b:1\" is not a URL"},
	}
	for _, tt := range tests {
		got, err := ParseBrokers(tt.raw)
		s := ""
		if err != nil {
			s = "error: " + err.Error()
		} else {
			var us []string
			for _, u := range got {
				us = append(us, u.String())
			}
			s = fmt.Sprint(us)
		}
		if !strings.HasPrefix(s, tt.want) {
			t.Errorf("ParseBrokers(%q) = %s, want %s", tt.raw, s, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseBrokers(%q): the error shows the password: %v", tt.raw, err)
		}
	}
}

func FuzzParseBrokers(f *testing.F) {
	for _, s := range []string{"tcp://a:1,ssl://b", "ws://b:8080/mqtt", "tcp://u:p@h", ",", "tcp://[::1]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := ParseBrokers(raw)
		if err != nil {
			return
		}
		for _, u := range got {
			// What it accepts, the MQTT client can dial: a scheme it
			// knows, a host and a port (or a websocket URL).
			if u.Hostname() == "" || u.User != nil {
				t.Fatalf("accepted %q as %v", raw, u)
			}
			switch u.Scheme {
			case "tcp", "ssl":
				if u.Port() == "" {
					t.Fatalf("accepted %q without a port: %v", raw, u)
				}
			case "ws", "wss":
			default:
				t.Fatalf("accepted %q with scheme %q", raw, u.Scheme)
			}
		}
	})
}

func TestRotateAfter(t *testing.T) {
	brokers, err := ParseBrokers("tcp://a:1883,tcp://b:1883,tcp://c:1883")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ last, want string }{
		{"tcp://a:1883", "tcp://b:1883 tcp://c:1883 tcp://a:1883"},
		{"tcp://b:1883", "tcp://c:1883 tcp://a:1883 tcp://b:1883"},
		{"tcp://c:1883", "tcp://a:1883 tcp://b:1883 tcp://c:1883"},
		{"tcp://d:1883", "tcp://a:1883 tcp://b:1883 tcp://c:1883"},
		{"", "tcp://a:1883 tcp://b:1883 tcp://c:1883"},
	}
	for _, tt := range tests {
		got := RotateAfter(brokers, tt.last)
		var s []string
		for _, u := range got {
			s = append(s, u.String())
		}
		if strings.Join(s, " ") != tt.want {
			t.Errorf("RotateAfter(%s) = %s, want %s", tt.last, strings.Join(s, " "), tt.want)
		}
	}
	if brokers[0].String() != "tcp://a:1883" {
		t.Errorf("RotateAfter changed its argument: %v", brokers)
	}
}
