package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// BenchmarkInsert measures committing batches of size messages with
// payloads of two values.
func BenchmarkInsert(b *testing.B, o Opener, size int) {
	BenchmarkInsertPayload(b, o, size, []byte(`{"temperature":21.5,"humidity":40}`))
}

// BenchmarkInsertPayload measures committing batches of size messages with
// payload, and reports the CPU time per message (which a loaded machine
// changes less than the time).
func BenchmarkInsertPayload(b *testing.B, o Opener, size int, payload []byte) {
	s := o(b)
	defer s.Close()
	ctx := context.Background()
	batch := make([]store.Message, size)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for i := 0; b.Loop(); i++ {
		for j := range batch {
			batch[j] = store.Message{
				Topic: fmt.Sprintf("bench/room%d/temperature", j%50), Payload: payload, QoS: 1,
				ReceivedAt: time.Now(), ClientID: "bench", PacketID: uint16(i*size + j), BatchKey: int64(i + 1),
			}
		}
		if err := s.Insert(ctx, batch); err != nil {
			b.Fatalf("insert: %v", err)
		}
	}
	b.ReportMetric(float64(size), "msgs/op")
	b.ReportMetric(float64(cpuTime()-cpu)/1e3/float64(b.N*size), "cpu-µs/msg")
}

// cpuTime is the CPU time of the process so far, in nanoseconds.
func cpuTime() int64 {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return 0
	}
	return r.Utime.Nano() + r.Stime.Nano()
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

// fillTelemetry stores rows readings of topics devices (d0000/temperature
// ...), spread evenly over the day before base, a JSON number each.
func fillTelemetry(b *testing.B, s store.Store, rows, topics int) {
	ctx := context.Background()
	batch := make([]store.Message, 0, 500)
	every := 24 * time.Hour / time.Duration(rows)
	for i := range rows {
		batch = append(batch, store.Message{
			Topic:   fmt.Sprintf("devices/d%04d/temperature", i%topics),
			Payload: fmt.Appendf(nil, "%d.%d", 15+i%10, i%7), QoS: 1,
			ReceivedAt: base.Add(-24 * time.Hour).Add(time.Duration(i) * every), ClientID: "bench", PacketID: uint16(i),
		})
		if len(batch) == cap(batch) || i == rows-1 {
			if err := s.Insert(ctx, batch); err != nil {
				b.Fatalf("insert: %v", err)
			}
			batch = batch[:0]
		}
	}
}

// BenchmarkSeries measures one day of one topic at 1-minute steps over
// rows readings of topics topics.
func BenchmarkSeries(b *testing.B, o Opener, rows, topics int) {
	s := o(b)
	defer s.Close()
	fillTelemetry(b, s, rows, topics)
	ctx := context.Background()
	q := store.SeriesQuery{Filter: "devices/d0007/temperature", Since: base.Add(-24 * time.Hour), Until: base, Step: time.Minute}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := s.Series(ctx, q)
		if err != nil || len(got) != 1 {
			b.Fatalf("series: %d, %v", len(got), err)
		}
	}
}

// BenchmarkTopics measures listing topics topics (one page of all of them).
func BenchmarkTopics(b *testing.B, o Opener, rows, topics int) {
	s := o(b)
	defer s.Close()
	fillTelemetry(b, s, rows, topics)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := s.Topics(ctx, store.TopicQuery{Filter: "#", Limit: topics + 1, MaxBytes: 4 << 20})
		if err != nil || len(got) != topics {
			b.Fatalf("topics: %d, %v", len(got), err)
		}
	}
}
