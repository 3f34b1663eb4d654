package ingest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sync/semaphore"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/logbuf"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/metrics"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/sqlite"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

func TestLogPayload(t *testing.T) {
	tests := []struct {
		payload   string
		n         int
		want, enc string
	}{
		{"21.5", 256, "21.5", "text"},
		{"abcdef", 3, "abc", "text"},
		{"héllo", 2, "h", "text"}, // not cut inside é
		{"héllo", 3, "hé", "text"},
		{"", 10, "", "text"},
		{"abc", 0, "", "text"},
		{"\x00\x01\xff\xfe", 3, "AAH/", "base64"},
		{"\xff", 256, "/w==", "base64"},
	}
	for _, tt := range tests {
		got, enc := logPayload([]byte(tt.payload), tt.n)
		if got != tt.want || enc != tt.enc {
			t.Errorf("logPayload(%q, %d) = %q %s, want %q %s", tt.payload, tt.n, got, enc, tt.want, tt.enc)
		}
	}
}

// flakyStore is a real SQLite store whose commits can be made to fail:
// before anything is written (failing, failNext), after the commit, as
// when the connection drops during COMMIT (loseNext), or as a store that
// was set up again (resetNext).
type flakyStore struct {
	*sqlite.Store
	path      string
	failing   atomic.Bool
	failNext  atomic.Int32
	loseNext  atomic.Int32
	resetNext atomic.Int32
}

func (f *flakyStore) Commit(ctx context.Context, c *store.Commit) error {
	if f.failing.Load() || f.failNext.Add(-1) >= 0 {
		return errors.New("disk on fire")
	}
	if f.resetNext.Add(-1) >= 0 {
		return store.ErrReset
	}
	if err := f.Store.Commit(ctx, c); err != nil {
		return err
	}
	if len(c.Messages) > 0 && f.loseNext.Add(-1) >= 0 {
		return errors.New("connection lost during commit")
	}
	return nil
}

func (f *flakyStore) BatchIDs(ctx context.Context, key int64, since time.Time) ([]int64, error) {
	if f.failing.Load() {
		return nil, errors.New("disk on fire")
	}
	return f.Store.BatchIDs(ctx, key, since)
}

func newTestIngester(t *testing.T) (*Ingester, *flakyStore, *metrics.Metrics) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.db")
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	fs := &flakyStore{Store: st, path: path}
	m := metrics.New(prometheus.NewRegistry())
	i := New(slog.New(slog.NewTextHandler(io.Discard, nil)), Config{
		Brokers: []string{"tcp://127.0.0.1:1"}, ClientID: "sub", QoS: 1, Filters: []string{"#"}, StatusTopic: "s",
	}, fs, m)
	if err := i.load(context.Background()); err != nil {
		t.Fatalf("load: %v", err)
	}
	return i, fs, m
}

// peer is the broker's end of a test wire: it records what the wire
// writes and can answer PINGREQs.
type peer struct {
	conn net.Conn
	mu   sync.Mutex
	got  []byte
}

func (p *peer) bytes() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.got...)
}

// testWire is a wire numbered num over an in-memory connection whose
// other end is returned; present is its CONNACK's session-present flag.
func testWire(t *testing.T, i *Ingester, num int64, present bool) (*wire, *peer) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	wake := func() {}
	if i != nil {
		wake = i.wake
	}
	w := newWire(a, num, func(*wire, byte, bool) error { return nil }, wake)
	w.present.Store(present)
	p := &peer{conn: b}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := b.Read(buf)
			p.mu.Lock()
			p.got = append(p.got, buf[:n]...)
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	if i != nil {
		i.mu.Lock()
		i.wires[num] = w
		i.mu.Unlock()
		i.current.Store(w)
		i.conns.Store(max(i.conns.Load(), num))
	}
	return w, p
}

type acks struct{ n atomic.Int32 }

// ackFunc is an acknowledgement made by a function.
type ackFunc func()

func (f ackFunc) Ack() { f() }

// arrival makes a QoS 1 arrival on w with its next seq.
func (c *acks) arrival(w *wire, topic, payload string, packetID uint16, dup bool) *arrival {
	return &arrival{
		msg: store.Message{Topic: topic, Payload: []byte(payload), QoS: 1, ReceivedAt: time.Now(),
			ClientID: "sub", PacketID: packetID},
		dup: dup, wire: w, seq: w.seq.Add(1), hash: contentHash(topic, []byte(payload)),
		ack: ackFunc(func() { c.n.Add(1) }),
	}
}

func qos2(a *arrival) *arrival { a.msg.QoS = 2; return a }

func mustCommit(t *testing.T, i *Ingester, arrivals ...*arrival) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !i.commit(ctx, &batch{arrivals: arrivals}) {
		t.Fatal("commit failed")
	}
	i.acksBusy.Wait() // given to Paho
}

func stored(t *testing.T, fs *flakyStore) []store.Message {
	t.Helper()
	msgs, err := fs.List(context.Background(), store.Query{Filter: "#", Limit: 1000})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	return msgs
}

// TestVerdicts pins the rules of docs/delivery.md, one case each: the
// record the ledger holds for the packet id, and the arrival.
func TestVerdicts(t *testing.T) {
	const old, cur = 4, 5 // connection numbers: an ended one and the current one
	stored := map[int64]store.Message{
		10: {ID: 10, Topic: "t", Payload: []byte("x")},
	}
	get := fakeReader(stored)
	rec := func(qos byte, conn, seq int64, live, ackSent, pending bool) *record {
		return &record{live: live, ackSent: ackSent, Delivery: store.Delivery{
			PacketID: 7, QoS: qos, Conn: conn, Seq: seq, MessageID: 10, Hash: contentHash("t", []byte("x")), Pending: pending}}
	}
	tests := []struct {
		name      string
		r         *record
		acked     int64 // the mark of the record's connection
		uncertain int64
		epoch     int64
		qos       byte
		dup       bool
		payload   string
		present   bool // the arrival's connection kept the session
		want      verdict
	}{
		{name: "no record", qos: 1, dup: true, payload: "x", present: true, want: fresh},
		{name: "qos 0", r: rec(1, old, 3, true, false, false), qos: 0, payload: "x", present: true, want: fresh},
		{name: "first attempt reuses an id", r: rec(1, old, 3, true, false, false), qos: 1, payload: "x", present: true, want: fresh},
		{name: "resent on the same connection", r: rec(1, cur, 3, true, true, false), qos: 1, dup: true, payload: "x", present: true, want: redundant},
		{name: "resent on the same connection, other content", r: rec(1, cur, 3, true, true, false), qos: 1, dup: true, payload: "y", present: true, want: fresh},
		{name: "ack never sent", r: rec(1, old, 3, true, false, false), qos: 1, dup: true, payload: "x", present: true, want: redundant},
		{name: "ack sent, confirmed", r: rec(1, old, 3, true, true, false), acked: 3, qos: 1, dup: true, payload: "x", present: true, want: fresh},
		{name: "ack sent, a later one confirmed", r: rec(1, old, 3, true, true, false), acked: 9, qos: 1, dup: true, payload: "x", present: true, want: fresh},
		{name: "ack sent, not confirmed", r: rec(1, old, 3, true, true, false), acked: 2, qos: 1, dup: true, payload: "x", present: true, want: ambiguous},
		{name: "ack sent, not confirmed, other content", r: rec(1, old, 3, true, true, false), qos: 1, dup: true, payload: "y", present: true, want: fresh},
		{name: "loaded, not confirmed", r: rec(1, old, 3, false, false, false), qos: 1, dup: true, payload: "x", present: true, want: ambiguous},
		{name: "loaded, confirmed", r: rec(1, old, 3, false, false, false), acked: 3, qos: 1, dup: true, payload: "x", present: true, want: fresh},
		{name: "uncertain session", r: rec(1, old, 3, false, false, false), acked: 3, uncertain: old + 1, qos: 1, dup: true, payload: "x", present: true, want: ambiguous},
		{name: "row gone", r: &record{Delivery: store.Delivery{PacketID: 7, QoS: 1, Conn: old, Seq: 3, MessageID: 99}}, qos: 1, dup: true, payload: "x", present: true, want: fresh},
		{name: "migrated record, no hash", r: &record{Delivery: store.Delivery{PacketID: 7, QoS: 1, MessageID: 10}}, uncertain: 1, qos: 1, dup: true, payload: "x", present: true, want: ambiguous},
		{name: "qos 2 pending, resent", r: rec(2, old, 3, false, false, true), qos: 2, dup: true, payload: "x", present: true, want: redundant},
		{name: "qos 2 pending, without DUP", r: rec(2, old, 3, false, false, true), qos: 2, payload: "x", present: true, want: ambiguous},
		{name: "qos 2 pending, without DUP, other content", r: rec(2, old, 3, false, false, true), qos: 2, payload: "y", present: true, want: fresh},
		{name: "qos 2 pending, other content", r: rec(2, old, 3, false, false, true), qos: 2, dup: true, payload: "y", present: true, want: fresh},
		{name: "qos 2 pending, uncertain session", r: rec(2, old, 3, false, false, true), uncertain: old + 1, qos: 2, dup: true, payload: "x", present: true, want: ambiguous},
		{name: "qos 2 released, resent", r: rec(2, old, 3, true, true, false), qos: 2, dup: true, payload: "x", present: true, want: ambiguous},
		{name: "qos 2 released, other content", r: rec(2, old, 3, true, true, false), qos: 2, dup: true, payload: "y", present: true, want: fresh},
		{name: "qos 2 released, first attempt", r: rec(2, old, 3, true, true, false), qos: 2, payload: "x", present: true, want: fresh},
		{name: "qos changed", r: rec(1, old, 3, true, false, false), qos: 2, dup: true, payload: "x", present: true, want: fresh},
		{name: "record of an ended session", r: rec(1, old, 3, true, false, false), epoch: old + 1, qos: 1, dup: true, payload: "x", present: true, want: fresh},
		{name: "arrival opens a new session", r: rec(2, old, 3, false, false, true), qos: 2, dup: true, payload: "x", present: false, want: fresh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLedger(store.Session{Epoch: tt.epoch, Uncertain: tt.uncertain})
			l.lastConn = old
			if tt.present {
				l.lastConn = cur
			}
			if tt.r != nil {
				l.ids[7] = tt.r
				l.acked[tt.r.Conn] = tt.acked
			}
			w, _ := testWire(t, nil, cur, tt.present)
			a := &arrival{msg: store.Message{Topic: "t", Payload: []byte(tt.payload), QoS: tt.qos, PacketID: 7},
				dup: tt.dup, wire: w, seq: 1, hash: contentHash("t", []byte(tt.payload))}
			j, err := l.view(1).judge(context.Background(), get, "sub", a)
			if err != nil {
				t.Fatalf("judge: %v", err)
			}
			if j.v != tt.want {
				t.Errorf("verdict %v, want %v", j.v, tt.want)
			}
		})
	}
}

// fakeReader reads messages from a map and has no records: the verdicts'
// pure logic, with the ledger's records given in memory.
type fakeReader map[int64]store.Message

func (f fakeReader) Get(_ context.Context, id int64) (store.Message, error) {
	if m, ok := f[id]; ok {
		return m, nil
	}
	return store.Message{}, store.ErrNotFound
}

func (f fakeReader) Delivery(context.Context, string, uint16) (store.Delivery, error) {
	return store.Delivery{}, store.ErrNotFound
}

// A first attempt with the id of a delivery acknowledged on the same
// connection proves the broker processed that acknowledgement and every
// one before it.
func TestReusedIDConfirmsAcknowledgements(t *testing.T) {
	i, _, _ := newTestIngester(t)
	var c acks
	w, _ := testWire(t, i, 1, true)
	mustCommit(t, i, c.arrival(w, "t", "a", 1, false), c.arrival(w, "t", "b", 2, false))
	mustCommit(t, i, c.arrival(w, "t", "c", 2, false))
	if got := i.ledger.acked[1]; got != 2 {
		t.Errorf("mark of connection 1 = %d, want 2 (the acknowledgement of b)", got)
	}
	ses, err := i.st.LoadSession(context.Background(), "sub")
	if err != nil || ses.Acked[1] != 2 {
		t.Errorf("stored mark = %v, %v, want 2", ses.Acked, err)
	}
}

// After a reconnect: a message committed but whose acknowledgement never
// left is acknowledged again and not stored; one whose acknowledgement left
// but was not confirmed is stored flagged; a new message is stored plainly.
func TestRedeliveriesAfterReconnect(t *testing.T) {
	i, fs, m := newTestIngester(t)
	var c acks
	w1, _ := testWire(t, i, 1, true)
	mustCommit(t, i, c.arrival(w1, "t", "acked", 7, false))
	w1.Close()
	mustCommit(t, i, c.arrival(w1, "t", "not acked", 8, false))
	if n := c.n.Load(); n != 1 {
		t.Fatalf("acked %d, want 1: nothing is acknowledged on a closed connection", n)
	}
	w2, _ := testWire(t, i, 2, true)
	mustCommit(t, i,
		c.arrival(w2, "t", "acked", 7, true),
		c.arrival(w2, "t", "not acked", 8, true),
		c.arrival(w2, "t", "new", 9, true),
		c.arrival(w2, "t", "new", 9, true), // and resent again on the same connection
	)
	got := stored(t, fs)
	var rows []string
	for k := len(got) - 1; k >= 0; k-- {
		r := got[k]
		rows = append(rows, string(r.Payload)+map[bool]string{true: "(dup)"}[r.Duplicate])
	}
	if want := "[acked not acked acked(dup) new]"; strings.Join(rows, " ") != want[1:len(want)-1] {
		t.Errorf("rows %v, want %s", rows, want)
	}
	if n := c.n.Load(); n != 5 {
		t.Errorf("acked %d, want 5 (all four on connection 2)", n)
	}
	if got := testutil.ToFloat64(m.DuplicatesDropped); got != 2 {
		t.Errorf("duplicates dropped = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.DuplicatesStored); got != 1 {
		t.Errorf("duplicates stored = %v, want 1", got)
	}
}

// The broker's PINGRESP to a PINGREQ written after the acknowledgements
// confirms them: a redelivery of that id on the next connection is a new
// message. The mark is committed by itself once the writer is idle.
func TestBarrierConfirmsAcknowledgements(t *testing.T) {
	i, fs, _ := newTestIngester(t)
	var c acks
	w1, p1 := testWire(t, i, 1, true)
	a := c.arrival(w1, "t", "x", 7, false)
	mustCommit(t, i, a)
	// Paho writes the PUBACK the writer gave it.
	if _, err := w1.Write([]byte{typePuback << 4, 2, 0, 7}); err != nil {
		t.Fatalf("write puback: %v", err)
	}
	if !waitFor(func() bool { return bytes.Contains(p1.bytes(), []byte{typePingreq << 4, 0}) }) {
		t.Fatalf("no PINGREQ after the acknowledgement; peer got % x", p1.bytes())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); i.write(ctx) }()
	// The broker answers: Paho reads the PINGRESP through the wire.
	go func() { _, _ = p1.conn.Write([]byte{typePingresp << 4, 0}) }()
	if _, err := w1.Read(make([]byte, 2)); err != nil {
		t.Fatalf("read pingresp: %v", err)
	}
	if !waitFor(func() bool {
		ses, err := fs.LoadSession(context.Background(), "sub")
		return err == nil && ses.Acked[1] == a.seq
	}) {
		t.Fatalf("the confirmed mark was not committed")
	}
	cancel()
	<-done
	w2, _ := testWire(t, i, 2, true)
	mustCommit(t, i, c.arrival(w2, "t", "x", 7, true))
	if got := stored(t, fs); len(got) != 2 || got[0].Duplicate {
		t.Errorf("rows %+v, want two, the second not flagged", got)
	}
}

// A PUBCOMP waits for the release of its packet id to be committed.
func TestPubcompWaitsForTheRelease(t *testing.T) {
	i, fs, _ := newTestIngester(t)
	var c acks
	w, p := testWire(t, i, 1, true)
	mustCommit(t, i, qos2(c.arrival(w, "t", "x", 7, false)))
	ses, _ := fs.LoadSession(context.Background(), "sub")
	if len(ses.Deliveries) != 1 || !ses.Deliveries[0].Pending {
		t.Fatalf("deliveries %+v, want 7 pending", ses.Deliveries)
	}
	// The broker's PUBREL came; Paho answers with PUBCOMP.
	if _, err := w.Write([]byte{typePubcomp << 4, 2, 0, 7}); err != nil {
		t.Fatalf("write pubcomp: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if bytes.Contains(p.bytes(), []byte{typePubcomp << 4, 2, 0, 7}) {
		t.Fatalf("PUBCOMP went out before the release was committed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); i.write(ctx) }()
	if !waitFor(func() bool { return bytes.Contains(p.bytes(), []byte{typePubcomp << 4, 2, 0, 7}) }) {
		t.Fatalf("PUBCOMP never went out")
	}
	cancel()
	<-done
	ses, _ = fs.LoadSession(context.Background(), "sub")
	if len(ses.Deliveries) != 1 || ses.Deliveries[0].Pending {
		t.Errorf("deliveries %+v, want 7 released", ses.Deliveries)
	}
	// Now a first attempt with 7 is a new message.
	mustCommit(t, i, qos2(c.arrival(w, "t", "x", 7, false)))
	if got := stored(t, fs); len(got) != 2 || got[0].Duplicate {
		t.Errorf("rows %+v, want two, the second not flagged", got)
	}
}

func TestUncommittedIsNotAcked(t *testing.T) {
	i, fs, m := newTestIngester(t)
	fs.failing.Store(true)
	var c acks
	w, _ := testWire(t, i, 1, true)
	b := &batch{arrivals: []*arrival{c.arrival(w, "t", "x", 1, false), c.arrival(w, "t", "y", 2, false)}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- i.commit(ctx, b) }()
	if !waitFor(func() bool { return testutil.ToFloat64(m.StoreErrors) >= 2 }) {
		t.Fatal("commit was not retried")
	}
	if c.n.Load() != 0 {
		t.Fatalf("acked %d messages that were not committed", c.n.Load())
	}
	if err := i.Ready(); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("Ready() = %v", err)
	}
	if p := i.storeErr.Load(); p == nil {
		t.Error("store error not recorded for readiness")
	}
	fs.failing.Store(false)
	if ok := <-done; !ok {
		t.Fatal("commit did not succeed once the store was back")
	}
	i.acksBusy.Wait()
	cancel()
	if c.n.Load() != 2 || len(stored(t, fs)) != 2 {
		t.Errorf("after recovery: %d acked, %d stored, want 2 and 2", c.n.Load(), len(stored(t, fs)))
	}
	if p := i.storeErr.Load(); p != nil {
		t.Errorf("store error still recorded: %v", *p)
	}
}

func TestShutdownDoesNotAckUncommitted(t *testing.T) {
	i, fs, _ := newTestIngester(t)
	i.cfg.ShutdownTimeout = 300 * time.Millisecond
	fs.failing.Store(true)
	var c acks
	w, _ := testWire(t, i, 1, true)
	i.queue <- c.arrival(w, "t", "x", 1, false)
	err := i.shutdown(nil)
	if err == nil || !strings.Contains(err.Error(), "not committed") {
		t.Errorf("shutdown error = %v, want one about uncommitted messages", err)
	}
	if c.n.Load() != 0 {
		t.Errorf("acked %d uncommitted messages", c.n.Load())
	}
}

func waitFor(cond func() bool) bool {
	for range 300 {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// The connection drops during COMMIT, after the commit happened: the retry
// finds the batch by its key instead of storing it again.
func TestCommitLostInFlightIsNotStoredTwice(t *testing.T) {
	i, fs, m := newTestIngester(t)
	var handed [][]store.Message
	i.cfg.Committed = func(rows []store.Message) { handed = append(handed, rows) }
	fs.loseNext.Store(1)
	var c acks
	w, _ := testWire(t, i, 1, true)
	mustCommit(t, i, c.arrival(w, "t", "x", 1, false), c.arrival(w, "t", "y", 2, false), c.arrival(w, "t", "z", 3, false))

	got := stored(t, fs)
	if len(got) != 3 {
		t.Fatalf("stored %d rows, want 3: %+v", len(got), got)
	}
	if n := c.n.Load(); n != 3 {
		t.Errorf("acked %d, want 3", n)
	}
	if n := testutil.ToFloat64(m.StoreErrors); n != 1 {
		t.Errorf("store errors = %v, want 1 (the lost commit)", n)
	}
	if n := testutil.ToFloat64(m.Stored); n != 3 {
		t.Errorf("stored counter = %v, want 3", n)
	}
	if len(handed) != 1 || len(handed[0]) != 3 {
		t.Fatalf("committed hook got %d calls (%v), want one of 3 rows", len(handed), handed)
	}
	for k, r := range handed[0] {
		if want := got[len(got)-1-k].ID; r.ID != want {
			t.Errorf("row %d handed on with id %d, want the stored id %d", k, r.ID, want)
		}
	}
}

// A store set up again (its file deleted, its database created again) gets
// the whole ledger back with the next commit.
func TestResetStoreGetsTheLedgerBack(t *testing.T) {
	i, fs, _ := newTestIngester(t)
	var c acks
	w, _ := testWire(t, i, 3, true)
	mustCommit(t, i, qos2(c.arrival(w, "t", "x", 7, false)))
	// The store forgets everything and says so on the next commit.
	db, err := sql.Open("sqlite", fs.path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer db.Close()
	if _, err := db.Exec(`DELETE FROM delivery_pages`); err != nil {
		t.Fatalf("forget: %v", err)
	}
	ses, _ := fs.LoadSession(context.Background(), "sub")
	if len(ses.Deliveries) != 0 {
		t.Fatalf("setup: deliveries %+v, want none", ses.Deliveries)
	}
	fs.resetNext.Store(1)
	mustCommit(t, i, c.arrival(w, "t", "y", 8, false))
	ses, _ = fs.LoadSession(context.Background(), "sub")
	ids := map[uint16]bool{}
	for _, d := range ses.Deliveries {
		ids[d.PacketID] = d.Pending
	}
	if len(ids) != 2 || !ids[7] {
		t.Errorf("deliveries after the reset %+v, want 7 (pending) and 8", ses.Deliveries)
	}
}

// commitPastKeep commits, on w, keepRecords+1000 QoS 1 arrivals with
// packet ids 1 on and payloads m-0 on, and returns their number.
func commitPastKeep(t *testing.T, i *Ingester, c *acks, w *wire) int {
	t.Helper()
	n := keepRecords + 1000
	arrivals := make([]*arrival, n)
	for k := range arrivals {
		arrivals[k] = c.arrival(w, "t", fmt.Sprintf("m-%d", k), uint16(k+1), false)
	}
	mustCommit(t, i, arrivals...)
	return n
}

// Finished records leave memory once keepRecords newer ones came; a
// redelivery with such a packet id reads the record from the store and is
// judged as it would have been.
func TestFinishedRecordsLeaveMemory(t *testing.T) {
	i, fs, _ := newTestIngester(t)
	var c acks
	w1, _ := testWire(t, i, 1, true)
	n := commitPastKeep(t, i, &c, w1)
	// The broker confirms every acknowledgement; then one more commit.
	i.ledger.acked[1] = int64(n)
	i.unsaved[1], i.unsavedSince = int64(n), time.Now()
	mustCommit(t, i, c.arrival(w1, "t", "last", uint16(n+1), false))
	if got := i.ledger.ids.count(); got > keepRecords+1 {
		t.Errorf("%d records in memory, want at most %d", got, keepRecords+1)
	}
	if i.ledger.ids[1] != nil {
		t.Fatalf("the record of packet id 1 is still in memory")
	}
	// On the next connection: a redelivery with id 3 and its own
	// content, whose acknowledgement was confirmed, is a new message (the
	// broker reused the freed id); one with id 2 and the content of id 1
	// looks like a broker that numbers afresh (rule 5): flagged.
	w2, _ := testWire(t, i, 2, true)
	mustCommit(t, i, c.arrival(w2, "t", "m-2", 3, true), c.arrival(w2, "t", "m-0", 2, true))
	rows := stored(t, fs)
	if string(rows[1].Payload) != "m-2" || rows[1].Duplicate || string(rows[0].Payload) != "m-0" || !rows[0].Duplicate {
		t.Errorf("newest rows %+v, %+v; want m-2 not flagged, then m-0 flagged", rows[1], rows[0])
	}
}

// Acknowledged QoS 1 records leave memory unconfirmed too (a broker may
// answer the confirming PINGREQ only after its backlog): a packet id used
// again still confirms the acknowledgements, and a redelivery reads the
// record from the store and is judged as it would have been.
func TestAcknowledgedRecordsLeaveMemory(t *testing.T) {
	i, fs, _ := newTestIngester(t)
	var c acks
	w1, _ := testWire(t, i, 1, true)
	commitPastKeep(t, i, &c, w1)
	if got := i.ledger.ids.count(); got > keepRecords {
		t.Errorf("%d records in memory, want at most %d", got, keepRecords)
	}
	if i.ledger.ids[2] != nil || i.ledger.acked[1] != 0 {
		t.Fatalf("record of id 2 in memory %v, mark of connection 1 %d; want gone and 0",
			i.ledger.ids[2] != nil, i.ledger.acked[1])
	}
	// The broker gives id 1 to a new message: it processed the
	// acknowledgement of id 1's delivery (seq 1), not yet the others.
	mustCommit(t, i, c.arrival(w1, "t", "new", 1, false))
	if got := i.ledger.acked[1]; got != 1 {
		t.Errorf("mark of connection 1 = %d, want 1", got)
	}
	// On the next connection: id 2 again with its content may be a
	// redelivery (its acknowledgement was not confirmed): flagged; id 3
	// with other content is a new message.
	w2, _ := testWire(t, i, 2, true)
	mustCommit(t, i, c.arrival(w2, "t", "m-1", 2, true), c.arrival(w2, "t", "other", 3, true))
	rows := stored(t, fs)
	if string(rows[1].Payload) != "m-1" || !rows[1].Duplicate || string(rows[0].Payload) != "other" || rows[0].Duplicate {
		t.Errorf("newest rows %+v, %+v; want m-1 flagged, then other not flagged", rows[1], rows[0])
	}
}

// fakeMessage is a PUBLISH as Paho hands it to the handler.
type fakeMessage struct {
	topic   string
	payload []byte
	id      uint16
	ack     func()
}

func (m *fakeMessage) Duplicate() bool   { return false }
func (m *fakeMessage) Qos() byte         { return 1 }
func (m *fakeMessage) Retained() bool    { return false }
func (m *fakeMessage) Topic() string     { return m.topic }
func (m *fakeMessage) MessageID() uint16 { return m.id }
func (m *fakeMessage) Payload() []byte   { return m.payload }
func (m *fakeMessage) Ack()              { m.ack() }

// eventLog records log lines and acknowledgements in the order they
// happen.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (e *eventLog) add(s string) {
	e.mu.Lock()
	e.events = append(e.events, s)
	e.mu.Unlock()
}

func (e *eventLog) Write(p []byte) (int, error) {
	for line := range strings.SplitSeq(strings.TrimSuffix(string(p), "\n"), "\n") {
		e.add("line " + line[strings.Index(line, "topic="):])
	}
	return len(p), nil
}

// The arrival lines are held back, but each is out before its message is
// acknowledged, in the order the messages came.
func TestArrivalLinesLeaveBeforeTheAcks(t *testing.T) {
	i, _, _ := newTestIngester(t)
	var ev eventLog
	out := logbuf.New(&ev)
	i.arrivals = slog.New(slog.NewTextHandler(out.Held(), nil))
	i.cfg.FlushArrivals = out.Flush
	testWire(t, i, 1, true)
	for k, topic := range []string{"a", "b", "c"} {
		i.handle(nil, &fakeMessage{topic: topic, payload: []byte("x"), id: uint16(k + 1), ack: func() { ev.add("ack " + topic) }})
	}
	if len(ev.events) != 0 {
		t.Fatalf("before the commit: %q, want nothing written yet", ev.events)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !i.commit(ctx, &batch{arrivals: i.collect(nil)}) {
		t.Fatal("commit failed")
	}
	i.acksBusy.Wait()
	want := []string{"line topic=a", "line topic=b", "line topic=c", "ack a", "ack b", "ack c"}
	var got []string
	for _, e := range ev.events {
		got = append(got, strings.Fields(e)[0]+" "+strings.Fields(e)[1])
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", got, want)
	}
}

// What waits for the writer is bounded in bytes too: an arrival that does
// not fit waits, holding Paho's reader back, until a commit makes room (or
// shutdown refuses it), and a commit takes at most MaxBatchBytes of
// payload.
func TestQueueBoundedInBytes(t *testing.T) {
	i, _, m := newTestIngester(t)
	i.cfg.QueueBytes, i.cfg.MaxBatchBytes = 3000, 1000
	i.room = semaphore.NewWeighted(3000)
	testWire(t, i, 1, true)
	payload := bytes.Repeat([]byte("x"), 600) // holds 600 + 1 + arrivalSize bytes
	handled := make(chan struct{}, 4)
	handle := func(k int) {
		i.handle(nil, &fakeMessage{topic: "t", payload: payload, id: uint16(k + 1), ack: func() {}})
		handled <- struct{}{}
	}
	for k := range 2 {
		handle(k)
		<-handled
	}
	go handle(2)
	select {
	case <-handled:
		if len(i.queue) == 2 {
			t.Fatal("the third arrival was refused, want it to wait")
		}
		t.Fatal("the third arrival was queued, want it to wait for room")
	case <-time.After(200 * time.Millisecond):
	}
	// A commit takes what fits in MaxBatchBytes: the first two (the
	// second crosses it), which makes room for the third.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := &batch{arrivals: i.collect(nil)}
	if len(b.arrivals) != 2 {
		t.Fatalf("a batch of %d arrivals, want 2", len(b.arrivals))
	}
	if !i.commit(ctx, b) {
		t.Fatal("commit failed")
	}
	select {
	case <-handled:
	case <-time.After(5 * time.Second):
		t.Fatal("the third arrival still waits after the commit")
	}
	if len(i.queue) != 1 {
		t.Fatalf("%d queued, want the third", len(i.queue))
	}
	// Shutdown refuses what waits for room.
	for k := 3; k < 5; k++ {
		go handle(k)
	}
	<-handled // the fourth fits beside the third
	i.stop()
	select {
	case <-handled:
	case <-time.After(5 * time.Second):
		t.Fatal("an arrival waiting for room was not refused at shutdown")
	}
	if got := testutil.ToFloat64(m.RefusedWhileStopped); got != 1 {
		t.Errorf("refused while stopped = %v, want 1", got)
	}
}
