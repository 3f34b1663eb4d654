// Package backfill extracts, in the background, the values of the messages
// that a store kept before it kept values (a database made by an earlier
// version): a batch at a time, each in a short transaction, pausing after
// each for as long as it took, so that ingest keeps the store's writer at
// least half of the time.
package backfill

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Filler extracts the values of up to limit earlier messages (see
// store.Store.FillValues).
type Filler interface {
	FillValues(ctx context.Context, limit int) (read int, left int64, err error)
}

// Tuning of Run.
const (
	// Batch is how many messages one transaction reads at most (the store
	// also bounds their bytes). Each commit of SQLite's costs an fsync;
	// fewer, larger batches spread it thinner, at the cost of a longer
	// hold on the writer (BenchmarkFillValues in package sqlite).
	Batch = 1000
	// minPause is the least pause between batches.
	minPause = time.Millisecond
	// busyPause is the pause while another member of a share group holds
	// the backfill's position.
	busyPause = time.Second
	// ErrorPause is the pause after a failed batch.
	ErrorPause = 5 * time.Second
)

// Backfill runs a Filler and tells how far it is.
type Backfill struct {
	f          Filler
	log        *slog.Logger
	errorPause time.Duration
	left       atomic.Int64
	read       atomic.Int64
	errors     atomic.Int64
}

// New returns a Backfill of f.
func New(log *slog.Logger, f Filler) *Backfill {
	b := &Backfill{f: f, log: log, errorPause: ErrorPause}
	b.left.Store(-1)
	return b
}

// Left is about how many messages are left (ids, counting those retention
// deleted meanwhile); -1 before the first batch.
func (b *Backfill) Left() int64 { return b.left.Load() }

// Read is how many messages Run has read so far.
func (b *Backfill) Read() int64 { return b.read.Load() }

// Errors is how many batches failed.
func (b *Backfill) Errors() int64 { return b.errors.Load() }

// Run fills until nothing is left or ctx ends.
func (b *Backfill) Run(ctx context.Context) {
	start := time.Now()
	announced := false
	for ctx.Err() == nil {
		t := time.Now()
		n, left, err := b.f.FillValues(ctx, Batch)
		took := time.Since(t)
		pause := max(took, minPause)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			b.errors.Add(1)
			b.log.Warn("extracting the values of earlier messages failed; retrying", "retry_in", b.errorPause, "err", err)
			pause = b.errorPause
		case n == 0 && left == 0:
			b.left.Store(0)
			if announced {
				b.log.Info("values of earlier messages extracted", "messages", b.read.Load(), "took", time.Since(start).Round(time.Millisecond))
			}
			return
		default:
			b.left.Store(left)
			b.read.Add(int64(n))
			if !announced {
				announced = true
				b.log.Info("extracting the values of earlier messages in the background", "left", left+int64(n))
			}
			if n == 0 {
				pause = busyPause
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
	}
}
