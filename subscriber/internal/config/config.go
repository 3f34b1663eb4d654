// Package config reads the subscriber's environment variables.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/telemetry-stack/mqtt-stack/mqttconn"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// Config is the whole configuration of the subscriber.
type Config struct {
	Broker      string `envconfig:"MQTT_BROKER" default:"tcp://localhost:1883"`
	ClientID    string `envconfig:"MQTT_CLIENT_ID" default:"subscriber"`
	Username    string `envconfig:"MQTT_USERNAME"`
	Password    string `envconfig:"MQTT_PASSWORD"`
	CAFile      string `envconfig:"MQTT_CA_FILE"`
	CertFile    string `envconfig:"MQTT_CERT_FILE"`
	KeyFile     string `envconfig:"MQTT_KEY_FILE"`
	QoS         int    `envconfig:"MQTT_QOS" default:"1"`
	StatusTopic string `envconfig:"MQTT_STATUS_TOPIC"`
	TopicsRaw   string `envconfig:"MQTT_TOPICS" default:"#"`
	ShareGroup  string `envconfig:"MQTT_SHARE_GROUP"`

	DatabaseURL     string        `envconfig:"DATABASE_URL" default:"sqlite:data/messages.db"`
	Retention       time.Duration `envconfig:"RETENTION" default:"0"`
	LogPayloadBytes int           `envconfig:"LOG_PAYLOAD_BYTES" default:"256"`

	HTTPAddr string `envconfig:"HTTP_ADDR" default:":8081"`
	// PublisherURL is the publisher's base URL as a browser reaches it;
	// the web console publishes there. Empty hides the publish form.
	PublisherURL string `envconfig:"PUBLISHER_URL"`
	// APIToken, when set, is the bearer token every endpoint but
	// /healthz, /readyz, /metrics and the console's files needs.
	APIToken  string `envconfig:"API_TOKEN"`
	LogFormat string `envconfig:"LOG_FORMAT" default:"text"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info"`

	// Derived by Load.
	Brokers  []string    `ignored:"true"` // MQTT_BROKER parsed: the URLs to try in turn
	Topics   []string    `ignored:"true"`
	TLS      *tls.Config `ignored:"true"`
	Level    slog.Level  `ignored:"true"`
	Database Database    `ignored:"true"`
}

// Database is the parsed DATABASE_URL.
type Database struct {
	Driver string // "sqlite" or "postgres"
	Path   string // sqlite: the file
	URL    string // postgres: the connection URL
}

// Error is a configuration error naming its variable.
type Error struct {
	Var string
	Err error
}

func (e *Error) Error() string { return "invalid " + e.Var + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func bad(v, format string, args ...any) error {
	return &Error{Var: v, Err: fmt.Errorf(format, args...)}
}

// Load reads and validates the environment. It creates the directory of a
// SQLite database file. Every error it returns is an *Error.
func Load() (Config, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return c, &Error{Var: pe.KeyName, Err: fmt.Errorf("%q: %w", pe.Value, unwrapParse(pe.Err))}
		}
		return c, &Error{Var: "environment", Err: err}
	}
	if err := c.validate(); err != nil {
		return c, err
	}
	return c, nil
}

// unwrapParse shortens strconv's "strconv.ParseInt: parsing "x": invalid
// syntax" to "invalid syntax".
func unwrapParse(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

func (c *Config) validate() error {
	brokers, err := mqttconn.ParseBrokers(c.Broker)
	if err != nil {
		return bad("MQTT_BROKER", "%w", err)
	}
	c.Brokers = make([]string, len(brokers))
	for k, u := range brokers {
		c.Brokers[k] = u.String()
	}
	// Replicas of one service definition (docker compose --scale) share
	// their environment; the host name tells their sessions apart.
	if strings.Contains(c.ClientID, "${HOSTNAME}") {
		host, err := os.Hostname()
		if err != nil {
			return bad("MQTT_CLIENT_ID", "%q: host name for ${HOSTNAME}: %w", c.ClientID, err)
		}
		c.ClientID = strings.ReplaceAll(c.ClientID, "${HOSTNAME}", host)
	}
	if c.ClientID == "" || topicStringErr(c.ClientID) != nil {
		return bad("MQTT_CLIENT_ID", "%q: must be non-empty UTF-8", c.ClientID)
	}
	if c.QoS < 0 || c.QoS > 2 {
		return bad("MQTT_QOS", "%d: must be 0, 1 or 2", c.QoS)
	}
	if c.StatusTopic == "" {
		c.StatusTopic = "clients/" + c.ClientID + "/status"
	}
	if err := topic.ValidateName(c.StatusTopic); err != nil {
		return bad("MQTT_STATUS_TOPIC", "%q %w", c.StatusTopic, err)
	}
	c.Topics = nil
	for f := range strings.SplitSeq(c.TopicsRaw, ",") {
		f = strings.TrimSpace(f)
		if err := topic.ValidateFilter(f); err != nil {
			return bad("MQTT_TOPICS", "filter %q %w", f, err)
		}
		c.Topics = append(c.Topics, f)
	}
	if c.ShareGroup != "" {
		if err := topic.ValidateShareGroup(c.ShareGroup); err != nil {
			return bad("MQTT_SHARE_GROUP", "%q %w", c.ShareGroup, err)
		}
		// A member probes the group on a topic named after its client id.
		if err := topic.ValidateName(topic.ShareProbe(c.ClientID)); err != nil {
			return bad("MQTT_CLIENT_ID", "%q: with MQTT_SHARE_GROUP it names the probe topic %q, which %w", c.ClientID, topic.ShareProbe(c.ClientID), err)
		}
	}
	if err := c.loadTLS(mqttconn.Secure(brokers)); err != nil {
		return err
	}
	if err := c.parseDatabase(); err != nil {
		return err
	}
	if c.Retention < 0 {
		return bad("RETENTION", "%s: must not be negative", c.Retention)
	}
	if c.LogPayloadBytes < 0 {
		return bad("LOG_PAYLOAD_BYTES", "%d: must not be negative", c.LogPayloadBytes)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return bad("HTTP_ADDR", "%q: want host:port, e.g. :8081", c.HTTPAddr)
	}
	if c.PublisherURL != "" {
		u, err := url.Parse(c.PublisherURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return bad("PUBLISHER_URL", "%q: want the publisher's base URL as a browser reaches it, like http://localhost:8080", c.PublisherURL)
		}
	}
	if reason := tokenProblem(c.APIToken); reason != "" {
		// The value is a secret: the line says what is wrong, not what it is.
		return bad("API_TOKEN", "%s", reason)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return bad("LOG_FORMAT", "%q: must be text or json", c.LogFormat)
	}
	if err := c.Level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return bad("LOG_LEVEL", "%q: must be debug, info, warn or error", c.LogLevel)
	}
	return nil
}

// tokenProblem says what makes token unusable as a bearer token, or "". The
// publisher refuses the same values in the same words.
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

func topicStringErr(s string) error {
	if err := topic.ValidateName(s); err != nil && !errors.Is(err, topic.ErrWildcard) {
		return err
	}
	return nil
}

func (c *Config) parseDatabase() error {
	switch {
	case strings.HasPrefix(c.DatabaseURL, "sqlite:"):
		path := strings.TrimPrefix(c.DatabaseURL, "sqlite:")
		path = strings.TrimPrefix(path, "//") // tolerate sqlite:///abs/path
		if path == "" || strings.ContainsRune(path, '?') {
			return bad("DATABASE_URL", "%q: want sqlite:<file path>", c.DatabaseURL)
		}
		if dir := filepath.Dir(path); dir != "" {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return bad("DATABASE_URL", "create directory of %s: %w", path, err)
			}
		}
		c.Database = Database{Driver: "sqlite", Path: path}
	case strings.HasPrefix(c.DatabaseURL, "postgres://"), strings.HasPrefix(c.DatabaseURL, "postgresql://"):
		if _, err := url.Parse(c.DatabaseURL); err != nil {
			return bad("DATABASE_URL", "not a URL")
		}
		c.Database = Database{Driver: "postgres", URL: c.DatabaseURL}
	default:
		return bad("DATABASE_URL", "%q: want sqlite:<file path>, postgres:// or postgresql://", redact(c.DatabaseURL))
	}
	return nil
}

// redact hides a password in a URL so that an error line can show the rest.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}

func (c *Config) loadTLS(secure bool) error {
	t, err := mqttconn.LoadTLS(c.CAFile, c.CertFile, c.KeyFile, secure)
	if se := (*mqttconn.SettingError)(nil); errors.As(err, &se) {
		return &Error{Var: se.Var, Err: errors.New(se.Msg)}
	}
	c.TLS = t
	return nil
}
