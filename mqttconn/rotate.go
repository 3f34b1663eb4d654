package mqttconn

import (
	"net/url"
	"slices"
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
