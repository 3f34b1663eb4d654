package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/pgtest"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

func mustOpen(tb testing.TB, url string) *Store {
	tb.Helper()
	s, err := Open(context.Background(), url)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func rows(writer, n int) []store.Message {
	msgs := make([]store.Message, n)
	for i := range msgs {
		msgs[i] = store.Message{
			Topic: fmt.Sprintf("w%d/%d", writer, i%7), Payload: []byte("x"), QoS: 1,
			ReceivedAt: time.Now(), ClientID: fmt.Sprintf("writer-%d", writer), PacketID: uint16(i),
		}
	}
	return msgs
}

func ids(msgs []store.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func TestListAfter(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, pgtest.Database(t))
	if got, err := s.LastID(ctx); err != nil || got != 0 {
		t.Errorf("LastID of an empty store = %d, %v; want 0", got, err)
	}
	msgs := rows(1, 5)
	if err := s.Insert(ctx, msgs); err != nil {
		t.Fatalf("insert: %v", err)
	}
	want := ids(msgs)
	for _, tt := range []struct {
		after int64
		limit int
		want  []int64
	}{
		{0, 2, want[:2]},
		{want[1], 10, want[2:]},
		{want[4], 10, []int64{}},
	} {
		got, err := listAfter(ctx, s.pool, tt.after, tt.limit)
		if err != nil {
			t.Fatalf("listAfter(%d, %d): %v", tt.after, tt.limit, err)
		}
		if !slices.Equal(ids(got), tt.want) {
			t.Errorf("listAfter(%d, %d) = %v, want %v", tt.after, tt.limit, ids(got), tt.want)
		}
	}
	if got, err := s.LastID(ctx); err != nil || got != want[4] {
		t.Errorf("LastID = %d, %v; want %d", got, err, want[4])
	}
}

// writeConcurrently has writers stores (one per share-group member) insert
// batches of 1 to 40 rows at once, at least rounds each and on until until
// is closed, and returns every id stored. Now and then a writer's
// transaction rolls back after drawing ids, leaving a hole that a reader
// must not wait for.
func writeConcurrently(t *testing.T, url string, writers, rounds int, until <-chan struct{}) []int64 {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var all []int64
	var wg sync.WaitGroup
	for w := range writers {
		s := mustOpen(t, url)
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for round := 0; ; round++ {
				if round >= rounds {
					select {
					case <-until:
						return
					default:
					}
				}
				if round%10 == 5 {
					tx, err := s.pool.Begin(ctx)
					if err == nil {
						_, err = tx.Exec(ctx, `INSERT INTO messages (topic, payload, qos, retained, duplicate, received_at, client_id, packet_id)
							VALUES ('rolled/back', '', 1, false, false, now(), 'x', 1)`)
						tx.Rollback(ctx)
					}
					if err != nil {
						t.Errorf("insert to roll back: %v", err)
						return
					}
				}
				msgs := rows(w, 1+r.IntN(40))
				if err := s.Insert(ctx, msgs); err != nil {
					t.Errorf("writer %d: insert: %v", w, err)
					return
				}
				mu.Lock()
				all = append(all, ids(msgs)...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(all)
	return all
}

// checkSequence fails unless got is want: every id once, in increasing order.
func checkSequence(t *testing.T, who string, got, want []int64) {
	t.Helper()
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Errorf("%s: id %d after %d (position %d): want increasing ids, each once", who, got[i], got[i-1], i)
			break
		}
	}
	if !slices.Equal(got, want) {
		seen := map[int64]bool{}
		for _, id := range got {
			seen[id] = true
		}
		var missing []int64
		for _, id := range want {
			if !seen[id] {
				missing = append(missing, id)
			}
		}
		t.Errorf("%s: %d ids, want %d; missing %d of them, e.g. %v", who, len(got), len(want), len(missing), missing[:min(len(missing), 10)])
	}
}

// A reader that polls for the rows after the last id it has seen, while
// three members insert at once, sees every row exactly once: ids are in
// commit order, so no row commits below an id already seen.
func TestIDsFollowCommitOrder(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	reader := mustOpen(t, url)
	stop := make(chan struct{}) // closed once every writer is done
	done := make(chan error, 1)
	var got []int64
	go func() {
		var last int64
		for {
			// Read stop first: an empty read after it has caught up.
			stopping := false
			select {
			case <-stop:
				stopping = true
			default:
			}
			msgs, err := listAfter(ctx, reader.pool, last, 1000)
			if err != nil {
				done <- err
				return
			}
			for _, m := range msgs {
				got = append(got, m.ID)
				last = m.ID
			}
			if stopping && len(msgs) == 0 {
				done <- nil
				return
			}
		}
	}()
	now := make(chan struct{})
	close(now)
	want := writeConcurrently(t, url, 3, 150, now)
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("read: %v", err)
	}
	checkSequence(t, "reader", got, want)
}

// collector gathers what a follower delivers.
type collector struct {
	mu      sync.Mutex
	ids     []int64
	batches int
}

func (c *collector) deliver(msgs []store.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids = append(c.ids, ids(msgs)...)
	c.batches++
}

func (c *collector) got() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ids)
}

// followerPID is the backend of the follower's connection, 0 while it has
// none.
func followerPID(t *testing.T, admin *pgxpool.Pool) int {
	t.Helper()
	var pid int
	err := admin.QueryRow(context.Background(), `SELECT coalesce(max(pid), 0) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'subscriber follower'`).Scan(&pid)
	if err != nil {
		t.Fatalf("find the follower's backend: %v", err)
	}
	return pid
}

// While three members insert at once, a follower delivers every row they
// store after its start, exactly once and in id order, although its
// database connection is cut three times on the way; rows stored before
// its start are not delivered.
func TestFollowConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	s := mustOpen(t, url)
	if err := s.Insert(ctx, rows(9, 10)); err != nil {
		t.Fatalf("insert before the start: %v", err)
	}
	after, err := s.LastID(ctx)
	if err != nil {
		t.Fatalf("last id: %v", err)
	}

	var c collector
	var logs syncBuffer
	fctx, stop := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		s.Follow(fctx, slog.New(slog.NewTextHandler(&logs, nil)), after, c.deliver, nil)
	}()
	defer func() { stop(); <-followed }()

	admin, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer admin.Close()
	// The writers go on until the third cut, so that each falls amid
	// their commits.
	cut := make(chan struct{})
	go func() {
		defer close(cut)
		for range 3 {
			var pid int
			for pid == 0 {
				if fctx.Err() != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
				pid = followerPID(t, admin)
			}
			time.Sleep(150 * time.Millisecond)
			var ok bool
			if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
				t.Errorf("terminate the follower's backend %d: %v %v", pid, ok, err)
				return
			}
			// Wait for the next connection, not the one going away.
			for followerPID(t, admin) == pid {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()

	want := writeConcurrently(t, url, 3, 20, cut)
	more := rows(8, 5) // stored after the last cut: the follower is live again
	if err := s.Insert(ctx, more); err != nil {
		t.Fatalf("insert: %v", err)
	}
	want = append(want, ids(more)...)

	deadline := time.Now().Add(20 * time.Second)
	for len(c.got()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // anything delivered twice shows up now
	checkSequence(t, "follower", c.got(), want)
	if n := strings.Count(logs.String(), "stream follower reconnected"); n != 3 {
		t.Errorf("the follower logged %d reconnections, want 3:\n%s", n, logs.String())
	}
	t.Logf("%d rows in %d deliveries", len(want), c.batches)
}

// syncBuffer is a log destination that the test reads while it is written.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// While nobody watches, the follower moves past the rows stored without
// reading or delivering them; once watched, it delivers the rows stored
// from then on, each once.
func TestFollowUnwatched(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, pgtest.Database(t))
	var (
		watching atomic.Bool
		looks    atomic.Int64 // calls of watched
	)
	watched := func() bool { looks.Add(1); return watching.Load() }
	var c collector
	fctx, stop := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		s.Follow(fctx, slog.New(slog.DiscardHandler), 0, c.deliver, watched)
	}()
	defer func() { stop(); <-followed }()
	waitLooks := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for looks.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("the follower looked %d times, want %d", looks.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitLooks(2) // the first read, unwatched: a look before and after the newest id

	unwatched := rows(1, 5)
	if err := s.Insert(ctx, unwatched); err != nil {
		t.Fatalf("insert: %v", err)
	}
	waitLooks(4) // the read the commit's notification wakes
	watching.Store(true)
	watchedRows := rows(2, 3)
	if err := s.Insert(ctx, watchedRows); err != nil {
		t.Fatalf("insert: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(c.got()) < len(watchedRows) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // anything delivered twice shows up now
	checkSequence(t, "follower", c.got(), ids(watchedRows))
}
