package ingest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// idleFlush is how long acknowledgement marks confirmed by the broker may
// wait for a commit of messages to carry them before they get one of
// their own.
const idleFlush = time.Second

// batch is what one transaction of the writer stores: arrivals, and the
// releases of QoS 2 packet ids whose PUBREL came.
type batch struct {
	key      int64 // drawn at the first attempt, kept across retries
	arrivals []*arrival
	releases map[*wire][]uint16

	// What the last attempt that reached Commit sent, and what it found.
	view   *view
	judged []judgement // one per arrival
	rows   []store.Message
	unsure bool // that Commit failed: it may have committed all the same
}

func (b *batch) released() []uint16 {
	var ids []uint16
	for _, l := range b.releases {
		ids = append(ids, l...)
	}
	return ids
}

// write commits batches until ctx ends and returns the one it could not
// commit, if any. A batch is what is queued, the PUBRELs that came, or,
// after idleFlush without either, the acknowledgement marks the broker
// confirmed meanwhile.
func (i *Ingester) write(ctx context.Context) *batch {
	for {
		var flush <-chan time.Time
		if len(i.unsaved) > 0 {
			flush = time.After(time.Until(i.unsavedSince.Add(idleFlush)))
		}
		b := &batch{}
		select {
		case <-ctx.Done():
			return nil
		case a := <-i.queue:
			arrivals := make([]*arrival, 1, min(i.cfg.MaxBatch, len(i.queue)+1))
			arrivals[0] = a
			b.arrivals = i.collect(arrivals)
		case <-i.wakeup:
		case <-flush:
		}
		b.releases = i.takeReleases(b.arrivals)
		i.takeConfirmations()
		due := len(i.unsaved) > 0 && time.Since(i.unsavedSince) >= idleFlush
		if len(b.arrivals) == 0 && len(b.releases) == 0 && !due {
			continue
		}
		if !i.commit(ctx, b) {
			return b
		}
	}
}

// collect adds whatever is queued, up to MaxBatch arrivals and
// MaxBatchBytes of payload.
func (i *Ingester) collect(arrivals []*arrival) []*arrival {
	bytes := 0
	for _, a := range arrivals {
		bytes += len(a.msg.Payload)
	}
	for len(arrivals) < i.cfg.MaxBatch && bytes < i.cfg.MaxBatchBytes {
		select {
		case a := <-i.queue:
			arrivals = append(arrivals, a)
			bytes += len(a.msg.Payload)
		default:
			i.m.QueueDepth.Set(float64(len(i.queue)))
			return arrivals
		}
	}
	i.m.QueueDepth.Set(float64(len(i.queue)))
	return arrivals
}

// takeReleases collects the PUBRELs that arrived on every connection and
// that no arrival not yet judged came before (arrivals are the batch's).
func (i *Ingester) takeReleases(arrivals []*arrival) map[*wire][]uint16 {
	for _, a := range arrivals {
		i.judged[a.wire] = max(i.judged[a.wire], a.seq)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	var out map[*wire][]uint16
	for _, w := range i.wires {
		if ids := w.releases(i.judged[w]); len(ids) > 0 {
			if out == nil {
				out = map[*wire][]uint16{}
			}
			out[w] = ids
		}
	}
	return out
}

// takeConfirmations moves what the broker confirmed of each connection's
// acknowledgements into the ledger, and forgets closed connections.
func (i *Ingester) takeConfirmations() {
	i.mu.Lock()
	defer i.mu.Unlock()
	for num, w := range i.wires {
		if seq := w.confirmed(); seq > i.ledger.acked[num] {
			i.ledger.acked[num] = seq
			i.unsaved[num] = seq
			if i.unsavedSince.IsZero() {
				i.unsavedSince = time.Now()
			}
		}
		if cur := i.current.Load(); w.closed() && (cur == nil || num != cur.num) {
			delete(i.wires, num)
			delete(i.judged, w)
		}
	}
}

// commit stores b, retrying with backoff until it succeeds (true) or ctx
// ends (false). Nothing is acknowledged unless it was committed.
func (i *Ingester) commit(ctx context.Context, b *batch) bool {
	backoff := 100 * time.Millisecond
	for {
		err := i.commitOnce(ctx, b)
		if err == nil {
			if i.storeErr.Swap(nil) != nil {
				i.log.Info("store commits succeed again")
			}
			return true
		}
		if errors.Is(err, store.ErrReset) {
			// The store lost what it held (a file deleted, a database
			// created again): write back all the ledger knows.
			i.log.Warn("store was set up again; committing again into it", "err", err)
			i.resetStore.Store(true)
		}
		i.m.StoreErrors.Inc()
		i.storeErr.Store(&err)
		// The lines of what waits are out, although nothing is
		// acknowledged.
		i.flushArrivals()
		i.log.Warn("commit failed; messages stay unacknowledged and are retried",
			"messages", len(b.arrivals), "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (i *Ingester) commitOnce(ctx context.Context, b *batch) error {
	if b.key == 0 {
		k, err := newKey()
		if err != nil {
			return err
		}
		b.key = k
	}
	if b.unsure {
		// All of the batch's rows are there or none: it is one transaction.
		ids, err := i.st.BatchIDs(ctx, b.key, earliest(b.rows))
		if err != nil {
			return fmt.Errorf("ask whether the failed commit happened: %w", err)
		}
		b.unsure = false
		if len(ids) > 0 {
			i.log.Warn("a commit reported as failed had happened; its messages are acknowledged, not stored again",
				"messages", len(b.rows))
			if len(ids) != len(b.rows) {
				// Only retention or a key collision (odds 2^-64) gets here.
				return fmt.Errorf("batch %x: %d rows committed, %d sent", uint64(b.key), len(ids), len(b.rows))
			}
			for k := range b.rows {
				b.rows[k].ID = ids[k]
			}
			i.done(b)
			return nil
		}
	}
	if err := i.prepare(ctx, b); err != nil {
		return err
	}
	c := i.commitOf(b)
	start := time.Now()
	if err := i.st.Commit(ctx, c); err != nil {
		// Even a commit into a store found replaced may have landed
		// in the new one (a connection that opened the path again).
		b.unsure = len(b.rows) > 0
		return err
	}
	i.m.CommitSeconds.Observe(time.Since(start).Seconds())
	i.done(b)
	return nil
}

// earliest is the first arrival time among rows: every row of their batch
// was received since.
func earliest(rows []store.Message) time.Time {
	var t time.Time
	for k, m := range rows {
		if k == 0 || m.ReceivedAt.Before(t) {
			t = m.ReceivedAt
		}
	}
	return t
}

// newKey draws a batch key: 64 random bits, never 0 (rows without a key).
func newKey() (int64, error) {
	var buf [8]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return 0, fmt.Errorf("draw batch key: %w", err)
	}
	k := int64(binary.LittleEndian.Uint64(buf[:]))
	if k == 0 {
		k = 1
	}
	return k, nil
}

// prepare judges every arrival of b against the ledger and sets b's rows.
// It changes nothing but b (and facts the ledger learns for good, such as
// a new broker session), so that an attempt that fails can be made again.
func (i *Ingester) prepare(ctx context.Context, b *batch) error {
	b.view = i.ledger.view(len(b.arrivals))
	b.judged = make([]judgement, len(b.arrivals))
	b.rows = make([]store.Message, 0, len(b.arrivals))
	for k, a := range b.arrivals {
		j, err := b.view.judge(ctx, i.st, i.cfg.ClientID, a)
		if err != nil {
			return err
		}
		b.judged[k] = j
		a.row = -1
		if j.v == redundant {
			continue
		}
		m := a.msg
		m.BatchKey = b.key
		m.Duplicate = j.v == ambiguous
		a.row = len(b.rows)
		b.rows = append(b.rows, m)
	}
	return nil
}

// commitOf is the store.Commit of b: its rows and the session records that
// go with them.
func (i *Ingester) commitOf(b *batch) *store.Commit {
	c := &store.Commit{Messages: b.rows, ClientID: i.cfg.ClientID, Released: b.released(),
		Deliveries: make([]store.CommitDelivery, 0, len(b.judged))}
	last := make(map[uint16]int, len(b.judged)) // packet id: index in c.Deliveries
	add := func(r *record) {
		d := store.CommitDelivery{Delivery: r.Delivery, Message: -1}
		if r.a != nil {
			d.Message = r.a.row
		}
		if k, ok := last[d.PacketID]; ok {
			c.Deliveries[k] = d
			return
		}
		last[d.PacketID] = len(c.Deliveries)
		c.Deliveries = append(c.Deliveries, d)
	}
	if i.resetStore.Load() {
		// The store starts again from nothing: all the ledger knows.
		for _, r := range i.ledger.ids {
			if r != nil && r.Conn >= i.ledger.epoch {
				add(r)
			}
		}
		c.Acked = maps(i.ledger.acked)
		c.Attempted, c.Connected = i.conns.Load(), i.ledger.lastConn
		c.Epoch, c.Uncertain = i.ledger.epoch, i.ledger.uncertain
	} else if len(i.unsaved) > 0 {
		c.Acked = maps(i.unsaved)
	}
	for _, j := range b.judged {
		if j.rec != nil {
			add(j.rec)
		}
	}
	for conn, seq := range b.view.acked {
		if c.Acked == nil {
			c.Acked = map[int64]int64{}
		}
		c.Acked[conn] = max(c.Acked[conn], seq)
	}
	return c
}

func maps(m map[int64]int64) map[int64]int64 {
	out := make(map[int64]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// done takes b as committed: the ledger learns it, the arrivals are
// acknowledged in order, the held PUBCOMPs go, and the rows are handed on.
func (i *Ingester) done(b *batch) {
	i.resetStore.Store(false)
	clear(i.unsaved)
	i.unsavedSince = time.Time{}
	for _, a := range b.arrivals {
		if a.row >= 0 {
			a.msg.ID = b.rows[a.row].ID
		}
	}
	for _, j := range b.judged {
		if j.rec != nil && j.rec.a != nil {
			j.rec.MessageID = j.rec.a.msg.ID
			j.rec.a = nil
		}
	}
	if b.view != nil {
		b.view.apply()
		stored, recs := make([]*record, 0, len(b.judged)), make([]*record, 0, len(b.judged))
		for _, j := range b.judged {
			if j.rec != nil {
				recs = append(recs, j.rec)
				if j.v != redundant {
					stored = append(stored, j.rec)
				}
			}
		}
		i.ledger.keepOpen(stored, time.Now())
		defer i.ledger.remember(recs) // once the acknowledgements below are marked
	}
	for _, id := range b.released() {
		if r := i.ledger.ids[id]; r != nil && r.QoS == 2 {
			r.Pending = false
		}
	}
	for w, ids := range b.releases {
		w.release(ids)
	}

	// Every arrival's line is out before any acknowledgement.
	i.flushArrivals()
	var dropped, dups int
	acks := ackBatch{arrivals: make([]*arrival, 0, len(b.arrivals)), per: map[*wire]int{}}
	debug := i.log.Enabled(context.Background(), slog.LevelDebug)
	for k, a := range b.arrivals {
		j := b.judged[k]
		switch j.v {
		case redundant:
			dropped++
		case ambiguous:
			dups++
		}
		if debug && (a.dup || j.v != fresh) {
			i.log.Debug("redelivery judged", "packet_id", a.msg.PacketID, "qos", a.msg.QoS, "dup", a.dup,
				"connection", a.wire.num, "seq", a.seq, "verdict", j.v.String(), "id", a.msg.ID)
		}
		if a.msg.QoS == 0 {
			continue
		}
		if a.wire.closed() {
			// Paho would drop it; the broker sends the message again on
			// the next connection, and the ledger knows it was never
			// acknowledged.
			continue
		}
		// Handed on now, sent by ackLoop (unless the connection ends
		// first): to the ledger it may be out from here on, which never
		// takes a redelivery for less than it is.
		j.rec.ackSent = true
		acks.arrivals = append(acks.arrivals, a)
		acks.per[a.wire]++
	}
	if len(acks.arrivals) > 0 {
		i.acksBusy.Add(1)
		i.acks <- acks
	}

	var held int64
	for _, a := range b.arrivals {
		held += a.held
	}
	i.room.Release(held)

	i.m.BatchSize.Observe(float64(len(b.rows)))
	i.m.Stored.Add(float64(len(b.rows)))
	i.m.DuplicatesDropped.Add(float64(dropped))
	i.m.DuplicatesStored.Add(float64(dups))
	if dropped > 0 {
		i.log.Info("redeliveries already stored were acknowledged, not stored again", "count", dropped)
	}
	if dups > 0 {
		i.log.Info("redeliveries that cannot be told from new messages were stored with duplicate: true", "count", dups)
	}
	if i.cfg.Committed != nil && len(b.rows) > 0 {
		i.cfg.Committed(b.rows)
	}
}

// ackBatch is the acknowledgements of one commit, in the order of the
// arrivals, and how many there are for each connection.
type ackBatch struct {
	arrivals []*arrival
	per      map[*wire]int
}

// ackLoop gives each commit's acknowledgements to Paho, in order, while
// the writer goes on: Paho takes them one at a time from its writer
// goroutine, which the writer waited for (docs/performance.md).
func (i *Ingester) ackLoop() {
	for b := range i.acks {
		for w, n := range b.per {
			// They leave in one write(2) once Paho has written the last.
			w.expect(n)
		}
		for _, a := range b.arrivals {
			if a.wire.closed() {
				continue
			}
			a.ack.Ack()
			a.wire.acked(a.seq)
		}
		for w := range b.per {
			w.barrier()
		}
		i.acksBusy.Done()
	}
}

// shutdown commits and acknowledges pending (the batch write was retrying,
// if any) and what is queued, then says offline and disconnects.
func (i *Ingester) shutdown(pending *batch) error {
	i.stop()
	ctx, cancel := context.WithTimeout(context.Background(), i.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	for b := pending; ; b = nil {
		if b == nil {
			b = &batch{arrivals: i.collect(nil)}
			b.releases = i.takeReleases(b.arrivals)
			if len(b.arrivals) == 0 && len(b.releases) == 0 {
				break
			}
		}
		if !i.commit(ctx, b) {
			errs = append(errs, fmt.Errorf("shutdown: %d queued messages not committed (the broker will redeliver them)", len(b.arrivals)+len(i.queue)))
			break
		}
	}
	i.flushArrivals() // of arrivals refused or left uncommitted
	i.acksBusy.Wait()
	close(i.acks)
	if i.client.IsConnectionOpen() {
		if err := i.publishStatus("offline", 2*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	i.client.Disconnect(250)
	i.log.Info("disconnected from broker")
	return errors.Join(errs...)
}
