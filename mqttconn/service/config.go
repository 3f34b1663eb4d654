// Package service is what the publisher and the subscriber share besides
// the broker connection: the environment variables both read, each by one
// rule; their logger; their main, with the line and exit status of a bad
// start; the healthcheck command; serving HTTP and stopping in order; and
// the HTTP answers both give alike (the bearer-token check, 404 and 405
// with Allow, a handler's panic, the problem details of them all). Copies
// of these in each service drifted apart; e2e/startup_test.go runs both
// binaries on the same environments to keep them together.
package service

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kelseyhightower/envconfig"

	"github.com/telemetry-stack/mqtt-stack/mqttconn"
)

// Common is the configuration both services read, under the contract's
// names. A service embeds it in its own Config, sets ClientID and HTTPAddr
// to its defaults and calls Load.
type Common struct {
	Broker      string `envconfig:"MQTT_BROKER" default:"tcp://localhost:1883"`
	ClientID    string `envconfig:"MQTT_CLIENT_ID"`
	Username    string `envconfig:"MQTT_USERNAME"`
	Password    string `envconfig:"MQTT_PASSWORD"`
	CAFile      string `envconfig:"MQTT_CA_FILE"`
	CertFile    string `envconfig:"MQTT_CERT_FILE"`
	KeyFile     string `envconfig:"MQTT_KEY_FILE"`
	QoS         int    `envconfig:"MQTT_QOS" default:"1"`
	StatusTopic string `envconfig:"MQTT_STATUS_TOPIC"`
	HTTPAddr    string `envconfig:"HTTP_ADDR"`
	// APIToken, when set, is the bearer token the service's protected
	// endpoints need.
	APIToken  string `envconfig:"API_TOKEN"`
	LogFormat string `envconfig:"LOG_FORMAT" default:"text"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info"`
	// PprofAddr, when set, serves net/http/pprof on a listener of its own
	// (never on HTTP_ADDR), e.g. 127.0.0.1:6060.
	PprofAddr string `envconfig:"PPROF_ADDR"`
	// ShutdownTimeout bounds the wait for the requests in flight at a
	// signal, and then for the service's own stop.
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"10s"`

	// Derived by Load.
	Brokers []string    `ignored:"true"` // MQTT_BROKER parsed: the URLs to try in turn
	TLS     *tls.Config `ignored:"true"` // for ssl:// and wss:// brokers; nil without files
	Level   slog.Level  `ignored:"true"`
}

// Defaults is the Common of a service named name (its client id) listening
// on httpAddr unless the environment says otherwise.
func Defaults(name, httpAddr string) Common {
	return Common{ClientID: name, HTTPAddr: httpAddr}
}

// Error is a bad environment variable, or a bad command line when Var is
// empty: the service stops at start with one line naming it, and exit
// status 2.
type Error struct {
	Var string
	Msg string
}

func (e *Error) Error() string {
	if e.Var == "" {
		return e.Msg
	}
	return "invalid " + e.Var + ": " + e.Msg
}

func bad(name, format string, args ...any) error {
	return &Error{Var: name, Msg: fmt.Sprintf(format, args...)}
}

// ExitCode is the exit status of a service whose run returned err.
func ExitCode(err error) int {
	var e *Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return 2
	default:
		return 1
	}
}

// Load reads the environment into spec, a pointer to a service's Config
// that embeds common, and checks common. The service checks the rest.
func Load(spec any, common *Common) error {
	if err := envconfig.Process("", spec); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return bad(pe.KeyName, "%q is not %s", pe.Value, typeName(pe.TypeName))
		}
		return fmt.Errorf("read the environment: %w", err)
	}
	return common.check()
}

func typeName(goType string) string {
	switch goType {
	case "int", "int64":
		return "an integer"
	case "time.Duration":
		return "a duration like 10s or 1m30s"
	case "bool":
		return "true or false"
	}
	return "a " + goType
}

func (c *Common) check() error {
	brokers, err := parseBrokers(c.Broker)
	if err != nil {
		return bad("MQTT_BROKER", "%v", err)
	}
	c.Brokers = make([]string, len(brokers))
	for k, u := range brokers {
		c.Brokers[k] = u.String()
	}
	if c.TLS, err = loadTLS(c.CAFile, c.CertFile, c.KeyFile, secure(brokers)); err != nil {
		return err
	}
	if err := c.checkClientID(); err != nil {
		return err
	}
	if c.QoS < 0 || c.QoS > 2 {
		return bad("MQTT_QOS", "must be 0, 1 or 2, got %d", c.QoS)
	}
	if c.StatusTopic == "" {
		topic := "clients/" + c.ClientID + "/status"
		if err := mqttconn.ValidateTopic(topic); err != nil {
			return bad("MQTT_CLIENT_ID", "makes the status topic %q, where %v; set MQTT_STATUS_TOPIC", topic, err)
		}
		c.StatusTopic = topic
	} else if err := mqttconn.ValidateTopic(c.StatusTopic); err != nil {
		return bad("MQTT_STATUS_TOPIC", "%v", err)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return badAddr(c.HTTPAddr)
	}
	if c.PprofAddr != "" {
		_, port, err := net.SplitHostPort(c.PprofAddr)
		if err != nil {
			return bad("PPROF_ADDR", "%q is not host:port", c.PprofAddr)
		}
		if c.PprofAddr == c.HTTPAddr && port != "0" {
			return bad("PPROF_ADDR", "must not be HTTP_ADDR: profiles are never served on the API's port")
		}
	}
	if reason := tokenProblem(c.APIToken); reason != "" {
		// The value is a secret: the line says what is wrong, not what it is.
		return bad("API_TOKEN", "%s", reason)
	}
	// Case does not matter to either: LOG_FORMAT=JSON is json.
	c.LogFormat = strings.ToLower(c.LogFormat)
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return bad("LOG_FORMAT", "must be text or json, got %q", c.LogFormat)
	}
	c.LogLevel = strings.ToLower(c.LogLevel)
	level, ok := levels[c.LogLevel]
	if !ok {
		return bad("LOG_LEVEL", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	c.Level = level
	if c.ShutdownTimeout <= 0 {
		return bad("SHUTDOWN_TIMEOUT", "must be positive, got %s", c.ShutdownTimeout)
	}
	return nil
}

// levels are the values of LOG_LEVEL. slog.Level's UnmarshalText takes
// more ("info+2") than the contract names.
var levels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

// checkClientID expands ${HOSTNAME} and checks that the id is an MQTT
// string: replicas of one service definition (docker compose --scale)
// share their environment, and the host name tells their sessions apart.
func (c *Common) checkClientID() error {
	if strings.Contains(c.ClientID, "${HOSTNAME}") {
		host, err := os.Hostname()
		if err != nil {
			return bad("MQTT_CLIENT_ID", "%q: host name for ${HOSTNAME}: %v", c.ClientID, err)
		}
		c.ClientID = strings.ReplaceAll(c.ClientID, "${HOSTNAME}", host)
	}
	switch {
	case c.ClientID == "":
		return bad("MQTT_CLIENT_ID", "must not be empty")
	case len(c.ClientID) > mqttconn.MaxTopicBytes, !utf8.ValidString(c.ClientID), strings.ContainsRune(c.ClientID, 0):
		return bad("MQTT_CLIENT_ID", "must be UTF-8 without U+0000, at most %d bytes (an MQTT string)", mqttconn.MaxTopicBytes)
	}
	return nil
}

// tokenProblem says what makes token unusable as a bearer token, or "".
func tokenProblem(token string) string {
	if strings.TrimSpace(token) != token {
		return "must not begin or end with white space: a bearer token is compared without it"
	}
	for _, r := range token {
		switch {
		case r < 0x20 || r == 0x7f:
			return "must not contain control characters: an HTTP header cannot carry them"
		case r > 0x7e:
			return "must be ASCII: browsers cannot send other characters in an HTTP header unchanged"
		}
	}
	return ""
}
