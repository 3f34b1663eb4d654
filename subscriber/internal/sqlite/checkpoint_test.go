package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// BenchmarkCommitBehindCheckpoint is the end-to-end scenario of the bench
// reduced to the store: a WAL left long by a drain, then single-message
// commits at about 1,000 a second while two readers follow them (as the
// stream does). It reports the slowest commit and the 99th percentile:
// a checkpoint that makes a commit wait shows in both.
func BenchmarkCommitBehindCheckpoint(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "messages.db"))
	if err != nil {
		b.Fatalf("open: %v", err)
	}
	defer s.Close()
	// The drain: more WAL than walRestartFrames.
	batch := make([]store.Message, 500)
	for i := range 200 {
		for j := range batch {
			batch[j] = store.Message{Topic: fmt.Sprintf("drain/%d", j%100), Payload: []byte(`{"seq":1,"value":21.5}`),
				QoS: 1, ReceivedAt: time.Now(), ClientID: "bench", PacketID: uint16(i*500 + j)}
		}
		if err := s.Insert(ctx, batch); err != nil {
			b.Fatalf("insert: %v", err)
		}
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for rctx.Err() == nil {
				if _, err := s.List(rctx, store.Query{Filter: "e2e/#", Limit: 10}); err != nil && rctx.Err() == nil {
					b.Errorf("list: %v", err)
					return
				}
				time.Sleep(200 * time.Microsecond)
			}
		})
	}
	var took []time.Duration
	tick := time.NewTicker(time.Millisecond)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		<-tick.C
		m := []store.Message{{Topic: "e2e/x", Payload: []byte("21.5"), QoS: 1, ReceivedAt: time.Now(), ClientID: "bench", PacketID: uint16(i)}}
		t := time.Now()
		if err := s.Insert(ctx, m); err != nil {
			b.Fatalf("insert: %v", err)
		}
		took = append(took, time.Since(t))
	}
	b.StopTimer()
	tick.Stop()
	stop()
	wg.Wait()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
}

// A reader that holds a snapshot of the WAL does not hold up a commit,
// even when the commit is the one that checkpoints the long WAL.
func TestCommitNotHeldByReader(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "messages.db"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	msg := func(i int) []store.Message {
		return []store.Message{{Topic: "a/b", Payload: []byte("1"), QoS: 1, ReceivedAt: time.Now(), ClientID: "c", PacketID: uint16(i)}}
	}
	for i := range 10 {
		if err := s.Insert(ctx, msg(i)); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}
	conn, err := s.h.Load().r.Conn(ctx)
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatalf("begin: %v", err)
	}
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM messages").Scan(&n); err != nil {
		t.Fatalf("read: %v", err)
	}
	const hold = 500 * time.Millisecond
	released := time.AfterFunc(hold, func() { conn.ExecContext(ctx, "COMMIT") })
	defer released.Stop()
	if err := s.Insert(ctx, msg(10)); err != nil { // a frame past the reader's snapshot
		t.Fatalf("insert: %v", err)
	}
	s.walFrames.Store(walRestartFrames + 1) // as if the WAL were long
	start := time.Now()
	if err := s.Insert(ctx, msg(11)); err != nil {
		t.Fatalf("insert: %v", err)
	}
	took := time.Since(start)
	if took > hold/2 {
		t.Errorf("commit took %s with a reader on the WAL, want well under the reader's %s", took, hold)
	}
	t.Logf("the commit that checkpointed took %s with a reader on the WAL", took)
}
