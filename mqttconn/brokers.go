package mqttconn

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// ParseBrokers reads MQTT_BROKER: one broker URL, or a comma-separated list
// of them that a client tries in turn. Each is tcp://, ssl://, ws:// or
// wss:// with a host; tcp and ssl take no path and default their port to
// 1883 and 8883, ws and wss keep their URL's. An error names the element at
// fault (1-based) when there are several.
func ParseBrokers(raw string) ([]*url.URL, error) {
	parts := strings.Split(raw, ",")
	out := make([]*url.URL, 0, len(parts))
	for k, p := range parts {
		u, err := parseBroker(strings.TrimSpace(p))
		if err != nil {
			if len(parts) > 1 {
				return nil, fmt.Errorf("element %d of %d: %w", k+1, len(parts), err)
			}
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

func parseBroker(s string) (*url.URL, error) {
	if s == "" {
		return nil, fmt.Errorf("empty broker URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", s)
	}
	switch u.Scheme {
	case "tcp", "ssl", "ws", "wss":
	default:
		return nil, fmt.Errorf("%q: the scheme must be tcp://, ssl://, ws:// or wss://", s)
	}
	switch {
	case u.Hostname() == "":
		return nil, fmt.Errorf("%q names no host", s)
	case u.User != nil:
		return nil, fmt.Errorf("%q: give credentials in MQTT_USERNAME and MQTT_PASSWORD, not in the URL", redacted(u))
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("%q: a broker URL takes no query or fragment", s)
	case (u.Scheme == "tcp" || u.Scheme == "ssl") && u.Path != "" && u.Path != "/":
		return nil, fmt.Errorf("%q: a %s:// URL takes no path", s, u.Scheme)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q: port must be 1 to 65535", s)
		}
	} else if u.Scheme == "tcp" || u.Scheme == "ssl" {
		// The client dials host:port as given: supply the IANA ports.
		u.Host = net.JoinHostPort(u.Hostname(), map[string]string{"tcp": "1883", "ssl": "8883"}[u.Scheme])
	}
	if u.Scheme == "tcp" || u.Scheme == "ssl" {
		u.Path = ""
	}
	return u, nil
}

func redacted(u *url.URL) string {
	c := *u
	c.User = url.User("xxxxx")
	return c.String()
}

// Secure reports whether any of brokers needs TLS (ssl:// or wss://).
func Secure(brokers []*url.URL) bool {
	for _, u := range brokers {
		if u.Scheme == "ssl" || u.Scheme == "wss" {
			return true
		}
	}
	return false
}

// RotateAfter returns brokers in the same cyclic order, starting with the
// one after last (the broker of the connection just lost), so that a client
// that loses a node tries the others before it: a node that stopped
// answering without closing its connections would otherwise hold up every
// attempt at the head of the list until the connect timeout. A last that is
// not in the list leaves the order as it is.
func RotateAfter(brokers []*url.URL, last string) []*url.URL {
	for i, u := range brokers {
		if u.String() == last {
			return append(slices.Clone(brokers[i+1:]), brokers[:i+1]...)
		}
	}
	return brokers
}
