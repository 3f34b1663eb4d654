package backfill

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// fake has rows messages to fill, fails on the calls listed in fail, and
// records when each call started and ended.
type fake struct {
	mu    sync.Mutex
	rows  int64
	calls int
	fail  map[int]bool
	spans [][2]time.Time
	work  time.Duration
}

func (f *fake) FillValues(ctx context.Context, limit int) (int, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	start := time.Now()
	time.Sleep(f.work)
	f.spans = append(f.spans, [2]time.Time{start, time.Now()})
	if f.fail[f.calls] {
		return 0, 0, errors.New("store unavailable")
	}
	n := min(int64(limit), f.rows)
	f.rows -= n
	return int(n), f.rows, nil
}

func TestRunFillsEverythingAndLeavesTheWriterHalfTheTime(t *testing.T) {
	f := &fake{rows: 10*Batch + 3, work: 5 * time.Millisecond}
	b := New(slog.New(slog.NewTextHandler(io.Discard, nil)), f)
	b.Run(context.Background())
	if b.Read() != 10*Batch+3 || b.Left() != 0 {
		t.Errorf("read %d, left %d, want %d and 0", b.Read(), b.Left(), 10*Batch+3)
	}
	for i := 1; i < len(f.spans); i++ {
		busy := f.spans[i-1][1].Sub(f.spans[i-1][0])
		if gap := f.spans[i][0].Sub(f.spans[i-1][1]); gap < busy {
			t.Errorf("batch %d began %v after the one before, which took %v: want a pause at least as long", i, gap, busy)
		}
	}
}

func TestRunStopsWithItsContext(t *testing.T) {
	f := &fake{rows: 1 << 40, work: time.Millisecond}
	b := New(slog.New(slog.NewTextHandler(io.Discard, nil)), f)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestRunCountsFailuresAndGoesOn(t *testing.T) {
	f := &fake{rows: 2 * Batch, fail: map[int]bool{2: true}}
	b := New(slog.New(slog.NewTextHandler(io.Discard, nil)), f)
	b.errorPause = 10 * time.Millisecond
	b.Run(context.Background())
	if b.Errors() != 1 || b.Read() != 2*Batch || b.Left() != 0 {
		t.Errorf("errors %d, read %d, left %d, want 1, %d, 0", b.Errors(), b.Read(), b.Left(), 2*Batch)
	}
}
