package readlimit

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	g := New(2, 50*time.Millisecond)
	ctx := context.Background()
	r1, err := g.Acquire(ctx)
	if err != nil {
		t.Fatalf("first turn: %v", err)
	}
	r2, err := g.Acquire(ctx)
	if err != nil {
		t.Fatalf("second turn: %v", err)
	}
	if got := g.InUse(); got != 2 {
		t.Errorf("InUse() = %d, want 2", got)
	}

	start := time.Now()
	if _, err := g.Acquire(ctx); !errors.Is(err, ErrBusy) {
		t.Errorf("third turn on a full gate: err %v, want ErrBusy", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("refused after %v, want after the wait of 50ms", d)
	}
	if got := g.Rejected(); got != 1 {
		t.Errorf("Rejected() = %d, want 1", got)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := g.Await(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ended context: err %v, want context.Canceled", err)
	}

	// A waiter gets the turn given back.
	got := make(chan error, 1)
	go func() {
		r, err := g.Await(ctx)
		if err == nil {
			r()
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	r1()
	r1() // twice gives back one turn only
	if err := <-got; err != nil {
		t.Errorf("waiter: %v", err)
	}
	if got := g.InUse(); got != 1 {
		t.Errorf("InUse() after the waiter = %d, want 1", got)
	}
	r2()
	if got := g.InUse(); got != 0 {
		t.Errorf("InUse() at the end = %d, want 0", got)
	}
}
