package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// Telemetry is the data set of the series tests, for adapters to store
// through their previous schema (see CheckFilled).
func Telemetry() []store.Message { return telemetry() }

// CheckFilled checks a store opened on a database that an earlier version
// filled with old (ids set, values not extracted): what GET /topics needs
// of them is there at once, and FillValues, run by workers at once while
// new messages are committed, extracts every old message's values exactly
// once, after which Series answers as for messages stored with their
// values.
func CheckFilled(t *testing.T, s store.Store, old []store.Message, workers int) {
	t.Helper()
	ctx := context.Background()
	got, err := s.Topics(ctx, store.TopicQuery{Filter: "#", Limit: 1000})
	if err != nil {
		t.Fatalf("topics: %v", err)
	}
	counts := map[string]int64{}
	for _, m := range old {
		counts[m.Topic]++
	}
	if len(got) != len(counts) {
		t.Errorf("%d topics before the backfill, want %d", len(got), len(counts))
	}
	for _, tp := range got {
		if tp.Count != counts[tp.Name] {
			t.Errorf("%s: count %d before the backfill, want %d", tp.Name, tp.Count, counts[tp.Name])
		}
	}

	// New messages, with values from their commit, while the workers fill.
	var fresh []store.Message
	for i := range 50 {
		fresh = append(fresh, reading("living/room1/temperature", "99", day0.Add(50*time.Hour+time.Duration(i)*time.Second)))
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				n, left, err := s.FillValues(ctx, 37)
				if err != nil {
					t.Errorf("fill values: %v", err)
					return
				}
				if left == 0 && n == 0 {
					return
				}
				if n == 0 {
					time.Sleep(time.Millisecond) // another worker holds the position
				}
			}
		})
	}
	for i := 0; i < len(fresh); i += 10 {
		if err := s.Insert(ctx, fresh[i:i+10]); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}
	wg.Wait()
	if n, left, err := s.FillValues(ctx, 37); n != 0 || left != 0 || err != nil {
		t.Errorf("fill values once done: %d, %d, %v, want nothing", n, left, err)
	}
	all := append(append([]store.Message{}, old...), fresh...)
	q := store.SeriesQuery{Filter: "#", Since: day0.Add(-7 * time.Hour), Until: day0.Add(60 * time.Hour), Step: time.Hour}
	series, err := s.Series(ctx, q)
	if err != nil {
		t.Fatalf("series: %v", err)
	}
	if diff := sameSeries(series, referenceSeries(all, q)); diff != "" {
		t.Errorf("after the backfill: %s", diff)
	}
}

// CheckSeries compares what s answers of every series of msgs, by the hour
// and by the minute, with what the rows say.
func CheckSeries(t *testing.T, s store.Store, msgs []store.Message) {
	t.Helper()
	for _, step := range []time.Duration{time.Hour, time.Minute} {
		q := store.SeriesQuery{Filter: "#", Since: day0.Add(-7 * time.Hour), Until: day0.Add(60 * time.Hour), Step: step}
		got, err := s.Series(context.Background(), q)
		if err != nil {
			t.Fatalf("series: %v", err)
		}
		if diff := sameSeries(got, referenceSeries(msgs, q)); diff != "" {
			t.Errorf("by %s: %s", step, diff)
		}
	}
}
