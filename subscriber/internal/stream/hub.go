// Package stream fans stored messages out live: a Hub fed after each
// commit (by ingest's writer, or by the follower of a shared store) and
// read by the Server-Sent Events handler of GET /messages/stream (package
// api), which replays from the store and then follows the hub.
package stream

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// DefaultBuffer is how many messages a subscription may hold before the hub
// drops it.
const DefaultBuffer = 1024

// Why a subscription ended.
var (
	ErrDropped = errors.New("fell too far behind")
	ErrClosed  = errors.New("server shutting down")
)

// Hub fans committed messages out to subscriptions. Publish never blocks:
// a subscription whose buffer is full is dropped rather than allowed to
// slow down ingest. The zero value is not usable; call NewHub.
type Hub struct {
	buffer int

	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool

	dropped atomic.Uint64
}

// NewHub returns a hub whose subscriptions each buffer up to buffer
// messages (DefaultBuffer when buffer < 1).
func NewHub(buffer int) *Hub {
	if buffer < 1 {
		buffer = DefaultBuffer
	}
	return &Hub{buffer: buffer, subs: make(map[*Subscription]struct{})}
}

// Publish hands msgs, just committed and carrying their ids, to every
// subscription whose filter matches. Call it from one goroutine, in id
// order, each message once, and only with messages that readers of the
// store can already see, below which no id can still appear: a stream
// sends what the hub gives it in the order given, skips what its replay
// from the store already sent, and a client resumes after the last id it
// saw. The SQLite writer (one per store) or the PostgreSQL follower (of
// every member's commits) is that goroutine.
func (h *Hub) Publish(msgs []store.Message) {
	if len(msgs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if !s.offer(msgs) {
			// Too far behind: end it now. Its client reconnects with the
			// last id it saw and replays the rest from the store.
			h.drop(s, ErrDropped)
			h.dropped.Add(1)
		}
	}
}

// Subscribe returns a subscription to the messages matching filter, which
// must be a valid topic filter. Messages published before the call are not
// delivered. The caller must Close it.
func (h *Hub) Subscribe(filter string) *Subscription {
	s := &Subscription{
		hub:    h,
		filter: filter,
		c:      make(chan store.Message, h.buffer),
		done:   make(chan struct{}),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.err = ErrClosed
		close(s.done)
		return s
	}
	h.subs[s] = struct{}{}
	return s
}

// Close ends every subscription with ErrClosed and refuses new ones. Call it
// when the server shuts down (http.Server.RegisterOnShutdown), so that open
// streams end instead of holding Shutdown until its deadline.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		h.drop(s, ErrClosed)
	}
}

// Clients is the number of open subscriptions.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Dropped counts the subscriptions dropped for falling behind.
func (h *Hub) Dropped() uint64 { return h.dropped.Load() }

// drop ends s with err; h.mu must be held.
func (h *Hub) drop(s *Subscription, err error) {
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	s.err = err
	close(s.done)
}

// offer queues the messages of msgs that match s without blocking; it
// reports false when the buffer is full.
func (s *Subscription) offer(msgs []store.Message) bool {
	for _, m := range msgs {
		if !topic.Match(s.filter, m.Topic) {
			continue
		}
		select {
		case s.c <- m:
		default:
			return false
		}
	}
	return true
}

// Subscription is one reader of a Hub.
type Subscription struct {
	hub    *Hub
	filter string
	c      chan store.Message
	done   chan struct{}
	err    error // set under hub.mu before done is closed
}

// C delivers the matching messages in the order they were published.
func (s *Subscription) C() <-chan store.Message { return s.c }

// Done is closed when the hub ends the subscription: it fell behind
// (Err is ErrDropped) or the hub closed (ErrClosed). Messages still in C
// may be read but the stream has a gap after them.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err says why Done is closed; nil while it is open.
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close ends the subscription. It is safe to call more than once.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	delete(s.hub.subs, s)
}
