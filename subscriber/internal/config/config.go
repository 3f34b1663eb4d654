// Package config reads the subscriber's environment variables.
package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// Config is the whole configuration of the subscriber. The envconfig tags
// are the contract's variable names, read without a prefix; the ones both
// services read are in service.Common.
type Config struct {
	service.Common

	TopicsRaw  string `envconfig:"MQTT_TOPICS" default:"#"`
	ShareGroup string `envconfig:"MQTT_SHARE_GROUP"`

	DatabaseURL     string        `envconfig:"DATABASE_URL" default:"sqlite:data/messages.db"`
	Retention       time.Duration `envconfig:"RETENTION" default:"0"`
	LogPayloadBytes int           `envconfig:"LOG_PAYLOAD_BYTES" default:"256"`

	// PublisherURL is the publisher's base URL as a browser reaches it;
	// the web console publishes there. Empty hides the publish form.
	PublisherURL string `envconfig:"PUBLISHER_URL"`

	// Derived by Load.
	Topics   []string `ignored:"true"`
	Database Database `ignored:"true"`
}

// Database is the parsed DATABASE_URL.
type Database struct {
	Driver string // "sqlite" or "postgres"
	Path   string // sqlite: the file
	URL    string // postgres: the connection URL
}

func bad(name, format string, args ...any) error {
	return &service.Error{Var: name, Msg: fmt.Sprintf(format, args...)}
}

// Load reads and validates the environment. It creates the directory of a
// SQLite database file. Its errors are *service.Error.
func Load() (Config, error) {
	c := Config{Common: service.Defaults("subscriber", ":8081")}
	if err := service.Load(&c, &c.Common); err != nil {
		return c, err
	}
	if err := c.validate(); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Config) validate() error {
	c.Topics = nil
	for f := range strings.SplitSeq(c.TopicsRaw, ",") {
		f = strings.TrimSpace(f)
		if err := topic.ValidateFilter(f); err != nil {
			return bad("MQTT_TOPICS", "filter %q %v", f, err)
		}
		c.Topics = append(c.Topics, f)
	}
	if c.ShareGroup != "" {
		if err := topic.ValidateShareGroup(c.ShareGroup); err != nil {
			return bad("MQTT_SHARE_GROUP", "%q %v", c.ShareGroup, err)
		}
		// A member probes the group on a topic named after its client id.
		if err := topic.ValidateName(topic.ShareProbe(c.ClientID)); err != nil {
			return bad("MQTT_CLIENT_ID", "%q: with MQTT_SHARE_GROUP it names the probe topic %q, which %v", c.ClientID, topic.ShareProbe(c.ClientID), err)
		}
	}
	if err := c.parseDatabase(); err != nil {
		return err
	}
	if c.Retention < 0 {
		return bad("RETENTION", "must not be negative, got %s", c.Retention)
	}
	if c.LogPayloadBytes < 0 {
		return bad("LOG_PAYLOAD_BYTES", "must not be negative, got %d", c.LogPayloadBytes)
	}
	if c.PublisherURL != "" {
		u, err := url.Parse(c.PublisherURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return bad("PUBLISHER_URL", "%q: want the publisher's base URL as a browser reaches it, like http://localhost:8080", c.PublisherURL)
		}
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
				return bad("DATABASE_URL", "create directory of %s: %v", path, err)
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
