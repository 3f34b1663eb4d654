package mqttconn

import (
	"net/url"
	"slices"
	"time"
)

// How both services find a broker again, one set of values for both: how
// long a service is away from the broker after losing it is bounded by
// these and by the broker (docs/scaling.md has the figures measured on a
// NATS cluster).
const (
	// ConnectRetryInterval is the pause between attempts before the first
	// connection. After a lost one, Paho pauses 1s once every URL of
	// MQTT_BROKER failed, doubling it while attempts keep failing.
	ConnectRetryInterval = time.Second
	// MaxReconnectInterval caps that pause: once a broker answers again,
	// the next attempt is at most this far off.
	MaxReconnectInterval = 2 * time.Second
	// ConnectTimeout bounds one attempt at one URL (TCP, TLS, CONNACK), so
	// a node that accepts connections without answering (stopped,
	// overloaded) holds up the next URL of the list this long at most. A
	// NATS node itself closes a connection whose CONNECT it cannot serve
	// within its js_api_timeout (5s by default, 2s in the stack's
	// cluster).
	ConnectTimeout = 5 * time.Second
	// KeepAlive and PingTimeout: a connection from which nothing has come
	// for KeepAlive gets a PINGREQ, and is given up PingTimeout later
	// without its PINGRESP. A killed broker closes its connections at
	// once; a frozen or cut-off one is noticed only this way, within
	// KeepAlive + PingTimeout (+ a quarter of KeepAlive, Paho's check
	// interval).
	KeepAlive   = 5 * time.Second
	PingTimeout = 5 * time.Second
)

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
