package stream

import (
	"context"
	"slices"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// Lister is the part of the store a stream reads: stored messages, newest
// first, at most q.Limit of them with ids <= q.Before.
type Lister interface {
	List(ctx context.Context, q store.Query) ([]store.Message, error)
}

// replay yields the stored messages matching filter with ids above after,
// oldest first. The store lists newest first, so replay walks down from the
// newest row to after in pages, remembering only where each page starts,
// and then reads the pages again from the oldest up. Memory stays at one
// page however long the client was away; a short absence (one page) costs
// one query.
type replay struct {
	src    Lister
	filter string
	after  int64
	page   int

	bounds []int64         // upper id bound of each page still to send, newest first; 0 is unbounded
	rows   []store.Message // the oldest page, newest first
}

// plan walks down from the newest stored message to after.
func (r *replay) plan(ctx context.Context) error {
	if err := r.walk(ctx); err != nil {
		return err
	}
	if len(r.rows) > 0 || len(r.bounds) > 0 || r.after == 0 {
		return nil
	}
	// Nothing after the id: fine, unless no stored id reaches it. Ids are
	// never reused and retention deletes the oldest first, so then the id
	// came from another database (the store was replaced while the client
	// kept its Last-Event-ID): start from the beginning rather than skip
	// every new message up to that id.
	newest, err := r.src.List(ctx, store.Query{Limit: 1})
	if err != nil {
		return err
	}
	if len(newest) > 0 && newest[0].ID >= r.after {
		return nil
	}
	r.after = 0
	return r.walk(ctx)
}

// walk reads newest-first pages down to after.
func (r *replay) walk(ctx context.Context) error {
	var before int64 // unbounded
	for {
		rows, err := r.src.List(ctx, store.Query{Filter: r.filter, Before: before, Limit: r.page})
		if err != nil {
			return err
		}
		n := newer(rows, r.after)
		if n < len(rows) || len(rows) < r.page || rows[len(rows)-1].ID <= 1 {
			r.rows = rows[:n]
			return nil
		}
		r.bounds = append(r.bounds, before)
		before = rows[len(rows)-1].ID - 1
	}
}

// next returns the next batch to send, oldest first, or nil at the end.
// last is the id sent last (or after), so that a batch never repeats it.
func (r *replay) next(ctx context.Context, last int64) ([]store.Message, error) {
	if len(r.rows) > 0 {
		out := r.rows
		r.rows = nil
		slices.Reverse(out)
		return out, nil
	}
	for len(r.bounds) > 0 {
		hi := r.bounds[len(r.bounds)-1]
		r.bounds = r.bounds[:len(r.bounds)-1]
		out, err := r.read(ctx, last, hi)
		if err != nil {
			return nil, err
		}
		// Empty when retention deleted the page since plan: go on.
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, nil
}

// read returns the rows with last < id <= hi (hi 0: unbounded), oldest
// first. Asking for one row more than a page shows that the read reached
// last; rows deleted or committed out of order since plan only make it take
// another round.
func (r *replay) read(ctx context.Context, last, hi int64) ([]store.Message, error) {
	var out []store.Message
	before := hi
	for {
		rows, err := r.src.List(ctx, store.Query{Filter: r.filter, Before: before, Limit: r.page + 1})
		if err != nil {
			return nil, err
		}
		n := newer(rows, last)
		out = append(out, rows[:n]...)
		if n < len(rows) || len(rows) <= r.page || rows[len(rows)-1].ID <= 1 {
			break
		}
		before = rows[len(rows)-1].ID - 1
	}
	slices.Reverse(out)
	return out, nil
}

// newer is how many of rows, newest first, have ids above id.
func newer(rows []store.Message, id int64) int {
	n, _ := slices.BinarySearchFunc(rows, id, func(m store.Message, id int64) int {
		// Descending order: rows above id come first.
		switch {
		case m.ID > id:
			return -1
		case m.ID < id:
			return 1
		}
		return 0
	})
	return n
}
