package ingest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// Redelivery windows, in QoS 1 and 2 messages stored for this client after
// the candidate row. Mosquitto allocates packet ids sequentially (1..65535),
// so an id seen fewer than idReuseSafe messages ago cannot have been reused,
// and one seen 65535 or more messages ago certainly was.
const (
	idReuseSafe    = 32768
	idReuseCertain = 65535
)

type verdict int

const (
	fresh     verdict = iota // store it
	redundant                // already stored: acknowledge only
	ambiguous                // store it with duplicate: true
)

// batch is what one transaction stores. Its key goes with every row so
// that, after a commit whose outcome was lost (the connection dropped
// during COMMIT), the writer can ask the store whether it happened rather
// than store the batch twice.
type batch struct {
	key      int64 // drawn at the first attempt, kept across retries
	arrivals []arrival

	// What the last attempt that reached Insert sent, and what it found.
	rows          []store.Message
	dropped, dups int
	replay        replay // the writer's replay state after these rows
	unsure        bool   // that Insert failed: it may have committed all the same
}

// replay follows the start of a connection. A broker restored from an older
// snapshot sends again, as new messages (no DUP flag, the same packet ids),
// deliveries we committed and acknowledged after the snapshot was taken.
// Until the first new-looking arrival that is not such a replay, each one
// is looked up, so steady state costs no lookups.
type replay struct {
	conn    uint64 // the connection the arrivals came on
	ended   bool
	checked int // arrivals looked up
	flagged int // of which matched a recent row: stored with duplicate: true
}

// write commits batches until ctx ends and returns the one it could not
// commit, if any.
func (i *Ingester) write(ctx context.Context) *batch {
	for {
		select {
		case <-ctx.Done():
			return nil
		case a := <-i.queue:
			b := &batch{arrivals: i.collect([]arrival{a})}
			if !i.commit(ctx, b) {
				return b
			}
		}
	}
}

// collect adds whatever is queued, up to MaxBatch.
func (i *Ingester) collect(arrivals []arrival) []arrival {
	for len(arrivals) < i.cfg.MaxBatch {
		select {
		case a := <-i.queue:
			arrivals = append(arrivals, a)
		default:
			i.m.QueueDepth.Set(float64(len(i.queue)))
			return arrivals
		}
	}
	i.m.QueueDepth.Set(float64(len(i.queue)))
	return arrivals
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
		i.m.StoreErrors.Inc()
		i.storeErr.Store(&err)
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
		if len(ids) > 0 {
			i.log.Warn("a commit reported as failed had happened; its messages are acknowledged, not stored again",
				"messages", len(b.rows))
			whole := len(ids) == len(b.rows)
			if whole {
				for k := range b.rows {
					b.rows[k].ID = ids[k]
				}
			} else {
				// Only retention or a key collision (odds 2^-64) gets here.
				i.log.Error("a committed batch has another number of rows than was sent",
					"batch_key", uint64(b.key), "sent", len(b.rows), "found", len(ids))
			}
			b.unsure = false
			i.done(b, whole)
			return nil
		}
		b.unsure = false
	}
	if err := i.prepare(ctx, b); err != nil {
		return err
	}
	start := time.Now()
	if err := i.st.Insert(ctx, b.rows); err != nil {
		b.unsure = len(b.rows) > 0
		return err
	}
	i.m.CommitSeconds.Observe(time.Since(start).Seconds())
	i.done(b, true)
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

// prepare decides, from the writer's replay state and the store, which
// arrivals of b are stored and how, and sets b's rows. It changes nothing
// but b, so an attempt that fails can be made again.
func (i *Ingester) prepare(ctx context.Context, b *batch) error {
	rows := make([]store.Message, 0, len(b.arrivals))
	var dropped, dups int
	r := i.replay
	for k, a := range b.arrivals {
		if a.conn != r.conn {
			r = replay{conn: a.conn}
		}
		m := a.msg
		m.BatchKey = b.key
		v := fresh
		var err error
		switch {
		case m.QoS == 0:
		case a.dup:
			v, err = i.classify(ctx, b.arrivals[:k], a)
		case !r.ended && !m.Retained:
			// Retained arrivals are left out: a resubscription sends
			// them again with new packet ids, anywhere in the replay.
			v, err = i.classifyReplay(ctx, b.arrivals[:k], a)
			r.checked++
			if v == ambiguous {
				r.flagged++
			} else {
				r.ended = true
			}
		}
		if err != nil {
			return err
		}
		switch v {
		case redundant:
			dropped++
			continue
		case ambiguous:
			m.Duplicate = true
			dups++
		}
		rows = append(rows, m)
	}
	b.rows, b.dropped, b.dups, b.replay = rows, dropped, dups, r
	return nil
}

// done acknowledges b once its rows are committed, counts them, and hands
// them on (when their ids are known).
func (i *Ingester) done(b *batch, withIDs bool) {
	i.m.BatchSize.Observe(float64(len(b.rows)))
	i.m.Stored.Add(float64(len(b.rows)))
	i.m.DuplicatesDropped.Add(float64(b.dropped))
	i.m.DuplicatesStored.Add(float64(b.dups))
	for _, a := range b.arrivals {
		a.ack()
	}
	if b.dropped > 0 {
		i.log.Info("redeliveries already stored were acknowledged, not stored again", "count", b.dropped)
	}
	if r := b.replay; r.ended && (r.conn != i.replay.conn || !i.replay.ended) {
		level := slog.LevelDebug
		if r.flagged > 0 {
			level = slog.LevelInfo
		}
		i.log.Log(context.Background(), level, "replay check ended",
			"checked", r.checked, "stored_as_duplicate", r.flagged)
	}
	i.replay = b.replay
	if i.cfg.Committed != nil && withIDs && len(b.rows) > 0 {
		i.cfg.Committed(b.rows)
	}
}

// classify decides what to do with an arrival carrying the DUP flag: the
// broker resends unacknowledged messages with the same packet id after a
// reconnect, including ones we committed whose acknowledgement was lost.
func (i *Ingester) classify(ctx context.Context, earlier []arrival, a arrival) (verdict, error) {
	for k := len(earlier) - 1; k >= 0; k-- {
		if e := earlier[k].msg; e.PacketID == a.msg.PacketID && e.ClientID == a.msg.ClientID {
			// Its first delivery is in this very batch.
			if same(e, a.msg) {
				return redundant, nil
			}
			return fresh, nil
		}
	}
	r, err := i.st.LatestByPacketID(ctx, a.msg.ClientID, a.msg.PacketID, idReuseCertain)
	if errors.Is(err, store.ErrNotFound) {
		return fresh, nil
	}
	if err != nil {
		return fresh, fmt.Errorf("look up redelivery: %w", err)
	}
	switch {
	case !same(r.Message, a.msg):
		return fresh, nil // the first delivery never reached the store
	case r.Later < idReuseSafe:
		return redundant, nil
	case r.Later < idReuseCertain:
		return ambiguous, nil
	default:
		return fresh, nil // the packet id has been reused since
	}
}

// classifyReplay decides about a QoS 1 or 2 arrival without the DUP flag
// at the start of a connection: one identical to a recent row with its
// packet id, which the broker cannot have reused yet, is most likely a
// replay by a broker that lost its latest state, but may be a new message
// identical to the last one; it is stored, marked duplicate (ambiguous).
func (i *Ingester) classifyReplay(ctx context.Context, earlier []arrival, a arrival) (verdict, error) {
	for k := len(earlier) - 1; k >= 0; k-- {
		if e := earlier[k].msg; e.PacketID == a.msg.PacketID && e.ClientID == a.msg.ClientID {
			if same(e, a.msg) {
				return ambiguous, nil
			}
			return fresh, nil
		}
	}
	r, err := i.st.LatestByPacketID(ctx, a.msg.ClientID, a.msg.PacketID, idReuseSafe)
	if errors.Is(err, store.ErrNotFound) {
		return fresh, nil
	}
	if err != nil {
		return fresh, fmt.Errorf("look up replay: %w", err)
	}
	if same(r.Message, a.msg) && r.Later < idReuseSafe {
		return ambiguous, nil
	}
	return fresh, nil
}

func same(a, b store.Message) bool {
	return a.Topic == b.Topic && a.QoS == b.QoS && bytes.Equal(a.Payload, b.Payload)
}

// shutdown commits and acknowledges pending (the batch write was retrying,
// if any) and what is queued, then says offline and disconnects.
func (i *Ingester) shutdown(pending *batch) error {
	close(i.stopping)
	ctx, cancel := context.WithTimeout(context.Background(), i.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	for b := pending; ; b = nil {
		if b == nil {
			arrivals := i.collect(nil)
			if len(arrivals) == 0 {
				break
			}
			b = &batch{arrivals: arrivals}
		}
		if !i.commit(ctx, b) {
			errs = append(errs, fmt.Errorf("shutdown: %d queued messages not committed (the broker will redeliver them)", len(b.arrivals)+len(i.queue)))
			break
		}
	}
	if i.client.IsConnectionOpen() {
		if err := i.publishStatus("offline", 2*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	i.client.Disconnect(250)
	i.log.Info("disconnected from broker")
	return errors.Join(errs...)
}
