package ingest

import (
	"context"
	"errors"
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

// flakyStore fails Insert while failing is set, on a real SQLite store.
type flakyStore struct {
	*sqlite.Store
	failing atomic.Bool
}

func (f *flakyStore) Insert(ctx context.Context, msgs []store.Message) error {
	if f.failing.Load() {
		return errors.New("disk on fire")
	}
	return f.Store.Insert(ctx, msgs)
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
	ctx := context.Background()
	var a acks
	if !i.commit(ctx, []arrival{a.arrival("t", "21.5", 7, false), a.arrival("t", "22", 8, false)}) {
		t.Fatal("commit failed")
	}
	// After a reconnect the broker resends 7 and 8 (their PUBACKs were
	// lost), and a new message that reuses nothing.
	batch := []arrival{
		a.arrival("t", "21.5", 7, true),
		a.arrival("t", "22", 8, true),
		a.arrival("t", "new", 9, true), // DUP, but its first delivery never reached us
		a.arrival("t", "new", 9, true), // and its second copy in the same batch
	}
	if !i.commit(ctx, batch) {
		t.Fatal("commit failed")
	}
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
	ctx := context.Background()
	var a acks
	i.commit(ctx, []arrival{a.arrival("t", "old", 7, false)})
	i.commit(ctx, []arrival{a.arrival("t", "other", 7, true)})
	if got := stored(t, fs); len(got) != 2 || got[0].Duplicate {
		t.Errorf("got %+v, want 2 rows, newest not duplicate", got)
	}
}

func TestUncommittedIsNotAcked(t *testing.T) {
	i, fs, m := newTestIngester(t)
	fs.failing.Store(true)
	var a acks
	batch := []arrival{a.arrival("t", "x", 1, false), a.arrival("t", "y", 2, false)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- i.commit(ctx, batch) }()
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
