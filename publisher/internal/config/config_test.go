package config

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/mqttconn/service/envtest"
)

// setEnv starts a test with none of the variables Load reads set but env.
func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	envtest.Set(t, env, "CORS_ALLOWED_ORIGINS", "PUBLISH_TIMEOUT", "MAX_MESSAGE_BYTES", "MAX_BATCH_BYTES", "PPROF_ADDR", "MQTT_MAX_INFLIGHT")
}

func TestLoadDefaults(t *testing.T) {
	setEnv(t, nil)
	c, err := Load()
	if err != nil {
		t.Fatalf("Load() with no environment: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"ClientID", c.ClientID, "publisher"},
		{"StatusTopic", c.StatusTopic, "clients/publisher/status"},
		{"HTTPAddr", c.HTTPAddr, ":8080"},
		{"PublishTimeout", c.PublishTimeout, 5 * time.Second},
		{"MaxMessageBytes", c.MaxMessageBytes, 262144},
		{"MaxBatchBytes", c.MaxBatchBytes, int64(16 << 20)},
		{"CORSAllowedOrigins", len(c.CORSAllowedOrigins), 0},
		{"PprofAddr", c.PprofAddr, ""},
		{"MaxInflight", c.MaxInflight, 20},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadValues(t *testing.T) {
	setEnv(t, map[string]string{
		"MQTT_BROKER":          "tcp://broker.example, ssl://b2.example",
		"MQTT_CLIENT_ID":       "pub-7",
		"MQTT_QOS":             "2",
		"LOG_LEVEL":            "DEBUG",
		"LOG_FORMAT":           "JSON",
		"PUBLISH_TIMEOUT":      "250ms",
		"MAX_MESSAGE_BYTES":    "10",
		"MAX_BATCH_BYTES":      "1",
		"CORS_ALLOWED_ORIGINS": " https://Console.example:8081 , ,http://localhost:3000/",
		"MQTT_MAX_INFLIGHT":    "65535",
	})
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := strings.Join(c.Brokers, " "); got != "tcp://broker.example:1883 ssl://b2.example:8883" {
		t.Errorf("Brokers = %q, want both, with the default ports added", got)
	}
	if c.StatusTopic != "clients/pub-7/status" {
		t.Errorf("StatusTopic = %q, want clients/pub-7/status", c.StatusTopic)
	}
	if c.QoS != 2 || c.Level != slog.LevelDebug || c.LogFormat != "json" || c.PublishTimeout != 250*time.Millisecond {
		t.Errorf("QoS %d, Level %v, LogFormat %q, PublishTimeout %v; want 2, DEBUG, json, 250ms", c.QoS, c.Level, c.LogFormat, c.PublishTimeout)
	}
	if got, want := strings.Join(c.CORSAllowedOrigins, " "), "https://console.example:8081 http://localhost:3000"; got != want {
		t.Errorf("CORSAllowedOrigins = %q, want %q", got, want)
	}
	if c.MaxBatchBytes != c.MaxBodyBytes() {
		t.Errorf("MaxBatchBytes = %d, want it raised to the single body limit %d", c.MaxBatchBytes, c.MaxBodyBytes())
	}
	if c.MaxInflight != 65535 {
		t.Errorf("MaxInflight = %d, want 65535", c.MaxInflight)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		env     map[string]string
		wantVar string
	}{
		{map[string]string{"MQTT_QOS": "3"}, "MQTT_QOS"},
		{map[string]string{"MQTT_QOS": "-1"}, "MQTT_QOS"},
		{map[string]string{"MQTT_QOS": "one"}, "MQTT_QOS"},
		{map[string]string{"MQTT_MAX_INFLIGHT": "0"}, "MQTT_MAX_INFLIGHT"},
		{map[string]string{"MQTT_MAX_INFLIGHT": "-5"}, "MQTT_MAX_INFLIGHT"},
		{map[string]string{"MQTT_MAX_INFLIGHT": "65536"}, "MQTT_MAX_INFLIGHT"},
		{map[string]string{"MQTT_MAX_INFLIGHT": "many"}, "MQTT_MAX_INFLIGHT"},
		{map[string]string{"PUBLISH_TIMEOUT": "abc"}, "PUBLISH_TIMEOUT"},
		{map[string]string{"PUBLISH_TIMEOUT": "0s"}, "PUBLISH_TIMEOUT"},
		{map[string]string{"PUBLISH_TIMEOUT": "-1s"}, "PUBLISH_TIMEOUT"},
		{map[string]string{"MAX_MESSAGE_BYTES": "0"}, "MAX_MESSAGE_BYTES"},
		{map[string]string{"MAX_MESSAGE_BYTES": "300000000"}, "MAX_MESSAGE_BYTES"},
		{map[string]string{"MAX_MESSAGE_BYTES": "1k"}, "MAX_MESSAGE_BYTES"},
		{map[string]string{"MAX_BATCH_BYTES": "0"}, "MAX_BATCH_BYTES"},
		{map[string]string{"SHUTDOWN_TIMEOUT": "soon"}, "SHUTDOWN_TIMEOUT"},
		{map[string]string{"MQTT_BROKER": "http://localhost:1883"}, "MQTT_BROKER"},
		{map[string]string{"MQTT_BROKER": "localhost:1883"}, "MQTT_BROKER"},
		{map[string]string{"MQTT_BROKER": "tcp://"}, "MQTT_BROKER"},
		{map[string]string{"MQTT_BROKER": "tcp://a b"}, "MQTT_BROKER"},
		{map[string]string{"MQTT_BROKER": "tcp://a:1,tcp://b:99999"}, "MQTT_BROKER"},
		{map[string]string{"MQTT_BROKER": "tcp://a:1,"}, "MQTT_BROKER"},
		{map[string]string{"MQTT_CLIENT_ID": ""}, "MQTT_CLIENT_ID"},
		{map[string]string{"MQTT_CLIENT_ID": "a+b"}, "MQTT_CLIENT_ID"},
		{map[string]string{"MQTT_STATUS_TOPIC": "status/#"}, "MQTT_STATUS_TOPIC"},
		{map[string]string{"MQTT_STATUS_TOPIC": "$SYS/me"}, "MQTT_STATUS_TOPIC"},
		{map[string]string{"HTTP_ADDR": "8080"}, "HTTP_ADDR"},
		{map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{map[string]string{"PPROF_ADDR": "6060"}, "PPROF_ADDR"},
		{map[string]string{"PPROF_ADDR": ":8080"}, "PPROF_ADDR"},
		{map[string]string{"LOG_LEVEL": "verbose"}, "LOG_LEVEL"},
		{map[string]string{"CORS_ALLOWED_ORIGINS": "console.example"}, "CORS_ALLOWED_ORIGINS"},
		{map[string]string{"CORS_ALLOWED_ORIGINS": "https://console.example/app"}, "CORS_ALLOWED_ORIGINS"},
		{map[string]string{"CORS_ALLOWED_ORIGINS": "https://*.example"}, "CORS_ALLOWED_ORIGINS"},
		{map[string]string{"MQTT_CA_FILE": notPEM}, "MQTT_CA_FILE"},
		{map[string]string{"MQTT_BROKER": "ssl://localhost:8883", "MQTT_CA_FILE": notPEM}, "MQTT_CA_FILE"},
		{map[string]string{"MQTT_BROKER": "ssl://localhost:8883", "MQTT_CA_FILE": filepath.Join(dir, "missing.pem")}, "MQTT_CA_FILE"},
		{map[string]string{"MQTT_BROKER": "ssl://localhost:8883", "MQTT_CERT_FILE": notPEM}, "MQTT_KEY_FILE"},
		{map[string]string{"MQTT_BROKER": "ssl://localhost:8883", "MQTT_KEY_FILE": notPEM}, "MQTT_CERT_FILE"},
		{map[string]string{"MQTT_BROKER": "ssl://localhost:8883", "MQTT_CERT_FILE": notPEM, "MQTT_KEY_FILE": notPEM}, "MQTT_CERT_FILE"},
		{map[string]string{"API_TOKEN": "s3cret "}, "API_TOKEN"},
		{map[string]string{"API_TOKEN": "\ts3cret"}, "API_TOKEN"},
		{map[string]string{"API_TOKEN": "s3\x01cret"}, "API_TOKEN"},
		{map[string]string{"API_TOKEN": "s3crét"}, "API_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.wantVar, func(t *testing.T) {
			setEnv(t, tt.env)
			_, err := Load()
			var ce *service.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Load() with %v = %v, want a *service.Error", tt.env, err)
			}
			if ce.Var != tt.wantVar || !strings.HasPrefix(err.Error(), "invalid "+tt.wantVar+": ") {
				t.Errorf("Load() with %v = %q (Var %s), want it to name %s", tt.env, err, ce.Var, tt.wantVar)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans lines, want one", err)
			}
			if tt.wantVar == "API_TOKEN" && strings.Contains(err.Error(), "s3") {
				t.Errorf("error %q shows the token", err)
			}
		})
	}
}

func TestMaxBodyBytes(t *testing.T) {
	c := Config{MaxMessageBytes: 262144}
	// A payload of control bytes escaped as \u00XX and a 65535-byte topic
	// escaped the same way must fit.
	if got, least := c.MaxBodyBytes(), int64(6*262144+6*65535); got < least {
		t.Errorf("MaxBodyBytes() = %d, want at least %d", got, least)
	}
}
