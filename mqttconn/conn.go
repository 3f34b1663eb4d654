// Package mqttconn is what both services need of MQTT beside Eclipse Paho:
// the network connection they give Paho (through
// SetCustomOpenConnectionFn), whose reads are buffered and whose writes are
// coalesced by one writer goroutine, so that packets sent in a burst, such
// as a batch of publishes or of acknowledgements, leave in a few write(2)
// calls instead of one each; and the rule for the topic names they publish
// to (ValidateTopic). Package service holds the rest they share.
package mqttconn

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// maxPending is how much a conn buffers before Write waits for the
// connection to take it, as a write(2) on a full socket would.
const maxPending = 4 << 20

// Conn is the connection Paho uses, made cheaper per packet. Paho reads a
// packet a few bytes at a time (three read(2) calls for a PUBACK) and writes
// each packet with a write(2) of its own. Here reads go through a buffer,
// and Write only appends to a buffer that one goroutine writes out: packets
// that pile up while a write(2) is under way leave together in the next.
// Nothing waits for a timer: the writer writes as soon as anything is
// pending, so a lone packet leaves at once. A QoS 0 publish is complete only
// once its bytes are written out, which Queued and Written tell.
//
// Write deadlines are the conn's own: every write(2) must finish within
// timeout (the service's Paho write timeout), and Paho's SetWriteDeadline
// calls, made around each packet, are ignored.
// A failed write closes the connection, so that Paho's reader fails too and
// Paho reconnects as it would after its own failed write.
type Conn struct {
	net.Conn
	// Broker is the URL the connection was dialled for.
	Broker  string
	r       *bufio.Reader
	timeout time.Duration

	mu      sync.Mutex
	pending []byte
	spare   []byte
	queued  uint64 // bytes ever given to Write
	written uint64 // bytes ever written out
	err     error  // the first failed write; every later Write returns it
	flushed chan struct{}
	closed  bool

	wake      chan struct{} // cap 1: there is something pending
	done      chan struct{} // closed by Close
	exited    chan struct{} // closed when the writer goroutine returns
	closeOnce sync.Once
}

func newConn(nc net.Conn, timeout time.Duration) *Conn {
	c := &Conn{
		Conn:    nc,
		r:       bufio.NewReaderSize(nc, 16<<10),
		timeout: timeout,
		flushed: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		exited:  make(chan struct{}),
	}
	// The conn owns its writer goroutine; Close ends it.
	go c.writeLoop()
	return c
}

func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && !c.closed && len(c.pending) >= maxPending {
		ch := c.flushed
		c.mu.Unlock()
		<-ch
		c.mu.Lock()
	}
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return 0, err
	case c.closed:
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.pending = append(c.pending, p...)
	c.queued += uint64(len(p))
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // the writer has been woken already
	}
	return len(p), nil
}

// SetDeadline applies t to reads only; see conn.
func (c *Conn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// SetWriteDeadline is ignored; see conn.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

func (c *Conn) writeLoop() {
	defer close(c.exited)
	for {
		select {
		case <-c.wake:
			if !c.flush(c.timeout) {
				return
			}
		case <-c.done:
			// What Paho wrote last before closing (a DISCONNECT) still goes
			// out, briefly bounded.
			c.flush(min(c.timeout, time.Second))
			return
		}
	}
}

// flush writes out everything pending, including what comes meanwhile. It
// reports false once a write has failed.
func (c *Conn) flush(timeout time.Duration) bool {
	for {
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return false
		}
		out := c.pending
		if len(out) == 0 {
			c.mu.Unlock()
			return true
		}
		c.pending = c.spare[:0]
		c.mu.Unlock()

		err := c.Conn.SetWriteDeadline(time.Now().Add(timeout))
		if err == nil {
			_, err = c.Conn.Write(out)
		}

		c.mu.Lock()
		if err != nil {
			c.err = err
		} else {
			c.written += uint64(len(out))
		}
		c.spare = out[:0]
		if cap(c.spare) > maxPending {
			c.spare = nil // a burst's buffer is not kept
		}
		close(c.flushed)
		c.flushed = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			// Paho's reader fails too, and Paho reconnects. The write's
			// error is the one Write and Written report.
			if cerr := c.Conn.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
				c.mu.Lock()
				c.err = errors.Join(c.err, cerr)
				c.mu.Unlock()
			}
			return false
		}
	}
}

// Queued returns how many bytes have been given to Write so far: the mark
// to pass to Written to learn when they have all left.
func (c *Conn) Queued() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued
}

// Written reports whether the first n bytes given to Write have been
// written out (done). If not yet, next is closed when the writer has
// finished its next write(2) or the Conn is closed: ask again then. err is
// the failed write's error, or net.ErrClosed when the Conn was closed
// before the bytes left; it is set whenever a write has failed.
func (c *Conn) Written(n uint64) (done bool, next <-chan struct{}, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.err != nil:
		return false, nil, c.err
	case c.written >= n:
		return true, nil, nil
	case c.closed:
		return false, nil, net.ErrClosed
	}
	return false, c.flushed, nil
}

// Close writes out what is pending (unless a write has failed), then
// closes the connection.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.done)
		// A write under way to a broker that takes nothing would hold Close
		// for the whole write timeout: cut it short.
		if err := c.Conn.SetWriteDeadline(time.Now().Add(min(c.timeout, time.Second))); err != nil {
			c.mu.Lock()
			c.err = errors.Join(c.err, err)
			c.mu.Unlock()
		}
	})
	<-c.exited
	c.mu.Lock()
	close(c.flushed) // wakes Writes and waiters on Written, which see closed
	c.flushed = make(chan struct{})
	c.mu.Unlock()
	if err := c.Conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close broker connection: %w", err)
	}
	return nil
}

// Open returns the function to give Paho's SetCustomOpenConnectionFn: it
// dials as Paho would and wraps the connection in a Conn whose every
// write(2) must finish within timeout. opened, unless nil, is called with
// each new Conn before Paho uses it.
func Open(timeout time.Duration, opened func(*Conn)) mqtt.OpenConnectionFunc {
	return func(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
		nc, err := Dial(uri, o)
		if err != nil {
			return nil, err
		}
		c := newConn(nc, timeout)
		c.Broker = uri.String()
		if opened != nil {
			opened(c)
		}
		return c, nil
	}
}

// Dial opens the network connection as Paho itself would for the schemes
// the configuration allows (tcp, ssl, ws, wss), proxies from the
// environment included.
func Dial(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	dialer := o.Dialer
	if dialer == nil {
		dialer = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	switch uri.Scheme {
	case "ws", "wss":
		u := *uri // the websocket library refuses URLs with user info
		u.User = nil
		var tlsc *tls.Config
		if uri.Scheme == "wss" {
			tlsc = o.TLSConfig
		}
		return mqtt.NewWebsocket(u.String(), tlsc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "tcp", "mqtt":
		return proxy.FromEnvironmentUsing(dialer).Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		if os.Getenv("all_proxy") == "" {
			return tls.DialWithDialer(dialer, "tcp", uri.Host, o.TLSConfig)
		}
		nc, err := proxy.FromEnvironment().Dial("tcp", uri.Host)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(nc, o.TLSConfig)
		if err := tc.Handshake(); err != nil {
			return nil, errors.Join(err, nc.Close())
		}
		return tc, nil
	}
	return nil, fmt.Errorf("unsupported broker scheme %q", uri.Scheme)
}
