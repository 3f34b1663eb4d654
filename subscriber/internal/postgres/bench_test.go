package postgres

import (
	"context"
	"fmt"
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
// writers with 1 at the same batch size.
func BenchmarkInsertWriters(b *testing.B) {
	for _, size := range []int{1, 100} {
		for _, writers := range []int{1, 3} {
			b.Run(fmt.Sprintf("batch=%d/writers=%d", size, writers), func(b *testing.B) {
				benchmarkWriters(b, writers, size)
			})
		}
	}
}

func benchmarkWriters(b *testing.B, writers, size int) {
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
