package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/mqttconn/service/envtest"
)

// setenv starts a test with none of the variables Load reads set but env,
// and a database of its own unless env names one.
func setenv(t *testing.T, env map[string]string) {
	t.Helper()
	if _, ok := env["DATABASE_URL"]; !ok {
		env["DATABASE_URL"] = "sqlite:" + filepath.Join(t.TempDir(), "db", "messages.db")
	}
	envtest.Set(t, env, "MQTT_TOPICS", "MQTT_SHARE_GROUP", "DATABASE_URL", "RETENTION", "LOG_PAYLOAD_BYTES", "PUBLISHER_URL")
}

func TestDefaults(t *testing.T) {
	setenv(t, map[string]string{})
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	type defaults struct {
		ClientID, StatusTopic, Topics, HTTPAddr, Driver string
		Retention                                       time.Duration
		LogPayloadBytes                                 int
	}
	got := defaults{c.ClientID, c.StatusTopic, strings.Join(c.Topics, ","), c.HTTPAddr, c.Database.Driver, c.Retention, c.LogPayloadBytes}
	want := defaults{"subscriber", "clients/subscriber/status", "#", ":8081", "sqlite", 0, 256}
	if got != want {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
	if _, err := os.Stat(filepath.Dir(c.Database.Path)); err != nil {
		t.Errorf("directory of the SQLite file not created: %v", err)
	}
}

func TestValues(t *testing.T) {
	setenv(t, map[string]string{
		"MQTT_CLIENT_ID": "sub-1", "MQTT_TOPICS": "a/+/c, d/#", "MQTT_SHARE_GROUP": "g",
		"DATABASE_URL": "postgresql://u:p@127.0.0.1/db", "RETENTION": "168h", "MQTT_QOS": "2",
	})
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := strings.Join(c.Topics, "|"), "a/+/c|d/#"; got != want {
		t.Errorf("topics = %q, want %q", got, want)
	}
	if c.StatusTopic != "clients/sub-1/status" || c.Database.Driver != "postgres" || c.Retention != 168*time.Hour || c.QoS != 2 {
		t.Errorf("got %+v", c)
	}
}

// A token of visible ASCII, inner spaces included, is taken as it is.
func TestAPIToken(t *testing.T) {
	for _, token := range []string{"", "s3cret", "a b", "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"} {
		setenv(t, map[string]string{"API_TOKEN": token})
		c, err := Load()
		if err != nil {
			t.Errorf("API_TOKEN=%q: %v", token, err)
			continue
		}
		if c.APIToken != token {
			t.Errorf("APIToken = %q, want %q", c.APIToken, token)
		}
	}
}

func TestBrokerDefaultPort(t *testing.T) {
	tests := []struct{ in, want string }{
		{"tcp://broker", "tcp://broker:1883"},
		{"ssl://broker", "ssl://broker:8883"},
		{"tcp://broker:1884", "tcp://broker:1884"},
		{"ws://broker/mqtt", "ws://broker/mqtt"},
		{"tcp://a, ssl://b:8884", "tcp://a:1883 ssl://b:8884"},
	}
	for _, tt := range tests {
		setenv(t, map[string]string{"MQTT_BROKER": tt.in})
		c, err := Load()
		if err != nil {
			t.Fatalf("Load with MQTT_BROKER=%s: %v", tt.in, err)
		}
		if got := strings.Join(c.Brokers, " "); got != tt.want {
			t.Errorf("MQTT_BROKER=%s: brokers %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestClientIDHostname(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatalf("hostname: %v", err)
	}
	setenv(t, map[string]string{"MQTT_CLIENT_ID": "subscriber-${HOSTNAME}"})
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := "subscriber-" + host; c.ClientID != want {
		t.Errorf("client id = %q, want %q", c.ClientID, want)
	}
	if want := "clients/subscriber-" + host + "/status"; c.StatusTopic != want {
		t.Errorf("status topic = %q, want %q", c.StatusTopic, want)
	}
}

func TestErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		v, value string
		want     string // the variable named, if not v
	}{
		{"MQTT_BROKER", "localhost:1883", ""},
		{"MQTT_BROKER", "http://localhost", ""},
		{"MQTT_QOS", "3", ""},
		{"MQTT_QOS", "one", ""},
		{"MQTT_TOPICS", "a/#/b", ""},
		{"MQTT_TOPICS", "a,,b", ""},
		{"MQTT_TOPICS", "sport+", ""},
		{"MQTT_SHARE_GROUP", "a/b", ""},
		{"MQTT_SHARE_GROUP", "g+", ""},
		{"MQTT_STATUS_TOPIC", "status/#", ""},
		{"DATABASE_URL", "mysql://x", ""},
		{"DATABASE_URL", "sqlite:", ""},
		{"RETENTION", "forever", ""},
		{"RETENTION", "-1h", ""},
		{"LOG_PAYLOAD_BYTES", "-1", ""},
		{"LOG_PAYLOAD_BYTES", "many", ""},
		{"HTTP_ADDR", "8081", ""},
		{"LOG_FORMAT", "xml", ""},
		{"LOG_LEVEL", "verbose", ""},
		{"PUBLISHER_URL", "ftp://x", ""},
		{"PUBLISHER_URL", "http://h?q=1", ""},
		{"PUBLISHER_URL", "localhost:8080", ""},
		{"MQTT_CA_FILE", "/nonexistent/ca.pem", ""},
		{"MQTT_CERT_FILE", "/nonexistent/cert.pem", ""},
		{"API_TOKEN", " s3cret", ""},
		{"API_TOKEN", "s3cret\n", ""},
		{"API_TOKEN", "s3\x01cret", ""},
		{"API_TOKEN", "s3\tcret", ""},
		{"API_TOKEN", "s3\x7fcret", ""},
		{"API_TOKEN", "s3crét", ""},
	}
	for _, tt := range tests {
		t.Run(tt.v+"="+tt.value, func(t *testing.T) {
			setenv(t, map[string]string{tt.v: tt.value})
			_, err := Load()
			var ce *service.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Load() = %v, want a *service.Error", err)
			}
			want := tt.v
			if tt.want != "" {
				want = tt.want
			}
			if ce.Var != want {
				t.Errorf("error names %s, want %s (%v)", ce.Var, want, err)
			}
			if msg := err.Error(); !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %s", msg, want)
			}
			if msg := err.Error(); tt.v == "API_TOKEN" && strings.Contains(msg, "s3") {
				t.Errorf("error %q shows the token", msg)
			}
		})
	}
}

// A member of a share group sends its probe to a topic named after its
// client id, so the id must fit in a topic name; without a group it need
// not.
func TestShareGroupClientIDNamesTheProbeTopic(t *testing.T) {
	setenv(t, map[string]string{"MQTT_SHARE_GROUP": "g", "MQTT_CLIENT_ID": "sub+1", "MQTT_STATUS_TOPIC": "status/sub-1"})
	_, err := Load()
	var ce *service.Error
	if !errors.As(err, &ce) || ce.Var != "MQTT_CLIENT_ID" || !strings.Contains(err.Error(), "share-probe") {
		t.Errorf("Load() = %v, want an error naming MQTT_CLIENT_ID and the probe topic", err)
	}
	setenv(t, map[string]string{"MQTT_CLIENT_ID": "sub+1", "MQTT_STATUS_TOPIC": "status/sub-1"})
	if _, err := Load(); err != nil {
		t.Errorf("without a share group: Load() = %v, want nil", err)
	}
}
