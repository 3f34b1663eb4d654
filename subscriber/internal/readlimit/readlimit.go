// Package readlimit bounds the memory that reading stored messages takes:
// one read holds at most about PageBytes of payload, and a Gate lets only a
// few reads run at once. GET /messages and the replay of GET
// /messages/stream both go through it.
package readlimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// The bounds of the subscriber's reads.
const (
	// PageBytes is the payload one page of GET /messages, or one replay
	// batch of the stream, holds at most (plus the row that crosses it):
	// a thousand small messages, or sixteen of the publisher's largest
	// (256 KiB).
	PageBytes = 4 << 20
	// Concurrent is how many reads run at once: as many as the SQLite
	// store has reader connections (more would only wait for one there),
	// and half the PostgreSQL pool, leaving the rest to the writer.
	Concurrent = 4
	// Wait is how long a request waits for a turn before it is refused
	// (503 with Retry-After).
	Wait = 5 * time.Second
	// RetryAfter is the Retry-After, in seconds, of a refused read.
	RetryAfter = 2
)

// ErrBusy is returned by Acquire when no turn came within the wait.
var ErrBusy = errors.New("too many reads of stored messages at once; retry later")

// Gate lets at most n reads run at once; the others wait their turn.
type Gate struct {
	slots    chan struct{}
	wait     time.Duration
	rejected atomic.Int64
}

// New returns a gate of n turns (at least 1) whose Acquire waits at most
// wait.
func New(n int, wait time.Duration) *Gate {
	return &Gate{slots: make(chan struct{}, max(n, 1)), wait: wait}
}

// Acquire waits for a turn, at most the gate's wait and while ctx lasts,
// and returns the function that gives it back. It returns ErrBusy when the
// wait ran out and ctx's error when ctx ended.
func (g *Gate) Acquire(ctx context.Context) (release func(), err error) {
	return g.acquire(ctx, g.wait)
}

// Await waits for a turn as long as ctx lasts, for a read that cannot be
// refused any more (a stream that has answered).
func (g *Gate) Await(ctx context.Context) (release func(), err error) {
	return g.acquire(ctx, 0)
}

func (g *Gate) acquire(ctx context.Context, wait time.Duration) (release func(), err error) {
	select {
	case g.slots <- struct{}{}:
		return g.release(), nil
	default:
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case g.slots <- struct{}{}:
		return g.release(), nil
	case <-timeout:
		g.rejected.Add(1)
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *Gate) release() func() {
	var once sync.Once
	return func() { once.Do(func() { <-g.slots }) }
}

// InUse is how many turns are taken now.
func (g *Gate) InUse() int { return len(g.slots) }

// Rejected is how many Acquire calls ran out of wait.
func (g *Gate) Rejected() int64 { return g.rejected.Load() }
