// Package config reads the publisher's configuration from the environment.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/telemetry-stack/mqtt-stack/mqttconn"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// Config is every setting of the publisher. The envconfig tags are the
// contract's variable names, read without a prefix.
type Config struct {
	Broker      string `envconfig:"MQTT_BROKER" default:"tcp://localhost:1883"`
	ClientID    string `envconfig:"MQTT_CLIENT_ID" default:"publisher"`
	Username    string `envconfig:"MQTT_USERNAME"`
	Password    string `envconfig:"MQTT_PASSWORD"`
	CAFile      string `envconfig:"MQTT_CA_FILE"`
	CertFile    string `envconfig:"MQTT_CERT_FILE"`
	KeyFile     string `envconfig:"MQTT_KEY_FILE"`
	QoS         int    `envconfig:"MQTT_QOS" default:"1"`
	StatusTopic string `envconfig:"MQTT_STATUS_TOPIC"`
	// MaxInflight is the most QoS 1 and 2 publishes awaiting the broker's
	// acknowledgement at once. It must not exceed what the broker takes
	// from one client (Mosquitto's max_inflight_messages, 20 by default):
	// past that, Mosquitto acknowledges a publish and drops it.
	MaxInflight int `envconfig:"MQTT_MAX_INFLIGHT" default:"20"`

	HTTPAddr string `envconfig:"HTTP_ADDR" default:":8080"`
	// CORSAllowedOrigins lists the origins (scheme://host[:port]) whose
	// browsers may call the API; "*" allows any.
	CORSAllowedOrigins []string `envconfig:"CORS_ALLOWED_ORIGINS"`

	// PprofAddr, when set, serves net/http/pprof on a listener of its own
	// (never on HTTP_ADDR), e.g. 127.0.0.1:6060.
	PprofAddr string `envconfig:"PPROF_ADDR"`

	LogFormat string `envconfig:"LOG_FORMAT" default:"text"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info"`

	PublishTimeout  time.Duration `envconfig:"PUBLISH_TIMEOUT" default:"5s"`
	MaxMessageBytes int           `envconfig:"MAX_MESSAGE_BYTES" default:"262144"`
	// MaxBatchBytes bounds the body of POST /publish/batch. It is raised to
	// the single-publish body limit when lower, so that a batch can always
	// carry one message of MaxMessageBytes.
	MaxBatchBytes   int64         `envconfig:"MAX_BATCH_BYTES" default:"16777216"`
	APIToken        string        `envconfig:"API_TOKEN"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"10s"`

	// Brokers is MQTT_BROKER parsed: the URLs to try in turn.
	Brokers []string `ignored:"true"`
	// TLS is built from MQTT_CA_FILE, MQTT_CERT_FILE and MQTT_KEY_FILE for
	// an ssl:// or wss:// broker; nil otherwise.
	TLS *tls.Config `ignored:"true"`
}

// Error is a configuration error; Var names the environment variable at fault.
type Error struct {
	Var string
	Msg string
}

func (e *Error) Error() string { return e.Var + ": " + e.Msg }

// MaxPayloadLimit is the largest MAX_MESSAGE_BYTES: an MQTT packet holds at
// most 268435455 bytes after its fixed header, less the topic's length prefix,
// the longest topic and the packet identifier.
const MaxPayloadLimit = 268435455 - 2 - message.MaxTopicBytes - 2

// Load reads the configuration from the process environment and checks it.
func Load() (Config, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return Config{}, &Error{Var: pe.KeyName, Msg: fmt.Sprintf("cannot parse %q as %s", pe.Value, pe.TypeName)}
		}
		return Config{}, fmt.Errorf("read environment: %w", err)
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c *Config) validate() error {
	if err := c.validateBroker(); err != nil {
		return err
	}
	if c.ClientID == "" {
		return &Error{Var: "MQTT_CLIENT_ID", Msg: "must not be empty"}
	}
	if err := message.ValidateQoS(c.QoS); err != nil {
		return &Error{Var: "MQTT_QOS", Msg: err.Error()}
	}
	if c.MaxInflight < 1 || c.MaxInflight > message.MaxInflight {
		return &Error{Var: "MQTT_MAX_INFLIGHT", Msg: fmt.Sprintf("must be between 1 and %d, got %d", message.MaxInflight, c.MaxInflight)}
	}
	if c.StatusTopic == "" {
		c.StatusTopic = "clients/" + c.ClientID + "/status"
		if err := message.ValidateTopic(c.StatusTopic); err != nil {
			return &Error{Var: "MQTT_CLIENT_ID", Msg: "makes an invalid status topic: " + err.Error()}
		}
	} else if err := message.ValidateTopic(c.StatusTopic); err != nil {
		return &Error{Var: "MQTT_STATUS_TOPIC", Msg: err.Error()}
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return &Error{Var: "HTTP_ADDR", Msg: fmt.Sprintf("%q is not host:port", c.HTTPAddr)}
	}
	if c.PprofAddr != "" {
		_, port, err := net.SplitHostPort(c.PprofAddr)
		if err != nil {
			return &Error{Var: "PPROF_ADDR", Msg: fmt.Sprintf("%q is not host:port", c.PprofAddr)}
		}
		if c.PprofAddr == c.HTTPAddr && port != "0" {
			return &Error{Var: "PPROF_ADDR", Msg: "must not be HTTP_ADDR: profiles are never served on the API's port"}
		}
	}
	if err := c.validateCORS(); err != nil {
		return err
	}
	c.LogFormat = strings.ToLower(c.LogFormat)
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return &Error{Var: "LOG_FORMAT", Msg: fmt.Sprintf("must be text or json, got %q", c.LogFormat)}
	}
	c.LogLevel = strings.ToLower(c.LogLevel)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return &Error{Var: "LOG_LEVEL", Msg: fmt.Sprintf("must be debug, info, warn or error, got %q", c.LogLevel)}
	}
	if c.PublishTimeout <= 0 {
		return &Error{Var: "PUBLISH_TIMEOUT", Msg: fmt.Sprintf("must be positive, got %s", c.PublishTimeout)}
	}
	if c.MaxMessageBytes < 1 || c.MaxMessageBytes > MaxPayloadLimit {
		return &Error{Var: "MAX_MESSAGE_BYTES", Msg: fmt.Sprintf("must be between 1 and %d, got %d", MaxPayloadLimit, c.MaxMessageBytes)}
	}
	if c.MaxBatchBytes < 1 {
		return &Error{Var: "MAX_BATCH_BYTES", Msg: fmt.Sprintf("must be positive, got %d", c.MaxBatchBytes)}
	}
	c.MaxBatchBytes = max(c.MaxBatchBytes, c.MaxBodyBytes())
	if reason := tokenProblem(c.APIToken); reason != "" {
		// The value is a secret: the line says what is wrong, not what it is.
		return &Error{Var: "API_TOKEN", Msg: reason}
	}
	if c.ShutdownTimeout <= 0 {
		return &Error{Var: "SHUTDOWN_TIMEOUT", Msg: fmt.Sprintf("must be positive, got %s", c.ShutdownTimeout)}
	}
	return nil
}

// tokenProblem says what makes token unusable as a bearer token, or "". The
// subscriber refuses the same values in the same words.
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

func (c *Config) validateBroker() error {
	brokers, err := mqttconn.ParseBrokers(c.Broker)
	if err != nil {
		return &Error{Var: "MQTT_BROKER", Msg: err.Error()}
	}
	c.Brokers = make([]string, len(brokers))
	for k, u := range brokers {
		c.Brokers[k] = u.String()
	}
	t, err := mqttconn.LoadTLS(c.CAFile, c.CertFile, c.KeyFile, mqttconn.Secure(brokers))
	if se := (*mqttconn.SettingError)(nil); errors.As(err, &se) {
		return &Error{Var: se.Var, Msg: se.Msg}
	}
	c.TLS = t
	return nil
}

func (c *Config) validateCORS() error {
	origins := c.CORSAllowedOrigins[:0]
	for _, o := range c.CORSAllowedOrigins {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o != "*" {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
				(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
				return &Error{Var: "CORS_ALLOWED_ORIGINS", Msg: fmt.Sprintf("%q is not an origin like https://console.example:8081", o)}
			}
			o = strings.ToLower(u.Scheme + "://" + u.Host)
		}
		origins = append(origins, o)
	}
	c.CORSAllowedOrigins = origins
	return nil
}

// bodyOverhead allows for everything in a publish request besides the
// message and topic strings: keys, qos, retain, encoding, punctuation and
// generous whitespace.
const bodyOverhead = 16 << 10

// MaxBodyBytes is the largest body of a single publish request that can still
// be valid: a payload of MaxMessageBytes and a topic of 65535 bytes, both at
// their worst-case JSON escaping (a control byte is six bytes, \u00XX, which
// is more than base64's 4/3), plus overhead.
func (c Config) MaxBodyBytes() int64 {
	return 6*int64(c.MaxMessageBytes) + 6*message.MaxTopicBytes + bodyOverhead
}

// HTTPWriteTimeout bounds writing a response. A batch may wait for
// acknowledgements up to PUBLISH_TIMEOUT after issuing its last message, and
// issuing can itself block up to PUBLISH_TIMEOUT, so allow twice that plus
// margin.
func (c Config) HTTPWriteTimeout() time.Duration {
	return 2*c.PublishTimeout + 10*time.Second
}
