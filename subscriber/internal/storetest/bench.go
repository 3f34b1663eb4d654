package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// BenchmarkInsert measures committing batches of size messages.
func BenchmarkInsert(b *testing.B, o Opener, size int) {
	s := o(b)
	defer s.Close()
	ctx := context.Background()
	payload := []byte(`{"temperature":21.5,"humidity":40}`)
	batch := make([]store.Message, size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for j := range batch {
			batch[j] = store.Message{
				Topic: fmt.Sprintf("bench/room%d/temperature", j%50), Payload: payload, QoS: 1,
				ReceivedAt: time.Now(), ClientID: "bench", PacketID: uint16(i*size + j),
			}
		}
		if err := s.Insert(ctx, batch); err != nil {
			b.Fatalf("insert: %v", err)
		}
	}
	b.ReportMetric(float64(size), "msgs/op")
}

// BenchmarkCommit measures committing batches of size messages with the
// session records the subscriber's writer commits with them: a delivery
// per message and an acknowledgement mark.
func BenchmarkCommit(b *testing.B, o Opener, size int) {
	s := o(b)
	defer s.Close()
	ctx := context.Background()
	payload := []byte(`{"temperature":21.5,"humidity":40}`)
	c := &store.Commit{ClientID: "bench", Messages: make([]store.Message, size), Deliveries: make([]store.CommitDelivery, size)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for j := range c.Messages {
			seq := int64(i*size + j + 1)
			c.Messages[j] = store.Message{
				Topic: fmt.Sprintf("bench/room%d/temperature", j%50), Payload: payload, QoS: 1,
				ReceivedAt: time.Now(), ClientID: "bench", PacketID: uint16(seq),
			}
			c.Deliveries[j] = store.CommitDelivery{Message: j, Delivery: store.Delivery{
				PacketID: uint16(seq%65535 + 1), QoS: 1, Conn: 1, Seq: seq, Hash: uint64(seq)}}
		}
		c.Acked = map[int64]int64{1: int64(i * size)}
		if err := s.Commit(ctx, c); err != nil {
			b.Fatalf("commit: %v", err)
		}
	}
	b.ReportMetric(float64(size), "msgs/op")
}

// BenchmarkList measures a page of 100 over rows stored messages whose
// topics are 1000 names <site a..j>/d<00..24>/<metric c..f>, drawn at
// random (as the bench harness's query): a/+/c matches 25 of them.
func BenchmarkList(b *testing.B, o Opener, rows int, filter string) {
	s := o(b)
	defer s.Close()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	batch := make([]store.Message, 0, 500)
	for i := range rows {
		batch = append(batch, store.Message{
			Topic:   fmt.Sprintf("%c/d%02d/%c", 'a'+r.IntN(10), r.IntN(25), 'c'+r.IntN(4)),
			Payload: []byte("21.5"), QoS: 1, ReceivedAt: base.Add(time.Duration(i) * time.Millisecond),
			ClientID: "bench", PacketID: uint16(i),
		})
		if len(batch) == cap(batch) || i == rows-1 {
			if err := s.Insert(ctx, batch); err != nil {
				b.Fatalf("insert: %v", err)
			}
			batch = batch[:0]
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		msgs, err := s.List(ctx, store.Query{Filter: filter, Limit: 100})
		if err != nil {
			b.Fatalf("list: %v", err)
		}
		if len(msgs) == 0 {
			b.Fatalf("list %q: no rows", filter)
		}
	}
}
