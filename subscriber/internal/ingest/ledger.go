package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// A verdict is what the writer does with an arrival.
type verdict int

const (
	fresh     verdict = iota // a new message: store it
	redundant                // the broker sent a stored message again: acknowledge only
	ambiguous                // MQTT 3.1.1 cannot tell: store it with duplicate: true
)

func (v verdict) String() string {
	return [...]string{"fresh", "redundant", "ambiguous"}[v]
}

// record is what the writer knows of the latest delivery of one packet id
// in the broker session.
//
// A busy session holds one for each of the 65535 packet ids (see
// remember): the fields are ordered, and the time is a duration rather
// than a time.Time, so that a record takes 80 bytes, not 96.
type record struct {
	store.Delivery
	a         *arrival      // the arrival itself, until its row is committed
	openSince time.Duration // when it joined the ledger's open list (since clockStart)
	live      bool          // it arrived in this process (else it was loaded)
	ackSent   bool          // its acknowledgement was handed on to be sent (ackLoop)
	matched   bool          // a redelivery under another packet id was taken for it
}

// clockStart is what openSince counts from: the monotonic clock, not the
// wall clock, which may jump.
var clockStart = time.Now()

// byID holds the latest record of each packet id: an array rather than a
// map, as a busy session has a record for nearly every id (512 KiB; the
// map took 2 MiB and more).
type byID [1 << 16]*record

// count returns how many packet ids have a record.
func (b *byID) count() int {
	n := 0
	for _, r := range b {
		if r != nil {
			n++
		}
	}
	return n
}

// ledger is the writer's knowledge of the broker session: the latest
// delivery of every packet id and how far each connection's
// acknowledgements are known to have reached the broker. Only the writer
// goroutine uses it. See docs/delivery.md for why each verdict is right.
type ledger struct {
	epoch     int64 // records of earlier connections are void
	uncertain int64 // records of earlier connections may belong to a session the broker dropped
	lastConn  int64 // the newest connection an arrival came on
	ids       *byID
	acked     map[int64]int64 // connection: highest seq whose acknowledgement the broker processed

	// open lists, oldest first, the deliveries of this process stored in
	// the last openFor, and openBy indexes them by content hash: a broker
	// that numbers packet ids afresh after its own restart (NATS does)
	// sends them again under other ids, even acknowledged ones whose
	// acknowledgement it had not yet saved. See matchOpen.
	open   []*record
	openBy map[uint64][]*record

	recent []*record // the records of the last commits, oldest first (see remember)

	// unconfirmed holds, for a packet id whose record left memory with
	// its acknowledgement sent but not known to be processed, where that
	// acknowledgement was: what judge learns from when the broker gives
	// the id to a new message. Made on first use.
	unconfirmed *[1 << 16]ackMark
}

// ackMark places an acknowledgement: its connection and the seq of the
// arrival it acknowledged.
type ackMark struct{ conn, seq int64 }

// Bounds of the open list: a redelivery comes at the next connection or
// after the broker's acknowledgement timeout (NATS: ack_wait, 30 s by
// default), well within openFor, and what a broker sends again after its
// restart is what it had in flight (NATS: max_ack_pending, 1024 by
// default), well within maxOpen.
const (
	openFor = 2 * time.Minute
	maxOpen = 8192
)

// newLedger starts from what the store keeps of the session. Only the
// deliveries that may still come again unsettled are kept in memory (see
// keepRecords); the others are read from the store when a redelivery asks.
func newLedger(s store.Session) *ledger {
	l := &ledger{epoch: s.Epoch, uncertain: s.Uncertain, ids: new(byID), acked: map[int64]int64{},
		openBy: map[uint64][]*record{}}
	for conn, seq := range s.Acked {
		l.acked[conn] = seq
	}
	for _, d := range s.Deliveries {
		if r := (&record{Delivery: d}); d.Conn >= l.epoch && !l.finished(r) {
			l.ids[d.PacketID] = r
		}
	}
	return l
}

// finished reports whether the broker is done with r's delivery: QoS 2
// released, or QoS 1 with its acknowledgement processed. Only such records
// leave memory.
func (l *ledger) finished(r *record) bool {
	if r.QoS == 2 {
		return !r.Pending
	}
	return l.acked[r.Conn] >= r.Seq
}

// keepRecords is how many recent records stay in memory whatever they are;
// older ones stay only while the store's copy would not do (see
// leavesMemory). A redelivery whose record left reads it from the store.
const keepRecords = 4096

// remember keeps recs (the records of a commit, in order) and lets the
// oldest go, in order, as leavesMemory allows: one that must stay (a QoS 2
// message not yet released, an acknowledgement never sent) holds the ones
// after it.
func (l *ledger) remember(recs []*record) {
	l.recent = append(l.recent, recs...)
	k := 0
	for ; len(l.recent)-k > keepRecords; k++ {
		r := l.recent[k]
		if l.ids[r.PacketID] == r {
			if !l.leavesMemory(r) {
				break
			}
			l.ids[r.PacketID] = nil
			l.markUnconfirmed(r)
		}
		l.recent[k] = nil
	}
	l.recent = l.recent[k:]
}

// leavesMemory reports whether the store's copy of r, committed with its
// message, judges a redelivery as r does: when r is finished, and when it
// is a QoS 1 delivery whose acknowledgement was sent, confirmed or not. A
// record read back from the store is neither live nor ackSent, which
// verdict asks of unacknowledged deliveries only; and a first attempt
// (no DUP) is fresh whatever the record, but for QoS 2 ids not yet
// released, which stay.
//
// Without the second case a drain of a long backlog kept a record for
// every packet id (65,535 of 80 bytes): Mosquitto answered 3 or 4 of the
// about 200 PINGREQs that confirm acknowledgements during a drain of
// 200,000 messages, so confirmations came from packet ids used again,
// 65,535 arrivals late.
func (l *ledger) leavesMemory(r *record) bool {
	return l.finished(r) || r.QoS == 1 && r.ackSent
}

// markUnconfirmed keeps where the acknowledgement of r, leaving memory,
// was, if the broker has not confirmed it: see ackOfID.
func (l *ledger) markUnconfirmed(r *record) {
	if l.finished(r) {
		if l.unconfirmed != nil {
			l.unconfirmed[r.PacketID] = ackMark{}
		}
		return
	}
	if l.unconfirmed == nil {
		l.unconfirmed = new([1 << 16]ackMark)
	}
	l.unconfirmed[r.PacketID] = ackMark{conn: r.Conn, seq: r.Seq}
}

// ackOfID returns where the acknowledgement of the latest delivery of id
// was, when its record left memory unconfirmed (conn 0: it did not).
func (l *ledger) ackOfID(id uint16) ackMark {
	if l.unconfirmed == nil {
		return ackMark{}
	}
	return l.unconfirmed[id]
}

// contentHash identifies a message's content: its topic and payload.
func contentHash(topic string, payload []byte) uint64 {
	d := xxhash.New()
	var n [binary.MaxVarintLen64]byte
	_, _ = d.Write(n[:binary.PutUvarint(n[:], uint64(len(topic)))])
	_, _ = d.WriteString(topic)
	_, _ = d.Write(payload)
	return d.Sum64()
}

// judgement is the verdict on one arrival and the state it leaves.
type judgement struct {
	v   verdict
	rec *record // the packet id's record after this arrival (nil for QoS 0)
}

// view is the ledger as a batch being prepared sees it: the ledger with
// the batch's own changes on top, which become the ledger's only once the
// batch is committed.
type view struct {
	l       *ledger
	ids     map[uint16]*record
	acked   map[int64]int64
	matched map[*record]bool
}

// view starts the view of a batch of n arrivals.
func (l *ledger) view(n int) *view {
	return &view{l: l, ids: make(map[uint16]*record, n), acked: map[int64]int64{}, matched: map[*record]bool{}}
}

// settled reports whether r can no longer be taken for a redelivery under
// another packet id: one was taken for it already, or it is too old.
// Nothing else settles it: NATS, restarted, sends again even messages
// whose acknowledgement (QoS 2: whose PUBCOMP) it had processed.
func (l *ledger) settled(r *record, now time.Time) bool {
	return r.matched || now.Sub(clockStart)-r.openSince > openFor
}

// keepOpen adds the committed deliveries of this process to the open list
// and drops the old ones from its head.
func (l *ledger) keepOpen(recs []*record, now time.Time) {
	since := now.Sub(clockStart)
	for _, r := range recs {
		r.openSince = since
		l.open = append(l.open, r)
		l.openBy[r.Hash] = append(l.openBy[r.Hash], r)
	}
	k := 0
	for k < len(l.open) && (since-l.open[k].openSince > openFor || len(l.open)-k > maxOpen) {
		r := l.open[k]
		if list := l.openBy[r.Hash]; len(list) > 0 && list[0] == r {
			if len(list) == 1 {
				delete(l.openBy, r.Hash)
			} else {
				l.openBy[r.Hash] = list[1:]
			}
		}
		l.open[k] = nil
		k++
	}
	l.open = l.open[k:]
}

// record returns the record of packet id id in this broker session, or
// nil. Only for a redelivery (dup) is a record not in memory read from the
// store: a first attempt is judged alike without the ones that left memory
// (see leavesMemory).
func (v *view) record(ctx context.Context, st Reader, clientID string, id uint16, dup bool) (*record, error) {
	r, ok := v.ids[id]
	if !ok {
		r = v.l.ids[id]
	}
	if r == nil && dup {
		d, err := st.Delivery(ctx, clientID, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("read the record of packet id %d: %w", id, err)
		default:
			r = &record{Delivery: d}
		}
	}
	if r != nil && r.Conn < v.l.epoch {
		return nil, nil
	}
	return r, nil
}

func (v *view) ackedSeq(conn int64) int64 {
	return max(v.l.acked[conn], v.acked[conn])
}

// apply makes the batch's changes the ledger's.
func (v *view) apply() {
	for id, r := range v.ids {
		v.l.ids[id] = r
	}
	for conn, seq := range v.acked {
		v.l.acked[conn] = max(v.l.acked[conn], seq)
	}
	for r := range v.matched {
		r.matched = true
	}
}

// Reader reads what the ledger does not keep in memory: stored messages,
// to compare contents exactly, and records of finished deliveries.
type Reader interface {
	Get(ctx context.Context, id int64) (store.Message, error)
	Delivery(ctx context.Context, clientID string, packetID uint16) (store.Delivery, error)
}

// judge decides about a, the next arrival of the batch, and records it in
// the view.
func (v *view) judge(ctx context.Context, st Reader, clientID string, a *arrival) (judgement, error) {
	if a.msg.QoS == 0 {
		return judgement{v: fresh}, nil
	}
	conn := a.wire.num
	if conn > v.l.lastConn {
		v.l.lastConn = conn
		if !a.wire.present.Load() {
			// A new broker session: what came before is void.
			v.l.epoch = conn
			clear(v.ids)
		}
	}
	r, err := v.record(ctx, st, clientID, a.msg.PacketID, a.dup)
	if err != nil {
		return judgement{}, err
	}
	verdict, err := v.verdict(ctx, st, a, r)
	if err == nil && verdict == fresh && a.dup && r != nil {
		// A redelivery under an id whose last delivery was another
		// message, or one the broker had finished with: see matchOpen.
		verdict, err = v.matchOpen(ctx, st, a)
	}
	if err != nil {
		return judgement{}, err
	}
	if !a.dup {
		// The broker gave the id of an acknowledged delivery of this
		// connection to a new message: it processed that acknowledgement,
		// and the ones before it.
		if r != nil && r.Conn == conn && r.ackSent {
			v.acked[conn] = max(v.acked[conn], r.Seq)
		} else if m := v.l.ackOfID(a.msg.PacketID); r == nil && m.conn == conn {
			v.acked[conn] = max(v.acked[conn], m.seq)
		}
	}
	next := &record{live: true, a: a, Delivery: store.Delivery{
		PacketID: a.msg.PacketID, QoS: a.msg.QoS, Conn: conn, Seq: a.seq,
		Hash: a.hash, Pending: a.msg.QoS == 2,
	}}
	if verdict == redundant {
		// The same message again, acknowledged on this connection now.
		next.MessageID, next.Hash, next.Pending, next.a = r.MessageID, r.Hash, r.Pending, r.a
	}
	v.ids[a.msg.PacketID] = next
	return judgement{v: verdict, rec: next}, nil
}

// verdict applies the rules of docs/delivery.md to arrival a, whose packet
// id's record is r (nil: none in this broker session).
func (v *view) verdict(ctx context.Context, st Reader, a *arrival, r *record) (verdict, error) {
	if r == nil {
		return fresh, nil
	}
	pendingQoS2 := a.msg.QoS == 2 && r.QoS == 2 && r.Pending
	switch {
	case pendingQoS2 && !a.dup:
		// Until the PUBREL is committed a PUBLISH with this id is the
		// same message (section 4.3.3), but a first attempt cannot be a
		// resend: only a broker that reuses a held id sends it (NATS,
		// after its restart, does). The same content cannot tell.
		return v.sameContent(ctx, st, a, r, ambiguous)
	case pendingQoS2:
		// Until the PUBREL is committed, a PUBLISH with this id is the
		// same message again (section 4.3.3).
	case !a.dup:
		// A first attempt (section 3.3.1.1): a new message.
		return fresh, nil
	case r.QoS != a.msg.QoS:
		// A resend keeps its QoS.
		return fresh, nil
	case r.QoS == 2:
		// A released QoS 2 id is free again (4.3.3), so this is a new
		// message whose first delivery was lost, unless the broker sent
		// the PUBLISH again although it had the PUBREC: Mosquitto 2.0
		// does after two reconnects in a row (a message waiting to resend
		// its PUBREL is reset to PUBLISH). The same content cannot tell.
		return v.sameContent(ctx, st, a, r, ambiguous)
	case r.Conn == a.wire.num:
		// Resent on the connection that brought it (a broker that
		// redelivers after a timeout): no new message can have taken
		// the id on this connection without arriving first.
		return v.sameContent(ctx, st, a, r, redundant)
	}
	if r.Conn < v.l.uncertain {
		// The broker may have dropped that session without our knowing.
		return v.sameContent(ctx, st, a, r, ambiguous)
	}
	if pendingQoS2 {
		return v.sameContent(ctx, st, a, r, redundant)
	}
	if r.live && !r.ackSent {
		// Its acknowledgement never left: the broker cannot have given
		// the id to another message.
		return v.sameContent(ctx, st, a, r, redundant)
	}
	if v.ackedSeq(r.Conn) >= r.Seq {
		// The broker processed its acknowledgement: the id was free, and
		// this is another message.
		return fresh, nil
	}
	// Its acknowledgement may or may not have reached the broker before
	// the connection ended: a redelivery of it, or a new message that
	// took the free id and whose first delivery was lost. Section 4.3.2
	// gives no way to tell.
	return v.sameContent(ctx, st, a, r, ambiguous)
}

// matchOpen looks, for a redelivery that its packet id does not explain,
// for a recent delivery of an earlier connection with the same content: a
// broker that numbers packet ids afresh after a restart of its own (NATS
// does, against section 4.4) sends it again under another id on the next
// connection. A broker that keeps the rules sends a DUP PUBLISH only for a
// message whose acknowledgement it did not get, under its first packet id,
// which the ledger has judged already; so this costs such a broker nothing
// but when a message it sent before a connection ended never arrived and
// an identical one had been stored. Nothing
// but the content ties them, and identical messages are distinct messages,
// so a match is stored flagged, never dropped; each delivery is taken at
// most once.
func (v *view) matchOpen(ctx context.Context, st Reader, a *arrival) (verdict, error) {
	now := time.Now()
	for _, r := range v.l.openBy[a.hash] {
		// The packet id's own record has been judged already.
		if r.PacketID == a.msg.PacketID || r.Conn >= a.wire.num || r.QoS != a.msg.QoS || v.matched[r] || v.l.settled(r, now) {
			continue
		}
		verdict, err := v.sameContent(ctx, st, a, r, ambiguous)
		if err != nil || verdict == fresh {
			return verdict, err
		}
		v.matched[r] = true
		return ambiguous, nil
	}
	return fresh, nil
}

// sameContent returns v when a has the content of r's message, else fresh:
// a redelivery carries the topic and payload it had.
func (v *view) sameContent(ctx context.Context, st Reader, a *arrival, r *record, verdict verdict) (verdict, error) {
	if r.Hash != 0 && r.Hash != a.hash {
		return fresh, nil
	}
	if r.a != nil {
		if r.a.msg.Topic == a.msg.Topic && bytes.Equal(r.a.msg.Payload, a.msg.Payload) {
			return verdict, nil
		}
		return fresh, nil
	}
	if r.MessageID == 0 {
		return fresh, nil
	}
	m, err := st.Get(ctx, r.MessageID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Gone (retention, a store set up again): not stored any more.
		return fresh, nil
	case err != nil:
		return fresh, fmt.Errorf("read message %d to compare with a redelivery: %w", r.MessageID, err)
	}
	if m.Topic == a.msg.Topic && bytes.Equal(m.Payload, a.msg.Payload) {
		return verdict, nil
	}
	return fresh, nil
}
