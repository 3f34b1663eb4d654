package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/values"
)

// day0 is midnight UTC, a bucket edge of every step that divides a day.
var day0 = time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)

func reading(topic, payload string, at time.Time) store.Message {
	return store.Message{Topic: topic, Payload: []byte(payload), QoS: 1, ReceivedAt: at, ClientID: "sub", PacketID: 1}
}

// telemetry is the data set of the series tests: three rooms' temperatures
// (bare numbers) over two days, some on bucket edges and some sharing a
// microsecond; a device with an object payload of several fields; a topic
// whose payloads have no values; and a value that only a later message
// overwrites within one bucket.
func telemetry() []store.Message {
	var msgs []store.Message
	for i := range 600 {
		// Every 4 minutes 47 seconds, plus a few microseconds: the
		// readings wander across bucket edges of every step.
		at := day0.Add(-6 * time.Hour).Add(time.Duration(i) * (4*time.Minute + 47*time.Second + 13*time.Microsecond))
		for r, room := range []string{"room1", "room2", "room3"} {
			v := 20 + float64(r) + math.Sin(float64(i)/17)*3 + float64(i%7)/10
			msgs = append(msgs, reading("living/"+room+"/temperature", fmt.Sprintf("%.3f", v), at.Add(time.Duration(r)*time.Second)))
		}
		msgs = append(msgs, reading("living/room1/status", "ok", at))
		if i%5 == 0 {
			msgs = append(msgs, reading("devices/7/env", fmt.Sprintf(`{"temp": %d.5, "env": {"hum": %d, "co2": {"ppm": 4%02d}}, "name": "seven", "list": [1, 2]}`, 18+i%9, 40+i%11, i%100), at))
		}
	}
	// On edges exactly: midnight, and one microsecond before it.
	msgs = append(msgs,
		reading("living/room1/temperature", "-2.5e1", day0),
		reading("living/room1/temperature", "0", day0.Add(-time.Microsecond)),
		reading("living/room2/temperature", "30", day0.Add(time.Hour)),
		// The same microsecond twice: the one stored later is the last.
		reading("living/room2/temperature", "31", day0.Add(time.Hour)),
	)
	return msgs
}

// insertInBatches stores msgs in commits of varying sizes.
func insertInBatches(t *testing.T, s store.Store, msgs []store.Message) {
	t.Helper()
	for start, size := 0, 1; start < len(msgs); size = size%97 + 13 {
		end := min(start+size, len(msgs))
		mustInsert(t, s, msgs[start:end]...)
		start = end
	}
}

// referenceSeries computes what Series must answer from the stored rows
// themselves, by a route of its own: every value of every row, filtered,
// sorted by time and id, and folded bucket by bucket.
func referenceSeries(stored []store.Message, q store.SeriesQuery) []store.Series {
	type row struct {
		topic, field string
		at, id       int64
		v            float64
	}
	var rows []row
	for _, m := range stored {
		if !matches(q.Filter, m.Topic) || m.ReceivedAt.Before(q.Since) || !m.ReceivedAt.Before(q.Until) {
			continue
		}
		for _, v := range values.Extract(nil, m.Payload) {
			if q.Field == "" || v.Field == q.Field {
				rows = append(rows, row{m.Topic, v.Field, m.ReceivedAt.UnixMicro(), m.ID, v.Number})
			}
		}
	}
	slices.SortFunc(rows, func(a, b row) int {
		if c := strings.Compare(a.topic, b.topic); c != 0 {
			return c
		}
		if c := strings.Compare(a.field, b.field); c != 0 {
			return c
		}
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return int(a.id - b.id)
	})
	step := q.Step.Microseconds()
	out := []store.Series{}
	var sums []float64
	for _, r := range rows {
		if len(out) == 0 || out[len(out)-1].Topic != r.topic || out[len(out)-1].Field != r.field {
			out = append(out, store.Series{Topic: r.topic, Field: r.field})
		}
		s := &out[len(out)-1]
		start := time.Unix(0, 0).Add(time.Duration(r.at/step*step) * time.Microsecond).UTC() // r.at >= 0 here
		if len(s.Points) == 0 || !s.Points[len(s.Points)-1].Start.Equal(start) {
			s.Points = append(s.Points, store.Point{Start: start, Min: math.Inf(1), Max: math.Inf(-1)})
			sums = append(sums, 0)
		}
		p := &s.Points[len(s.Points)-1]
		p.Count++
		sums[len(sums)-1] += r.v
		p.Avg = sums[len(sums)-1] / float64(p.Count)
		p.Min, p.Max, p.Last = min(p.Min, r.v), max(p.Max, r.v), r.v
	}
	return out
}

func sameSeries(got, want []store.Series) string {
	if len(got) != len(want) {
		var g, w []string
		for _, s := range got {
			g = append(g, s.Topic+" "+s.Field)
		}
		for _, s := range want {
			w = append(w, s.Topic+" "+s.Field)
		}
		return fmt.Sprintf("series %q, want %q", g, w)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Topic != w.Topic || g.Field != w.Field || len(g.Points) != len(w.Points) {
			return fmt.Sprintf("series %d: %s %s with %d points, want %s %s with %d", i, g.Topic, g.Field, len(g.Points), w.Topic, w.Field, len(w.Points))
		}
		for k := range g.Points {
			gp, wp := g.Points[k], w.Points[k]
			if !gp.Start.Equal(wp.Start) || gp.Start.Location() != time.UTC || gp.Count != wp.Count || gp.Min != wp.Min || gp.Max != wp.Max ||
				gp.Last != wp.Last || math.Abs(gp.Avg-wp.Avg) > 1e-9*max(1, math.Abs(wp.Avg)) {
				return fmt.Sprintf("%s %s point %d: %+v, want %+v", g.Topic, g.Field, k, gp, wp)
			}
		}
	}
	return ""
}

func testSeries(t *testing.T, o Opener) {
	s := open(t, o)
	msgs := telemetry()
	insertInBatches(t, s, msgs)
	ctx := context.Background()
	all := store.SeriesQuery{Filter: "#", Since: day0.Add(-7 * time.Hour), Until: day0.Add(48 * time.Hour), Step: time.Hour}
	tests := []struct {
		name string
		q    store.SeriesQuery
	}{
		{"everything by the hour", all},
		{"one topic by the second", store.SeriesQuery{Filter: "living/room2/temperature", Since: day0.Add(30 * time.Minute), Until: day0.Add(90 * time.Minute), Step: time.Second}},
		{"rooms by the minute", store.SeriesQuery{Filter: "living/+/temperature", Since: day0.Add(-6 * time.Hour), Until: day0.Add(18 * time.Hour), Step: time.Minute}},
		{"rooms by 5 minutes, a field", store.SeriesQuery{Filter: "living/+/temperature", Field: "value", Since: day0.Add(-2 * time.Hour), Until: day0.Add(2 * time.Hour), Step: 5 * time.Minute}},
		{"by the day: buckets start at midnight", store.SeriesQuery{Filter: "#", Since: day0.Add(-24 * time.Hour), Until: day0.Add(48 * time.Hour), Step: 24 * time.Hour}},
		{"by 7 days", store.SeriesQuery{Filter: "#", Since: day0.Add(-24 * time.Hour), Until: day0.Add(48 * time.Hour), Step: 7 * 24 * time.Hour}},
		{"an odd step", store.SeriesQuery{Filter: "living/#", Since: day0.Add(-6 * time.Hour), Until: day0.Add(36 * time.Hour), Step: 7*time.Minute + 13*time.Second}},
		{"since on an edge is in, until on an edge is out", store.SeriesQuery{Filter: "living/room1/temperature", Since: day0, Until: day0.Add(time.Hour), Step: time.Minute}},
		{"until on the edge leaves the value at it out", store.SeriesQuery{Filter: "living/room1/temperature", Since: day0.Add(-time.Hour), Until: day0, Step: time.Minute}},
		{"nested fields of an object", store.SeriesQuery{Filter: "devices/+/env", Since: day0.Add(-7 * time.Hour), Until: day0.Add(48 * time.Hour), Step: 30 * time.Minute}},
		{"one nested field", store.SeriesQuery{Filter: "devices/#", Field: "env.co2.ppm", Since: day0.Add(-7 * time.Hour), Until: day0.Add(48 * time.Hour), Step: time.Hour}},
		{"empty range", store.SeriesQuery{Filter: "#", Since: day0.Add(100 * 24 * time.Hour), Until: day0.Add(101 * 24 * time.Hour), Step: time.Hour}},
		{"a topic with no values", store.SeriesQuery{Filter: "living/room1/status", Since: day0.Add(-7 * time.Hour), Until: day0.Add(48 * time.Hour), Step: time.Hour}},
		{"an unknown field", store.SeriesQuery{Filter: "#", Field: "nothing", Since: day0.Add(-7 * time.Hour), Until: day0.Add(48 * time.Hour), Step: time.Hour}},
		{"a filter matching nothing", store.SeriesQuery{Filter: "garden/+", Since: day0.Add(-7 * time.Hour), Until: day0.Add(48 * time.Hour), Step: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Series(ctx, tt.q)
			if err != nil {
				t.Fatalf("series: %v", err)
			}
			want := referenceSeries(msgs, tt.q)
			if diff := sameSeries(got, want); diff != "" {
				t.Error(diff)
			}
		})
	}
	// Spot checks the reference itself must pass.
	got, err := s.Series(ctx, store.SeriesQuery{Filter: "living/room2/temperature", Since: day0.Add(time.Hour), Until: day0.Add(time.Hour + time.Second), Step: time.Second})
	if err != nil || len(got) != 1 || len(got[0].Points) != 1 {
		t.Fatalf("two readings at one microsecond: %+v, %v, want one point", got, err)
	}
	if p := got[0].Points[0]; p.Count != 2 || p.Last != 31 || p.Min != 30 || p.Max != 31 || p.Avg != 30.5 || !p.Start.Equal(day0.Add(time.Hour)) {
		t.Errorf("two readings at one microsecond: %+v, want count 2, last 31 (the one stored later), avg 30.5", p)
	}
	got, err = s.Series(ctx, store.SeriesQuery{Filter: "living/room1/temperature", Since: day0.Add(-time.Minute), Until: day0.Add(time.Minute), Step: time.Minute})
	if err != nil || len(got) != 1 || len(got[0].Points) != 2 || got[0].Points[0].Last != 0 || got[0].Points[1].Min != -25 {
		t.Errorf("around midnight by the minute: %+v, %v, want 0 in the bucket before and -25 in the one at midnight", got, err)
	}
	fields := map[string]bool{}
	got, _ = s.Series(ctx, store.SeriesQuery{Filter: "devices/7/env", Since: all.Since, Until: all.Until, Step: time.Hour})
	for _, sr := range got {
		fields[sr.Field] = true
	}
	if len(fields) != 3 || !fields["temp"] || !fields["env.hum"] || !fields["env.co2.ppm"] {
		t.Errorf("fields of the object payload: %v, want temp, env.hum and env.co2.ppm", fields)
	}

	q := all
	q.MaxSeries = 3
	if _, err := s.Series(ctx, q); !errors.Is(err, store.ErrTooManySeries) {
		t.Errorf("6 series with MaxSeries 3: err %v, want ErrTooManySeries", err)
	}
	q.Filter, q.MaxSeries = "living/+/temperature", 3
	if _, err := s.Series(ctx, q); err != nil {
		t.Errorf("3 series with MaxSeries 3: %v", err)
	}
}

// testSeriesLarge checks the averages of huge values and the order of many
// readings in one bucket.
func testSeriesExtremes(t *testing.T, o Opener) {
	s := open(t, o)
	msgs := []store.Message{
		reading("x/big", "1.7976931348623157e308", day0),
		reading("x/big", "1.7976931348623157e308", day0.Add(time.Second)),
		reading("x/big", "1e400", day0.Add(2*time.Second)), // no value
		reading("x/tiny", "5e-324", day0),
		reading("x/tiny", "-0", day0.Add(time.Second)),
		reading("x/obj", `{"a": 1, "a": 2}`, day0),
	}
	mustInsert(t, s, msgs...)
	got, err := s.Series(context.Background(), store.SeriesQuery{Filter: "x/+", Since: day0, Until: day0.Add(time.Hour), Step: time.Hour})
	if err != nil {
		t.Fatalf("series: %v", err)
	}
	want := []store.Series{
		{Topic: "x/big", Field: "value", Points: []store.Point{{Start: day0, Count: 2, Avg: math.MaxFloat64, Min: math.MaxFloat64, Max: math.MaxFloat64, Last: math.MaxFloat64}}},
		{Topic: "x/obj", Field: "a", Points: []store.Point{{Start: day0, Count: 1, Avg: 2, Min: 2, Max: 2, Last: 2}}},
		{Topic: "x/tiny", Field: "value", Points: []store.Point{{Start: day0, Count: 2, Avg: 5e-324 / 2, Min: 0, Max: 5e-324, Last: 0}}},
	}
	if diff := sameSeries(got, want); diff != "" {
		t.Error(diff)
	}
}

// testSeriesDense stores readings a few a second, as a sensor sends them:
// commits that cross minute edges, a commit whose times go back before
// the one stored before it (a share group's members, a clock set back),
// readings of one microsecond in separate commits. Series, the newest
// value in Topics and retention that cuts a minute in two must all give
// what the rows say.
func testSeriesDense(t *testing.T, o Opener) {
	s := open(t, o)
	ctx := context.Background()
	start := day0.Add(-90 * time.Second).Add(123 * time.Microsecond)
	var msgs []store.Message
	for i := range 900 { // 4 a second for 225 s
		at := start.Add(time.Duration(i) * 250 * time.Millisecond)
		msgs = append(msgs, reading("dense/a", fmt.Sprintf(`{"v": %d, "w": %d.25}`, i%50, i%7), at))
	}
	// Back in time: readings among the first ones', stored after them,
	// some at the same microsecond as a stored one.
	for i := range 40 {
		at := start.Add(time.Duration(i*5) * time.Second)
		if i%2 == 1 {
			at = at.Add(17 * time.Millisecond)
		}
		msgs = append(msgs, reading("dense/a", fmt.Sprintf(`{"v": %d}`, 100+i), at))
	}
	// The newest microsecond twice, in two commits: the later one's value
	// is the newest.
	last := msgs[899].ReceivedAt
	msgs = append(msgs, reading("dense/a", `{"v": -1}`, last), reading("dense/a", `{"v": -2}`, last))
	for _, size := range []int{1, 333, 7, 200, 359, 40, 1, 1} {
		mustInsert(t, s, msgs[:size]...)
		msgs = msgs[size:]
	}
	stored := mustList(t, s, store.Query{Filter: "#", Limit: 10000})
	if len(stored) != 942 {
		t.Fatalf("%d rows stored, want 942", len(stored))
	}
	series := func(t *testing.T, kept []store.Message) {
		t.Helper()
		for _, q := range []store.SeriesQuery{
			{Filter: "dense/a", Since: start.Add(-time.Hour), Until: start.Add(time.Hour), Step: time.Second},
			{Filter: "dense/a", Since: start.Add(-time.Hour), Until: start.Add(time.Hour), Step: time.Minute},
			{Filter: "dense/a", Field: "v", Since: day0.Add(-time.Minute), Until: day0.Add(time.Minute + 250*time.Millisecond), Step: 7 * time.Second},
			{Filter: "dense/a", Since: day0.Add(-61 * time.Second), Until: day0.Add(-59 * time.Second), Step: time.Second},
		} {
			got, err := s.Series(ctx, q)
			if err != nil {
				t.Fatalf("series: %v", err)
			}
			if diff := sameSeries(got, referenceSeries(kept, q)); diff != "" {
				t.Errorf("%s %s from %s to %s by %s: %s", q.Filter, q.Field, q.Since.Format(time.RFC3339Nano), q.Until.Format(time.RFC3339Nano), q.Step, diff)
			}
		}
		tps, err := s.Topics(ctx, store.TopicQuery{Filter: "dense/a", Limit: 10})
		if err != nil || len(tps) != 1 {
			t.Fatalf("topics: %+v, %v", tps, err)
		}
		if got := fmt.Sprint(tps[0].Values); got != "[{v -2} {w 3.25}]" {
			t.Errorf("newest values %s, want [{v -2} {w 3.25}]", got)
		}
	}
	t.Run("stored", func(t *testing.T) { series(t, stored) })
	t.Run("retention cuts a minute", func(t *testing.T) {
		cutoff := day0.Add(-30*time.Second + 100*time.Millisecond)
		for {
			n, err := s.DeleteBefore(ctx, cutoff, 64)
			if err != nil {
				t.Fatalf("delete: %v", err)
			}
			if n == 0 {
				break
			}
		}
		var kept []store.Message
		for _, m := range stored {
			if !m.ReceivedAt.Before(cutoff) {
				kept = append(kept, m)
			}
		}
		if len(kept) == len(stored) || len(kept) == 0 {
			t.Fatalf("the cutoff keeps %d of %d rows", len(kept), len(stored))
		}
		series(t, kept)
	})
}

func testTopics(t *testing.T, o Opener) {
	s := open(t, o)
	ctx := context.Background()
	msgs := telemetry()
	insertInBatches(t, s, msgs)
	type want struct {
		count       int64
		first, last store.Message
		values      map[string]float64
	}
	expect := map[string]*want{}
	var names []string
	for _, m := range msgs {
		w := expect[m.Topic]
		if w == nil {
			w = &want{first: m, values: map[string]float64{}}
			expect[m.Topic] = w
			names = append(names, m.Topic)
		}
		w.count++
		w.last = m
	}
	// The newest value of each field: by time, then by id.
	newest := map[string]map[string][2]int64{}
	for _, m := range msgs {
		for _, v := range values.Extract(nil, m.Payload) {
			if newest[m.Topic] == nil {
				newest[m.Topic] = map[string][2]int64{}
			}
			at, id := m.ReceivedAt.UnixMicro(), m.ID
			if old, ok := newest[m.Topic][v.Field]; !ok || at > old[0] || at == old[0] && id > old[1] {
				newest[m.Topic][v.Field] = [2]int64{at, id}
				expect[m.Topic].values[v.Field] = v.Number
			}
		}
	}
	slices.Sort(names)
	check := func(t *testing.T, got []store.Topic, wantNames []string) {
		t.Helper()
		var gotNames []string
		for _, tp := range got {
			gotNames = append(gotNames, tp.Name)
		}
		if !equal(gotNames, wantNames) {
			t.Fatalf("topics %q, want %q", gotNames, wantNames)
		}
		for _, tp := range got {
			w := expect[tp.Name]
			if tp.Count != w.count || !tp.FirstAt.Equal(w.first.ReceivedAt) || !tp.LastAt.Equal(w.last.ReceivedAt) ||
				tp.Last.ID != w.last.ID || string(tp.Last.Payload) != string(w.last.Payload) || tp.Last.Topic != tp.Name {
				t.Errorf("%s: count %d, first %v, last %v (id %d %q), want %d, %v, %v (id %d %q)", tp.Name, tp.Count, tp.FirstAt, tp.LastAt,
					tp.Last.ID, tp.Last.Payload, w.count, w.first.ReceivedAt, w.last.ReceivedAt, w.last.ID, w.last.Payload)
			}
			got := map[string]float64{}
			for k, v := range tp.Values {
				got[v.Field] = v.Number
				if k > 0 && tp.Values[k-1].Field >= v.Field {
					t.Errorf("%s: values %v not by field", tp.Name, tp.Values)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(w.values) {
				t.Errorf("%s: values %v, want %v", tp.Name, tp.Values, w.values)
			}
		}
	}
	topicsOf := func(q store.TopicQuery) []store.Topic {
		t.Helper()
		if q.Limit == 0 {
			q.Limit = 1000
		}
		got, err := s.Topics(ctx, q)
		if err != nil {
			t.Fatalf("topics %+v: %v", q, err)
		}
		return got
	}
	t.Run("all", func(t *testing.T) { check(t, topicsOf(store.TopicQuery{Filter: "#"}), names) })
	t.Run("filter", func(t *testing.T) {
		check(t, topicsOf(store.TopicQuery{Filter: "living/+/temperature"}),
			[]string{"living/room1/temperature", "living/room2/temperature", "living/room3/temperature"})
		check(t, topicsOf(store.TopicQuery{Filter: "devices/7/env"}), []string{"devices/7/env"})
		check(t, topicsOf(store.TopicQuery{Filter: "garden/#"}), nil)
	})
	t.Run("pages", func(t *testing.T) {
		var seen []string
		after := ""
		for {
			page := topicsOf(store.TopicQuery{Filter: "#", After: after, Limit: 2})
			check(t, page, names[len(seen):len(seen)+len(page)])
			for _, tp := range page {
				seen = append(seen, tp.Name)
			}
			if len(page) < 2 {
				break
			}
			after = page[len(page)-1].Name
		}
		if !equal(seen, names) {
			t.Errorf("paged through %q, want %q", seen, names)
		}
	})
	t.Run("$ topics", func(t *testing.T) {
		// Filters that start with a wildcard leave names starting with
		// '$' out (MQTT 3.1.1 section 4.7.2); a literal '$' finds them.
		sys := reading("$SYS/broker/load", "1", day0.Add(-8*time.Hour)) // before every other row
		mustInsert(t, s, sys)
		defer func() {
			if n, err := s.DeleteBefore(ctx, day0.Add(-7*time.Hour), 1000); err != nil || n != 1 {
				t.Fatalf("delete the $SYS row: %d, %v", n, err)
			}
		}()
		for _, f := range []string{"#", "+/broker/load", "+/#"} {
			for _, tp := range topicsOf(store.TopicQuery{Filter: f}) {
				if strings.HasPrefix(tp.Name, "$") {
					t.Errorf("%s lists %s", f, tp.Name)
				}
			}
		}
		for _, f := range []string{"$SYS/#", "$SYS/+/load", "$SYS/broker/load"} {
			if got := topicsOf(store.TopicQuery{Filter: f}); len(got) != 1 || got[0].Name != sys.Topic || fmt.Sprint(got[0].Values) != "[{value 1}]" {
				t.Errorf("%s lists %+v, want %s", f, got, sys.Topic)
			}
		}
	})
	t.Run("byte budget", func(t *testing.T) {
		got := topicsOf(store.TopicQuery{Filter: "#", MaxBytes: 1})
		check(t, got, names[:1])
	})
	t.Run("retention", func(t *testing.T) {
		// Delete the first half of the rows: counts, first times and
		// values follow.
		cutoff := msgs[len(msgs)/2].ReceivedAt
		for {
			n, err := s.DeleteBefore(ctx, cutoff, 100)
			if err != nil {
				t.Fatalf("delete: %v", err)
			}
			if n < 100 {
				break
			}
		}
		var kept []store.Message
		for _, m := range msgs {
			if !m.ReceivedAt.Before(cutoff) {
				kept = append(kept, m)
			}
		}
		expect, names = map[string]*want{}, nil
		for _, m := range kept {
			w := expect[m.Topic]
			if w == nil {
				w = &want{first: m, values: map[string]float64{}}
				expect[m.Topic] = w
				names = append(names, m.Topic)
			}
			w.count++
			w.last = m
		}
		// The newest value of each field, by time and then id.
		byTime := slices.Clone(kept)
		slices.SortStableFunc(byTime, func(a, b store.Message) int { return a.ReceivedAt.Compare(b.ReceivedAt) })
		for _, m := range byTime {
			for _, v := range values.Extract(nil, m.Payload) {
				expect[m.Topic].values[v.Field] = v.Number
			}
		}
		slices.Sort(names)
		check(t, topicsOf(store.TopicQuery{Filter: "#"}), names)
		q := store.SeriesQuery{Filter: "#", Since: day0.Add(-7 * time.Hour), Until: day0.Add(48 * time.Hour), Step: time.Hour}
		got, err := s.Series(ctx, q)
		if err != nil {
			t.Fatalf("series: %v", err)
		}
		if diff := sameSeries(got, referenceSeries(kept, q)); diff != "" {
			t.Errorf("after retention: %s", diff)
		}
	})
}
