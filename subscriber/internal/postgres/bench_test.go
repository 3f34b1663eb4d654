package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/pgtest"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// BenchmarkInsertWriters is several members of a share group committing at
// once, each through a store of its own (as each subscriber has its own
// pool), into one database. msgs/s is what they store together; compare 3
// writers with 1 at the same batch size, for each way of ordering:
//
//   - unordered: the ordering trigger disabled (inserts as before it);
//   - notify: the trigger only sends NOTIFY (what waking followers costs);
//   - ordered: the trigger as it ships, lock and NOTIFY;
//   - followed: ordered, and every writer's store also runs a follower that
//     reads each commit, as every member of a group does.
func BenchmarkInsertWriters(b *testing.B) {
	for _, order := range []string{"unordered", "notify", "ordered", "followed"} {
		for _, size := range []int{1, 100} {
			for _, writers := range []int{1, 3} {
				b.Run(fmt.Sprintf("%s/batch=%d/writers=%d", order, size, writers), func(b *testing.B) {
					benchmarkWriters(b, order, writers, size)
				})
			}
		}
	}
}

func benchmarkWriters(b *testing.B, order string, writers, size int) {
	ctx := context.Background()
	url := pgtest.Database(b)
	stores := make([]*Store, writers)
	for w := range stores {
		s, err := Open(ctx, url)
		if err != nil {
			b.Fatalf("open: %v", err)
		}
		defer s.Close()
		stores[w] = s
	}
	var change string
	switch order {
	case "unordered":
		change = `ALTER TABLE messages DISABLE TRIGGER messages_in_commit_order`
	case "notify":
		change = `CREATE OR REPLACE FUNCTION messages_in_commit_order() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN PERFORM pg_notify('messages', ''); RETURN NULL; END $$`
	case "followed":
		fctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		defer wg.Wait()
		defer stop()
		for _, s := range stores {
			wg.Go(func() { s.Follow(fctx, slog.New(slog.DiscardHandler), 0, func([]store.Message) {}, nil) })
		}
	}
	if change != "" {
		if _, err := stores[0].pool.Exec(ctx, change); err != nil {
			b.Fatalf("%s: %v", order, err)
		}
	}
	payload := []byte(`{"temperature":21.5,"humidity":40}`)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	b.ResetTimer()
	start := time.Now()
	for w, s := range stores {
		wg.Go(func() {
			batch := make([]store.Message, size)
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				for j := range batch {
					batch[j] = store.Message{
						Topic: fmt.Sprintf("bench/room%d/temperature", j%50), Payload: payload, QoS: 1,
						ReceivedAt: time.Now(), ClientID: fmt.Sprintf("bench-%d", w), PacketID: uint16(int(i)*size + j),
					}
				}
				if err := s.Insert(ctx, batch); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatalf("insert: %v", err)
	}
	b.ReportMetric(float64(b.N*size)/elapsed.Seconds(), "msgs/s")
}
