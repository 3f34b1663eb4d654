package ingest

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/logbuf"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/metrics"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// memStore commits into nothing: it numbers the rows, so that a benchmark
// measures ingest's own work, not a store's.
type memStore struct{ next int64 }

func (s *memStore) Commit(_ context.Context, c *store.Commit) error {
	for k := range c.Messages {
		s.next++
		c.Messages[k].ID = s.next
	}
	return nil
}

func (s *memStore) LoadSession(context.Context, string) (store.Session, error) {
	return store.Session{}, nil
}

func (s *memStore) BatchIDs(context.Context, int64, time.Time) ([]int64, error) { return nil, nil }

func (s *memStore) Get(context.Context, int64) (store.Message, error) {
	return store.Message{}, store.ErrNotFound
}

func (s *memStore) Delivery(context.Context, string, uint16) (store.Delivery, error) {
	return store.Delivery{}, store.ErrNotFound
}

// BenchmarkIngest is ingest's own work per QoS 1 message, as in the bench's
// drain: Paho's handler call (the arrival line, logged as in production
// into a held buffer), the writer's judgement, the commit (into no store)
// in batches of 500, and the acknowledgements through the wire, with the
// broker's PINGRESP to each barrier. Packet ids cycle as a broker's do.
func BenchmarkIngest(b *testing.B) {
	out := logbuf.New(io.Discard)
	log := slog.New(slog.NewJSONHandler(out, nil))
	m := metrics.New(prometheus.NewRegistry())
	i := New(log, Config{
		Brokers: []string{"tcp://127.0.0.1:1"}, ClientID: "sub", QoS: 1, Filters: []string{"#"}, StatusTopic: "s",
		LogPayloadBytes: 256, Arrivals: slog.New(slog.NewJSONHandler(out.Held(), nil)), FlushArrivals: out.Flush,
	}, &memStore{}, m)
	ctx := context.Background()
	if err := i.load(ctx); err != nil {
		b.Fatal(err)
	}
	c := &writesConn{}
	w := newWire(c, 1, nil, i.wake)
	w.present.Store(true)
	i.wires[1] = w
	i.current.Store(w)
	msgs := make([]*fakeMessage, 500)
	for k := range msgs {
		msg := &fakeMessage{topic: "bench/ingest/" + strconv.Itoa(k%100), payload: []byte("message number " + strconv.Itoa(k))}
		puback := make([]byte, 4)
		// As Paho's: its PUBACK written through the wire.
		msg.ack = func() {
			puback[0], puback[1], puback[2], puback[3] = typePuback<<4, 2, byte(msg.id>>8), byte(msg.id)
			if _, err := w.Write(puback); err != nil {
				b.Error(err)
			}
		}
		msgs[k] = msg
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		for k := range msgs {
			if n+k == b.N {
				break
			}
			msg := msgs[k]
			msg.id = uint16((n+k)%65535 + 1)
			i.handle(nil, msg)
		}
		batch := &batch{arrivals: i.collect(nil)}
		n += len(batch.arrivals)
		if !i.commit(ctx, batch) {
			b.Fatal("commit failed")
		}
		i.acksBusy.Wait()
		// The broker answers the barrier's PINGREQ.
		w.answered()
		i.takeConfirmations()
		c.mu.Lock()
		c.writes = c.writes[:0]
		c.mu.Unlock()
	}
}
