package service_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/mqttconn/service/envtest"
)

// The defaults of what both services read; each service's own test checks
// its own variables and the two defaults it gives (client id, address).
func TestLoadDefaults(t *testing.T) {
	envtest.Set(t, nil)
	c := service.Defaults("svc", ":9")
	if err := service.Load(&c, &c); err != nil {
		t.Fatalf("Load() with no environment: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Broker", c.Broker, "tcp://localhost:1883"},
		{"Brokers", len(c.Brokers), 1},
		{"ClientID", c.ClientID, "svc"},
		{"QoS", c.QoS, 1},
		{"StatusTopic", c.StatusTopic, "clients/svc/status"},
		{"HTTPAddr", c.HTTPAddr, ":9"},
		{"LogFormat", c.LogFormat, "text"},
		{"Level", c.Level, slog.LevelInfo},
		{"ShutdownTimeout", c.ShutdownTimeout, 10 * time.Second},
		{"APIToken", c.APIToken, ""},
		{"TLS", c.TLS == nil, true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}
