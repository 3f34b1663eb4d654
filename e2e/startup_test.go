package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// Both binaries given the same environment answer the same way: what they
// share (mqttconn/service) is read by one rule. A bad value stops each at
// start with exit status 2 and one line on stderr, the same after the
// service's name, naming the variable; a good value starts each. The
// command line is held to the same.
func TestBothServicesStartAlike(t *testing.T) {
	dir := t.TempDir()
	base := map[string]string{
		"MQTT_BROKER":  "tcp://127.0.0.1:1", // nothing listens: no broker is needed to start
		"HTTP_ADDR":    "127.0.0.1:0",
		"DATABASE_URL": "sqlite:" + filepath.Join(dir, "m.db"),
	}
	notPEM := filepath.Join(dir, "not.pem")
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int    // 0: starts and serves until SIGTERM
		line string // with code 2: the start of the line after "<service>: "
	}{
		// MQTT_STATUS_TOPIC and MQTT_CLIENT_ID: the topic rule of a publish.
		{name: "status topic of the broker's", env: map[string]string{"MQTT_STATUS_TOPIC": "$SYS/me"}, code: 2, line: "invalid MQTT_STATUS_TOPIC: "},
		{name: "status topic with a control character", env: map[string]string{"MQTT_STATUS_TOPIC": "clients/a\x01b"}, code: 2, line: "invalid MQTT_STATUS_TOPIC: "},
		{name: "status topic with a wildcard", env: map[string]string{"MQTT_STATUS_TOPIC": "clients/#"}, code: 2, line: "invalid MQTT_STATUS_TOPIC: "},
		{name: "status topic with a noncharacter", env: map[string]string{"MQTT_STATUS_TOPIC": "clients/\uffff"}, code: 2, line: "invalid MQTT_STATUS_TOPIC: "},
		{name: "status topic", env: map[string]string{"MQTT_STATUS_TOPIC": "fleet/gateway 7/status"}},
		{name: "client id making a bad status topic", env: map[string]string{"MQTT_CLIENT_ID": "a/+"}, code: 2, line: "invalid MQTT_CLIENT_ID: "},
		{name: "client id with a wildcard and a status topic", env: map[string]string{"MQTT_CLIENT_ID": "a/+", "MQTT_STATUS_TOPIC": "a/status"}},
		{name: "empty client id", env: map[string]string{"MQTT_CLIENT_ID": ""}, code: 2, line: "invalid MQTT_CLIENT_ID: "},
		{name: "client id not UTF-8", env: map[string]string{"MQTT_CLIENT_ID": "a\xff", "MQTT_STATUS_TOPIC": "a/status"}, code: 2, line: "invalid MQTT_CLIENT_ID: "},
		{name: "client id with the host name", env: map[string]string{"MQTT_CLIENT_ID": "e2e-${HOSTNAME}"}},
		// The logger.
		{name: "LOG_FORMAT in capitals", env: map[string]string{"LOG_FORMAT": "JSON"}},
		{name: "LOG_LEVEL in capitals", env: map[string]string{"LOG_LEVEL": "WARN"}},
		{name: "LOG_FORMAT unknown", env: map[string]string{"LOG_FORMAT": "xml"}, code: 2, line: "invalid LOG_FORMAT: "},
		{name: "LOG_LEVEL unknown", env: map[string]string{"LOG_LEVEL": "loud"}, code: 2, line: "invalid LOG_LEVEL: "},
		{name: "LOG_LEVEL beyond the four", env: map[string]string{"LOG_LEVEL": "info+2"}, code: 2, line: "invalid LOG_LEVEL: "},
		// Stopping.
		{name: "shutdown timeout", env: map[string]string{"SHUTDOWN_TIMEOUT": "30s"}},
		{name: "shutdown timeout not a duration", env: map[string]string{"SHUTDOWN_TIMEOUT": "soon"}, code: 2, line: "invalid SHUTDOWN_TIMEOUT: "},
		{name: "shutdown timeout zero", env: map[string]string{"SHUTDOWN_TIMEOUT": "0s"}, code: 2, line: "invalid SHUTDOWN_TIMEOUT: "},
		// The rest both read.
		{name: "qos 3", env: map[string]string{"MQTT_QOS": "3"}, code: 2, line: "invalid MQTT_QOS: "},
		{name: "qos not a number", env: map[string]string{"MQTT_QOS": "one"}, code: 2, line: "invalid MQTT_QOS: "},
		{name: "broker scheme", env: map[string]string{"MQTT_BROKER": "http://127.0.0.1:1"}, code: 2, line: "invalid MQTT_BROKER: "},
		{name: "broker list", env: map[string]string{"MQTT_BROKER": "tcp://127.0.0.1:1, ws://127.0.0.1:2/mqtt"}},
		{name: "CA file without ssl://", env: map[string]string{"MQTT_CA_FILE": notPEM}, code: 2, line: "invalid MQTT_CA_FILE: "},
		{name: "HTTP_ADDR without a port", env: map[string]string{"HTTP_ADDR": "8080"}, code: 2, line: "invalid HTTP_ADDR: "},
		{name: "PPROF_ADDR", env: map[string]string{"PPROF_ADDR": "127.0.0.1:0"}},
		{name: "PPROF_ADDR without a port", env: map[string]string{"PPROF_ADDR": "6060"}, code: 2, line: "invalid PPROF_ADDR: "},
		{name: "PPROF_ADDR on HTTP_ADDR", env: map[string]string{"HTTP_ADDR": "127.0.0.1:8089", "PPROF_ADDR": "127.0.0.1:8089"}, code: 2, line: "invalid PPROF_ADDR: "},
		{name: "API_TOKEN with a space at the end", env: map[string]string{"API_TOKEN": "s3cret "}, code: 2, line: "invalid API_TOKEN: "},
		// The command line.
		{name: "unknown command", args: []string{"serve"}, code: 2, line: `unknown command "serve"`},
		{name: "healthcheck of nothing", env: map[string]string{"HTTP_ADDR": fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))}, args: []string{"healthcheck"}, code: 1, line: "healthcheck: "},
		{name: "healthcheck with a bad HTTP_ADDR", env: map[string]string{"HTTP_ADDR": "nowhere"}, args: []string{"healthcheck", "ready"}, code: 2, line: "invalid HTTP_ADDR: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tt.env {
				env[k] = v
			}
			if tt.code == 0 {
				for _, svc := range []string{"publisher", "subscriber"} {
					s := harness.StartService(t, binaryOf(t, svc), env)
					if got := s.Status("/healthz"); got != 200 {
						t.Errorf("%s: /healthz %d, want 200", svc, got)
					}
					if code := s.Stop(); code != 0 {
						t.Errorf("%s: exit status %d after SIGTERM, want 0", svc, code)
					}
				}
				return
			}
			lines := map[string]string{}
			for _, svc := range []string{"publisher", "subscriber"} {
				code, stdout, stderr := harness.Run(t, binaryOf(t, svc), env, tt.args...)
				line, found := strings.CutPrefix(strings.TrimSuffix(stderr, "\n"), svc+": ")
				if code != tt.code || !found || strings.Contains(line, "\n") || !strings.HasPrefix(line, tt.line) {
					t.Errorf("%s: exit %d, stderr %q; want %d and one line %q", svc, code, stderr, tt.code, svc+": "+tt.line+"...")
				}
				if stdout != "" && tt.args == nil {
					t.Errorf("%s: stdout %q, want nothing", svc, stdout)
				}
				if strings.Contains(line, "s3cret") {
					t.Errorf("%s: the line shows the token: %q", svc, line)
				}
				lines[svc] = line
			}
			if lines["publisher"] != lines["subscriber"] {
				t.Errorf("the services disagree:\npublisher:  %s\nsubscriber: %s", lines["publisher"], lines["subscriber"])
			}
		})
	}
}

// "healthcheck" asks /healthz (the process serves), "healthcheck ready"
// /readyz (it is connected and works): the compose file's health checks
// use the second, so that a service is healthy only once connected.
func TestHealthcheckCommandReadiness(t *testing.T) {
	b := harness.StartBroker(t)
	for _, svc := range []string{"publisher", "subscriber"} {
		t.Run(svc, func(t *testing.T) {
			env := map[string]string{"MQTT_BROKER": "tcp://127.0.0.1:1", "DATABASE_URL": "sqlite:" + filepath.Join(t.TempDir(), "m.db")}
			down := harness.StartService(t, binaryOf(t, svc), env)
			check := func(what string, s *harness.Service, want int, args ...string) {
				t.Helper()
				if code, _, stderr := harness.Run(t, binaryOf(t, svc), map[string]string{"HTTP_ADDR": s.Addr()}, args...); code != want {
					t.Errorf("%s: %s: exit %d (%s), want %d", what, strings.Join(args, " "), code, strings.TrimSpace(stderr), want)
				}
			}
			check("no broker", down, 0, "healthcheck")
			check("no broker", down, 1, "healthcheck", "ready")
			down.Stop()

			env["MQTT_BROKER"] = b.URL()
			up := harness.StartService(t, binaryOf(t, svc), env)
			up.WaitReady(t, 10*time.Second)
			check("connected", up, 0, "healthcheck")
			check("connected", up, 0, "healthcheck", "ready")
		})
	}
}

func binaryOf(tb testing.TB, svc string) string {
	tb.Helper()
	if svc == "publisher" {
		return harness.Publisher(tb)
	}
	return harness.Subscriber(tb)
}
