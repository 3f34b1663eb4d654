package stream

import (
	"context"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// Lister is the part of the store a stream reads.
type Lister interface {
	List(ctx context.Context, q store.Query) ([]store.Message, error)
}

// replay yields the stored messages matching filter with ids above a
// position, oldest first, in batches of at most page rows and about
// maxBytes of payload: memory stays at one batch however long the client
// was away. It reads forward until a batch ends short of its bounds, so
// that it has read every message committed before that read; what comes
// later the hub delivers.
type replay struct {
	src      Lister
	filter   string
	page     int
	maxBytes int64

	first []store.Message // the batch plan read, not yet taken
	done  bool            // the last read ended short of its bounds
}

// plan reads the first batch after after, and returns the position the
// replay really starts from.
func (r *replay) plan(ctx context.Context, after int64) (int64, error) {
	rows, err := r.read(ctx, after)
	if err != nil || len(rows) > 0 || after == 0 {
		r.first = rows
		return after, err
	}
	// Nothing after the id: fine, unless no stored id reaches it. Ids are
	// never reused and retention deletes the oldest first, so then the id
	// came from another database (the store was replaced while the client
	// kept its Last-Event-ID): start from the beginning rather than skip
	// every new message up to that id.
	newest, err := r.src.List(ctx, store.Query{Limit: 1})
	if err != nil {
		return after, err
	}
	if len(newest) > 0 && newest[0].ID >= after {
		return after, nil
	}
	r.first, err = r.read(ctx, 0)
	return 0, err
}

// next returns the next batch, oldest first, or nil at the end. last is
// the id sent last.
func (r *replay) next(ctx context.Context, last int64) ([]store.Message, error) {
	if r.first != nil {
		out := r.first
		r.first = nil
		return out, nil
	}
	if r.done {
		return nil, nil
	}
	return r.read(ctx, last)
}

// finished reports whether next has nothing more to return.
func (r *replay) finished() bool { return r.first == nil && r.done }

func (r *replay) read(ctx context.Context, after int64) ([]store.Message, error) {
	q := store.Query{Filter: r.filter, After: after, Limit: r.page, MaxBytes: r.maxBytes, Oldest: true}
	rows, err := r.src.List(ctx, q)
	if err != nil {
		return nil, err
	}
	r.done = !store.Full(q, rows)
	if len(rows) == 0 {
		return nil, nil
	}
	return rows, nil
}
