package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

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
// before anything is written (failing, failNext) or after the commit, as
// when the connection drops during COMMIT (loseNext).
type flakyStore struct {
	*sqlite.Store
	failing  atomic.Bool
	failNext atomic.Int32
	loseNext atomic.Int32
	lookups  atomic.Int32 // LatestByPacketID calls
}

func (f *flakyStore) Insert(ctx context.Context, msgs []store.Message) error {
	if f.failing.Load() || f.failNext.Add(-1) >= 0 {
		return errors.New("disk on fire")
	}
	if err := f.Store.Insert(ctx, msgs); err != nil {
		return err
	}
	if f.loseNext.Add(-1) >= 0 {
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

func (f *flakyStore) LatestByPacketID(ctx context.Context, clientID string, packetID uint16, max int) (store.Redelivery, error) {
	f.lookups.Add(1)
	return f.Store.LatestByPacketID(ctx, clientID, packetID, max)
}

func newTestIngester(t *testing.T) (*Ingester, *flakyStore, *metrics.Metrics) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	fs := &flakyStore{Store: st}
	m := metrics.New(prometheus.NewRegistry())
	i := New(slog.New(slog.NewTextHandler(io.Discard, nil)), Config{
		Broker: "tcp://127.0.0.1:1", ClientID: "sub", QoS: 1, Filters: []string{"#"}, StatusTopic: "s",
	}, fs, m)
	return i, fs, m
}

type acks struct{ n atomic.Int32 }

func (a *acks) arrival(topic, payload string, packetID uint16, dup bool) arrival {
	return arrival{
		msg: store.Message{Topic: topic, Payload: []byte(payload), QoS: 1, ReceivedAt: time.Now(),
			ClientID: "sub", PacketID: packetID},
		dup: dup,
		ack: func() { a.n.Add(1) },
	}
}

// on sets the connection the arrivals came on.
func on(conn uint64, arrivals ...arrival) []arrival {
	for k := range arrivals {
		arrivals[k].conn = conn
	}
	return arrivals
}

func mustCommit(t *testing.T, i *Ingester, arrivals ...arrival) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !i.commit(ctx, &batch{arrivals: arrivals}) {
		t.Fatal("commit failed")
	}
}

func stored(t *testing.T, fs *flakyStore) []store.Message {
	t.Helper()
	msgs, err := fs.List(context.Background(), store.Query{Filter: "#", Limit: 1000})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	return msgs
}

func TestRedeliveryOfStoredMessageIsAckedNotStored(t *testing.T) {
	i, fs, m := newTestIngester(t)
	var a acks
	mustCommit(t, i, a.arrival("t", "21.5", 7, false), a.arrival("t", "22", 8, false))
	// After a reconnect the broker resends 7 and 8 (their PUBACKs were
	// lost), and a new message that reuses nothing.
	redelivered := []arrival{
		a.arrival("t", "21.5", 7, true),
		a.arrival("t", "22", 8, true),
		a.arrival("t", "new", 9, true), // DUP, but its first delivery never reached us
		a.arrival("t", "new", 9, true), // and its second copy in the same batch
	}
	mustCommit(t, i, redelivered...)
	got := stored(t, fs)
	if len(got) != 3 {
		t.Fatalf("stored %d rows, want 3: %+v", len(got), got)
	}
	for _, r := range got {
		if r.Duplicate {
			t.Errorf("row %d (%s) marked duplicate", r.ID, r.Payload)
		}
	}
	if a.n.Load() != 6 {
		t.Errorf("acked %d, want all 6", a.n.Load())
	}
	if got := testutil.ToFloat64(m.DuplicatesDropped); got != 3 {
		t.Errorf("duplicates dropped = %v, want 3", got)
	}
}

func TestRedeliveryWithDifferentContentIsStored(t *testing.T) {
	i, fs, _ := newTestIngester(t)
	var a acks
	mustCommit(t, i, a.arrival("t", "old", 7, false))
	mustCommit(t, i, a.arrival("t", "other", 7, true))
	if got := stored(t, fs); len(got) != 2 || got[0].Duplicate {
		t.Errorf("got %+v, want 2 rows, newest not duplicate", got)
	}
}

func TestUncommittedIsNotAcked(t *testing.T) {
	i, fs, m := newTestIngester(t)
	fs.failing.Store(true)
	var a acks
	b := &batch{arrivals: []arrival{a.arrival("t", "x", 1, false), a.arrival("t", "y", 2, false)}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- i.commit(ctx, b) }()
	if !waitFor(func() bool { return testutil.ToFloat64(m.StoreErrors) >= 2 }) {
		t.Fatal("commit was not retried")
	}
	if a.n.Load() != 0 {
		t.Fatalf("acked %d messages that were not committed", a.n.Load())
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
	cancel()
	if a.n.Load() != 2 || len(stored(t, fs)) != 2 {
		t.Errorf("after recovery: %d acked, %d stored, want 2 and 2", a.n.Load(), len(stored(t, fs)))
	}
	if p := i.storeErr.Load(); p != nil {
		t.Errorf("store error still recorded: %v", *p)
	}
}

func TestShutdownDoesNotAckUncommitted(t *testing.T) {
	i, fs, _ := newTestIngester(t)
	i.cfg.ShutdownTimeout = 300 * time.Millisecond
	fs.failing.Store(true)
	var a acks
	i.queue <- a.arrival("t", "x", 1, false)
	err := i.shutdown(nil)
	if err == nil || !strings.Contains(err.Error(), "not committed") {
		t.Errorf("shutdown error = %v, want one about uncommitted messages", err)
	}
	if a.n.Load() != 0 {
		t.Errorf("acked %d uncommitted messages", a.n.Load())
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
	var a acks
	mustCommit(t, i, a.arrival("t", "x", 1, false), a.arrival("t", "y", 2, false), a.arrival("t", "z", 3, false))

	got := stored(t, fs)
	if len(got) != 3 {
		t.Fatalf("stored %d rows, want 3: %+v", len(got), got)
	}
	if n := a.n.Load(); n != 3 {
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

// An attempt that failed before committing is made again whole, with the
// same verdicts: the replay state moves on only with a commit.
func TestFailedAttemptIsRetriedWithSameVerdicts(t *testing.T) {
	i, fs, _ := newTestIngester(t)
	var a acks
	mustCommit(t, i, on(1, a.arrival("t", "a", 7, false))...)
	fs.failNext.Store(2)
	mustCommit(t, i, on(2, a.arrival("t", "a", 7, false), a.arrival("t", "new", 8, false))...)
	got := stored(t, fs)
	if len(got) != 3 || !got[1].Duplicate || got[0].Duplicate {
		t.Errorf("got %+v, want 3 rows, the replayed one (middle) marked duplicate", got)
	}
}

// After a reconnect, arrivals without the DUP flag that repeat a recent row
// (same packet id and content) are stored marked duplicate, until the first
// one that does not; then no more lookups are made on that connection.
func TestReplayAfterReconnectIsFlagged(t *testing.T) {
	i, fs, m := newTestIngester(t)
	var logs bytes.Buffer
	i.log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var a acks
	qos0 := a.arrival("t", "q0", 0, false)
	qos0.msg.QoS = 0
	retained := a.arrival("t", "r", 50, false)
	retained.msg.Retained = true
	steps := []struct {
		name     string
		arrivals []arrival
		lookups  int32
		flagged  []bool // of the rows this step stores, in order
	}{
		{"first connection", on(1, a.arrival("t", "a", 7, false), a.arrival("t", "b", 8, false),
			a.arrival("t", "c", 9, false)), 1, []bool{false, false, false}},
		{"replay after reconnect", on(2, a.arrival("t", "a", 7, false), qos0, retained,
			a.arrival("t", "b", 8, false)), 2, []bool{true, false, false, true}},
		{"replay goes on, then new messages", on(2, a.arrival("t", "c", 9, false),
			a.arrival("t", "d", 10, false), a.arrival("t", "e", 11, false)), 2, []bool{true, false, false}},
		{"prefix ended: no lookup", on(2, a.arrival("t", "a", 7, false)), 0, []bool{false}},
		{"next connection checks again", on(3, a.arrival("t", "e", 11, false),
			a.arrival("t", "f", 12, false)), 2, []bool{true, false}},
		// Connection 3's prefix has ended; on 4 the match is in the batch.
		{"replay of a row in the same batch", append(on(3, a.arrival("t", "g", 20, false)),
			on(4, a.arrival("t", "g", 20, false))...), 0, []bool{false, true}},
	}
	for _, st := range steps {
		before := len(stored(t, fs))
		fs.lookups.Store(0)
		mustCommit(t, i, st.arrivals...)
		if got := fs.lookups.Load(); got != st.lookups {
			t.Errorf("%s: %d lookups, want %d", st.name, got, st.lookups)
		}
		rows := stored(t, fs)
		var got []bool
		for k := len(rows) - before - 1; k >= 0; k-- {
			got = append(got, rows[k].Duplicate)
		}
		if fmt.Sprint(got) != fmt.Sprint(st.flagged) {
			t.Errorf("%s: stored with duplicate %v, want %v", st.name, got, st.flagged)
		}
	}
	if got := testutil.ToFloat64(m.DuplicatesStored); got != 5 {
		t.Errorf("duplicates stored = %v, want 5", got)
	}
	var ended []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == "replay check ended" {
			ended = append(ended, fmt.Sprintf("%v/%v/%v", rec["level"], rec["checked"], rec["stored_as_duplicate"]))
		}
	}
	// Connection 4 checked one and its prefix is still open.
	if want := []string{"DEBUG/1/0", "INFO/4/3", "INFO/2/1"}; fmt.Sprint(ended) != fmt.Sprint(want) {
		t.Errorf("replay check ended (level/checked/flagged) %v, want %v", ended, want)
	}
}
