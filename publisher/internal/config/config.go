// Package config reads the publisher's configuration from the environment.
package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// Config is every setting of the publisher. The envconfig tags are the
// contract's variable names, read without a prefix; the ones both services
// read are in service.Common.
type Config struct {
	service.Common

	// MaxInflight is the most QoS 1 and 2 publishes awaiting the broker's
	// acknowledgement at once. It must not exceed what the broker takes
	// from one client (Mosquitto's max_inflight_messages, 20 by default):
	// past that, Mosquitto acknowledges a publish and drops it.
	MaxInflight int `envconfig:"MQTT_MAX_INFLIGHT" default:"20"`

	// CORSAllowedOrigins lists the origins (scheme://host[:port]) whose
	// browsers may call the API; "*" allows any.
	CORSAllowedOrigins []string `envconfig:"CORS_ALLOWED_ORIGINS"`

	PublishTimeout  time.Duration `envconfig:"PUBLISH_TIMEOUT" default:"5s"`
	MaxMessageBytes int           `envconfig:"MAX_MESSAGE_BYTES" default:"262144"`
	// MaxBatchBytes bounds the body of POST /publish/batch. It is raised to
	// the single-publish body limit when lower, so that a batch can always
	// carry one message of MaxMessageBytes.
	MaxBatchBytes int64 `envconfig:"MAX_BATCH_BYTES" default:"16777216"`
}

// MaxPayloadLimit is the largest MAX_MESSAGE_BYTES: an MQTT packet holds at
// most 268435455 bytes after its fixed header, less the topic's length prefix,
// the longest topic and the packet identifier.
const MaxPayloadLimit = 268435455 - 2 - message.MaxTopicBytes - 2

// Load reads the configuration from the process environment and checks it.
// Its errors are *service.Error.
func Load() (Config, error) {
	c := Config{Common: service.Defaults("publisher", ":8080")}
	if err := service.Load(&c, &c.Common); err != nil {
		return Config{}, err
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func bad(name, format string, args ...any) error {
	return &service.Error{Var: name, Msg: fmt.Sprintf(format, args...)}
}

func (c *Config) validate() error {
	if c.MaxInflight < 1 || c.MaxInflight > message.MaxInflight {
		return bad("MQTT_MAX_INFLIGHT", "must be between 1 and %d, got %d", message.MaxInflight, c.MaxInflight)
	}
	if err := c.validateCORS(); err != nil {
		return err
	}
	if c.PublishTimeout <= 0 {
		return bad("PUBLISH_TIMEOUT", "must be positive, got %s", c.PublishTimeout)
	}
	if c.MaxMessageBytes < 1 || c.MaxMessageBytes > MaxPayloadLimit {
		return bad("MAX_MESSAGE_BYTES", "must be between 1 and %d, got %d", MaxPayloadLimit, c.MaxMessageBytes)
	}
	if c.MaxBatchBytes < 1 {
		return bad("MAX_BATCH_BYTES", "must be positive, got %d", c.MaxBatchBytes)
	}
	c.MaxBatchBytes = max(c.MaxBatchBytes, c.MaxBodyBytes())
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
				(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.Contains(u.Host, "*") {
				return bad("CORS_ALLOWED_ORIGINS", "%q is not an origin like https://console.example:8081", o)
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
