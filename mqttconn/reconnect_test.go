package mqttconn

import (
	"net/url"
	"strings"
	"testing"
)

func TestRotateAfter(t *testing.T) {
	var brokers []*url.URL
	for _, s := range []string{"tcp://a:1883", "tcp://b:1883", "tcp://c:1883"} {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		brokers = append(brokers, u)
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
