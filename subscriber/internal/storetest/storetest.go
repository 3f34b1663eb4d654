// Package storetest is the behaviour every store.Store must have, as one
// test suite and a few benchmarks that each adapter runs against its real
// backend.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// Opener returns a new, empty store; the suite closes it.
type Opener func(tb testing.TB) store.Store

// base is a fixed instant so that time filters are exact.
var base = time.Date(2026, 11, 24, 10, 0, 0, 123456000, time.UTC)

func msg(topic string, at time.Duration) store.Message {
	return store.Message{
		Topic: topic, Payload: []byte("p:" + topic), QoS: 1,
		ReceivedAt: base.Add(at), ClientID: "sub", PacketID: 1,
	}
}

func open(t *testing.T, o Opener) store.Store {
	t.Helper()
	s := o(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func mustInsert(t *testing.T, s store.Store, msgs ...store.Message) []store.Message {
	t.Helper()
	if err := s.Insert(context.Background(), msgs); err != nil {
		t.Fatalf("insert: %v", err)
	}
	return msgs
}

func mustList(t *testing.T, s store.Store, q store.Query) []store.Message {
	t.Helper()
	if q.Limit == 0 {
		q.Limit = 1000
	}
	got, err := s.List(context.Background(), q)
	if err != nil {
		t.Fatalf("list %+v: %v", q, err)
	}
	return got
}

func topics(msgs []store.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Topic
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Run runs the suite; open must return a fresh, empty store each call.
func Run(t *testing.T, o Opener) {
	t.Run("InsertSetsIncreasingIDs", func(t *testing.T) { testInsert(t, o) })
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, o) })
	t.Run("NewestFirst", func(t *testing.T) { testNewestFirst(t, o) })
	t.Run("Filter", func(t *testing.T) { testFilter(t, o) })
	t.Run("ManyTopics", func(t *testing.T) { testManyTopics(t, o) })
	t.Run("TimeRange", func(t *testing.T) { testTimeRange(t, o) })
	t.Run("Paging", func(t *testing.T) { testPaging(t, o) })
	t.Run("Bounds", func(t *testing.T) { testBounds(t, o) })
	t.Run("BatchIDs", func(t *testing.T) { testBatchIDs(t, o) })
	t.Run("Get", func(t *testing.T) { testGet(t, o) })
	t.Run("Session", func(t *testing.T) { testSession(t, o) })
	t.Run("SessionEpoch", func(t *testing.T) { testSessionEpoch(t, o) })
	t.Run("SessionModel", func(t *testing.T) { testSessionModel(t, o) })
	t.Run("SessionConnackBeside", func(t *testing.T) { testSessionConnackBeside(t, o) })
	t.Run("DeleteBefore", func(t *testing.T) { testDeleteBefore(t, o) })
	t.Run("Series", func(t *testing.T) { testSeries(t, o) })
	t.Run("SeriesExtremes", func(t *testing.T) { testSeriesExtremes(t, o) })
	t.Run("SeriesDense", func(t *testing.T) { testSeriesDense(t, o) })
	t.Run("Topics", func(t *testing.T) { testTopics(t, o) })
	t.Run("Ping", func(t *testing.T) {
		if err := open(t, o).Ping(context.Background()); err != nil {
			t.Errorf("ping: %v", err)
		}
	})
}

func testInsert(t *testing.T, o Opener) {
	s := open(t, o)
	if err := s.Insert(context.Background(), nil); err != nil {
		t.Fatalf("insert of nothing: %v", err)
	}
	a := mustInsert(t, s, msg("a", 0), msg("b", 0), msg("c", 0))
	b := mustInsert(t, s, msg("d", 0))
	ids := []int64{a[0].ID, a[1].ID, a[2].ID, b[0].ID}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Errorf("ids %v are not increasing", ids)
		}
	}
	if ids[0] <= 0 {
		t.Errorf("first id = %d, want > 0", ids[0])
	}
}

func testRoundTrip(t *testing.T, o Opener) {
	s := open(t, o)
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	in := []store.Message{
		{Topic: "bin/all", Payload: binary, QoS: 2, Retained: true, Duplicate: true,
			ReceivedAt: base, ClientID: "client-a", PacketID: 65535, BatchKey: -1 << 63},
		{Topic: "empty", Payload: []byte{}, QoS: 0, ReceivedAt: base.Add(time.Microsecond), ClientID: "client-a"},
		{Topic: "unicode/températüre/日本", Payload: []byte("21.5 °C"), QoS: 1,
			ReceivedAt: base.Add(time.Second), ClientID: "client-b", PacketID: 7},
	}
	mustInsert(t, s, in...)
	got := mustList(t, s, store.Query{Filter: "#"})
	if len(got) != len(in) {
		t.Fatalf("got %d messages, want %d", len(got), len(in))
	}
	for i, want := range in {
		g := got[len(got)-1-i]
		if g.ID != want.ID || g.Topic != want.Topic || !bytes.Equal(g.Payload, want.Payload) ||
			g.QoS != want.QoS || g.Retained != want.Retained || g.Duplicate != want.Duplicate ||
			!g.ReceivedAt.Equal(want.ReceivedAt) || g.ClientID != want.ClientID || g.PacketID != want.PacketID ||
			g.BatchKey != want.BatchKey {
			t.Errorf("got %+v,\nwant %+v", g, want)
		}
		if g.Payload == nil {
			t.Errorf("payload of %q is nil, want non-nil", g.Topic)
		}
		if g.ReceivedAt.Location() != time.UTC {
			t.Errorf("received_at of %q in %v, want UTC", g.Topic, g.ReceivedAt.Location())
		}
	}
}

func testNewestFirst(t *testing.T, o Opener) {
	s := open(t, o)
	for i := range 5 {
		mustInsert(t, s, msg(fmt.Sprintf("t/%d", i), time.Duration(i)*time.Second))
	}
	got := topics(mustList(t, s, store.Query{Filter: "#", Limit: 3}))
	if want := []string{"t/4", "t/3", "t/2"}; !equal(got, want) {
		t.Errorf("limit 3: got %v, want %v", got, want)
	}
}

func testFilter(t *testing.T, o Opener) {
	s := open(t, o)
	all := []string{
		"sport", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking",
		"sport/golf", "sport/", "sportx", "/finance", "finance", "$SYS/broker/load",
		"living/room1/temperature", "living/room2/temperature", "living/room1/humidity",
		"a/b%c", "a/b_c", "a/b.c", "a/b*c", "é/ü",
	}
	var in []store.Message
	for i, tp := range all {
		in = append(in, msg(tp, time.Duration(i)*time.Millisecond))
	}
	mustInsert(t, s, in...)
	// Results are newest first, i.e. the reverse of all's order.
	tests := []struct {
		filter string
		want   []string
	}{
		{"sport/#", []string{"sport/", "sport/golf", "sport/tennis/player1/ranking", "sport/tennis/player1", "sport/tennis", "sport"}},
		{"sport/+", []string{"sport/", "sport/golf", "sport/tennis"}},
		{"sport/tennis/+", []string{"sport/tennis/player1"}},
		{"+", []string{"finance", "sportx", "sport"}},
		{"+/+", []string{"é/ü", "a/b*c", "a/b.c", "a/b_c", "a/b%c", "/finance", "sport/", "sport/golf", "sport/tennis"}},
		{"+/room1/+", []string{"living/room1/humidity", "living/room1/temperature"}},
		{"+/room3/+", nil},
		{"living/+/temperature", []string{"living/room2/temperature", "living/room1/temperature"}},
		{"living/room1/#", []string{"living/room1/humidity", "living/room1/temperature"}},
		{"$SYS/#", []string{"$SYS/broker/load"}},
		{"+/broker/load", nil},
		{"a/b%c", []string{"a/b%c"}},
		{"a/b.c", []string{"a/b.c"}},
		{"a/+", []string{"a/b*c", "a/b.c", "a/b_c", "a/b%c"}},
		{"é/+", []string{"é/ü"}},
		{"sport", []string{"sport"}},
		{"nothing/#", nil},
	}
	for _, tt := range tests {
		got := topics(mustList(t, s, store.Query{Filter: tt.filter}))
		if !equal(got, tt.want) {
			t.Errorf("filter %q: got %q, want %q", tt.filter, got, tt.want)
		}
	}
	if got := mustList(t, s, store.Query{Filter: "#"}); len(got) != len(all)-1 {
		t.Errorf("filter #: got %d messages, want %d (all but $SYS)", len(got), len(all)-1)
	}
	// A topic first stored after a wildcard query is found by the next one.
	if got := topics(mustList(t, s, store.Query{Filter: "late/+"})); len(got) != 0 {
		t.Errorf("late/+ before: got %q, want none", got)
	}
	mustInsert(t, s, msg("late/a", time.Minute))
	if got, want := topics(mustList(t, s, store.Query{Filter: "late/+"})), []string{"late/a"}; !equal(got, want) {
		t.Errorf("late/+ after insert: got %q, want %q", got, want)
	}
}

// testManyTopics queries filters that match many distinct topics (more
// than a store may expand a filter to) and few, with limits and cursors,
// against the same rows filtered in Go.
func testManyTopics(t *testing.T, o Opener) {
	s := open(t, o)
	var in []store.Message
	for i := range 900 {
		// 300 topics under many/, interleaved with others.
		in = append(in, msg(fmt.Sprintf("many/%03d/%c", i%300, "xy"[i%2]), time.Duration(i)*time.Millisecond))
		in = append(in, msg(fmt.Sprintf("other/%d", i%7), time.Duration(i)*time.Millisecond))
	}
	mustInsert(t, s, in...)
	want := func(filter string, before int64, limit int) []int64 {
		var ids []int64
		for k := len(in) - 1; k >= 0 && len(ids) < limit; k-- {
			m := in[k]
			if (before == 0 || m.ID <= before) && matches(filter, m.Topic) {
				ids = append(ids, m.ID)
			}
		}
		return ids
	}
	mid := in[len(in)/2].ID
	tests := []struct {
		filter string
		before int64
		limit  int
	}{
		{"many/+/x", 0, 10},
		{"many/+/x", mid, 10},
		{"many/#", 0, 1000},
		{"many/+/y", mid, 3},
		{"many/007/+", 0, 100},
		{"+/007/x", 0, 2},
		{"+/+", mid, 20},
		{"many/+/z", 0, 10},
	}
	for _, tt := range tests {
		var got []int64
		for _, m := range mustList(t, s, store.Query{Filter: tt.filter, Before: tt.before, Limit: tt.limit}) {
			got = append(got, m.ID)
		}
		if w := want(tt.filter, tt.before, tt.limit); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("filter %q before %d limit %d: got ids %v, want %v", tt.filter, tt.before, tt.limit, got, w)
		}
	}
}

// matches is MQTT matching for the simple names of testManyTopics.
func matches(filter, name string) bool {
	f, n := strings.Split(filter, "/"), strings.Split(name, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(n) || l != "+" && l != n[i] {
			return false
		}
	}
	return len(f) == len(n)
}

func testTimeRange(t *testing.T, o Opener) {
	s := open(t, o)
	for i := range 5 {
		mustInsert(t, s, msg(fmt.Sprintf("t/%d", i), time.Duration(i)*time.Second))
	}
	tests := []struct {
		name         string
		since, until time.Time
		want         []string
	}{
		{"since inclusive", base.Add(3 * time.Second), time.Time{}, []string{"t/4", "t/3"}},
		{"until exclusive", time.Time{}, base.Add(2 * time.Second), []string{"t/1", "t/0"}},
		{"both", base.Add(time.Second), base.Add(3 * time.Second), []string{"t/2", "t/1"}},
		{"microsecond before", base.Add(2*time.Second - time.Microsecond), base.Add(2*time.Second + time.Microsecond), []string{"t/2"}},
		{"empty", base.Add(10 * time.Second), time.Time{}, nil},
	}
	for _, tt := range tests {
		got := topics(mustList(t, s, store.Query{Filter: "#", Since: tt.since, Until: tt.until}))
		if !equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// testPaging walks the pages the way the API does (before = last id - 1)
// while new messages arrive, and checks no row is skipped or repeated.
func testPaging(t *testing.T, o Opener) {
	s := open(t, o)
	var want []int64
	for i := range 23 {
		tp := "page/a"
		if i%3 == 0 {
			tp = "other"
		}
		m := mustInsert(t, s, msg(tp, time.Duration(i)*time.Second))
		if tp == "page/a" {
			want = append([]int64{m[0].ID}, want...)
		}
	}
	var got []int64
	before := int64(0)
	for page := 0; ; page++ {
		if page > 20 {
			t.Fatal("paging does not end")
		}
		msgs := mustList(t, s, store.Query{Filter: "page/#", Before: before, Limit: 4})
		for _, m := range msgs {
			got = append(got, m.ID)
		}
		if len(msgs) < 4 {
			break
		}
		before = msgs[len(msgs)-1].ID - 1
		// Newer rows must not disturb the pages still to come.
		mustInsert(t, s, msg("page/a", time.Hour))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("paged ids %v, want %v", got, want)
	}
}

// testBounds checks the id bounds, the order and the byte bound of a list
// against the rules computed from every row: rows in order while the
// payloads before them total less than MaxBytes, the first one always, and
// never more than Limit. Each filter takes another path through the stores
// (exact, expanded, walked).
func testBounds(t *testing.T, o Opener) {
	s := open(t, o)
	sizes := []int{10, 100, 1000, 0, 5, 300, 1}
	var all []store.Message // newest first
	for i := range 21 {
		m := msg([]string{"mb/a", "mb/b", "other"}[i%3], time.Duration(i)*time.Second)
		m.Payload = bytes.Repeat([]byte{'x'}, sizes[i%len(sizes)])
		all = append([]store.Message{mustInsert(t, s, m)[0]}, all...)
	}
	for _, filter := range []string{"mb/a", "mb/+", "mb/#", "#"} {
		for _, oldest := range []bool{false, true} {
			var matching []store.Message
			for _, m := range all {
				if matches(filter, m.Topic) {
					matching = append(matching, m)
				}
			}
			if oldest {
				slices.Reverse(matching)
			}
			for _, ids := range [][2]int64{{0, 0}, {all[4].ID, 0}, {0, all[16].ID}, {all[2].ID, all[15].ID}} {
				for _, limit := range []int{3, 1000} {
					for _, maxBytes := range []int64{0, 1, 10, 11, 150, 1115, 1 << 20} {
						q := store.Query{Filter: filter, Before: ids[0], After: ids[1], Limit: limit, MaxBytes: maxBytes, Oldest: oldest}
						var want []int64
						var total int64
						for _, m := range matching {
							if q.Before > 0 && m.ID > q.Before || m.ID <= q.After {
								continue
							}
							if len(want) == limit || maxBytes > 0 && total >= maxBytes {
								break
							}
							want = append(want, m.ID)
							total += int64(len(m.Payload))
						}
						var got []int64
						for _, m := range mustList(t, s, q) {
							got = append(got, m.ID)
						}
						if fmt.Sprint(got) != fmt.Sprint(want) {
							t.Errorf("%+v: ids %v, want %v", q, got, want)
						}
					}
				}
			}
		}
	}
}

// testBatchIDs checks that the rows of one Insert can be found by its key,
// which is how a writer settles a commit whose outcome it did not learn.
func testBatchIDs(t *testing.T, o Opener) {
	s := open(t, o)
	ctx := context.Background()
	keyed := func(key int64, topics ...string) []store.Message {
		var out []store.Message
		for _, tp := range topics {
			m := msg(tp, 0)
			m.BatchKey = key
			out = append(out, m)
		}
		return out
	}
	const k1, k2 = int64(0x5eed_0001), int64(-0x7fff_ffff_ffff_fff0) // keys use all 64 bits
	mustInsert(t, s, keyed(0, "old/a", "old/b")...)
	b1 := mustInsert(t, s, keyed(k1, "a", "b", "c")...)
	b2 := mustInsert(t, s, keyed(k2, "d")...)
	// Keyed or not, a row's topic is found by a wildcard.
	if got := mustList(t, s, store.Query{Filter: "#", Limit: 10}); len(got) != 6 {
		t.Errorf("# lists %d rows, want 6", len(got))
	}
	if got := mustList(t, s, store.Query{Filter: "+", Limit: 10}); len(got) != 4 {
		t.Errorf("+ lists %d rows, want a, b, c and d", len(got))
	}
	tests := []struct {
		name string
		key  int64
		want []store.Message
	}{
		{"three rows", k1, b1},
		{"one row, negative key", k2, b2},
		{"unknown key", 42, nil},
	}
	for _, tt := range tests {
		got, err := s.BatchIDs(ctx, tt.key, base)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		var want []int64
		for _, m := range tt.want {
			want = append(want, m.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: got ids %v, want %v", tt.name, got, want)
		}
	}
	// A later batch with its own key, far newer: found from its own time.
	late := keyed(k1+1, "e", "f")
	for k := range late {
		late[k].ReceivedAt = base.Add(time.Hour)
	}
	mustInsert(t, s, late...)
	if got, err := s.BatchIDs(ctx, k1+1, base.Add(time.Hour)); err != nil || fmt.Sprint(got) != fmt.Sprint([]int64{late[0].ID, late[1].ID}) {
		t.Errorf("batch found from its first arrival: got %v, %v, want [%d %d]", got, err, late[0].ID, late[1].ID)
	}
	if ids, err := s.BatchIDs(ctx, 0, base); !errors.Is(err, store.ErrNoBatchKey) {
		t.Errorf("key 0: got %v, %v, want ErrNoBatchKey", ids, err)
	}
}

func testGet(t *testing.T, o Opener) {
	s := open(t, o)
	in := mustInsert(t, s, msg("a", 0), msg("b", time.Second))
	got, err := s.Get(context.Background(), in[1].ID)
	if err != nil || got.ID != in[1].ID || got.Topic != "b" || string(got.Payload) != "p:b" {
		t.Errorf("Get(%d) = %+v, %v, want b", in[1].ID, got, err)
	}
	if _, err := s.Get(context.Background(), in[1].ID+100); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a missing id: err %v, want ErrNotFound", err)
	}
}

// testSession checks that a client's session state goes in with the
// messages of a Commit and comes back whole: upserts by packet id,
// releases, acknowledgement marks that only rise, session fields that only
// rise, the last batch key, and one client's state apart from another's.
func testSession(t *testing.T, o Opener) {
	s := open(t, o)
	ctx := context.Background()
	if ses, err := s.LoadSession(ctx, "a"); err != nil || ses.Attempted != 0 || len(ses.Deliveries) != 0 {
		t.Fatalf("unknown client: %+v, %v, want the zero session", ses, err)
	}
	c := &store.Commit{
		Messages: []store.Message{msg("x", 0), msg("y", 0)},
		ClientID: "a",
		Deliveries: []store.CommitDelivery{
			{Delivery: store.Delivery{PacketID: 1, QoS: 1, Conn: 3, Seq: 1, Hash: 1 << 63}, Message: 0},
			{Delivery: store.Delivery{PacketID: 2, QoS: 2, Conn: 3, Seq: 2, Hash: 42, Pending: true}, Message: 1},
			{Delivery: store.Delivery{PacketID: 65535, QoS: 2, Conn: 3, Seq: 3, MessageID: 99, Pending: true}, Message: -1},
		},
		Acked:     map[int64]int64{3: 1},
		Attempted: 3, Connected: 3, Epoch: 2,
	}
	if err := s.Commit(ctx, c); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if c.Messages[0].ID == 0 || c.Messages[1].ID <= c.Messages[0].ID {
		t.Fatalf("ids %d %d, want increasing", c.Messages[0].ID, c.Messages[1].ID)
	}
	// Another client's state does not mix in.
	if err := s.Commit(ctx, &store.Commit{ClientID: "b", Attempted: 9,
		Deliveries: []store.CommitDelivery{{Delivery: store.Delivery{PacketID: 1, QoS: 1, Conn: 9, Seq: 1}, Message: -1}}}); err != nil {
		t.Fatalf("commit of b: %v", err)
	}
	// Marks and fields only rise; an upsert replaces; a release clears
	// Pending.
	if err := s.Commit(ctx, &store.Commit{ClientID: "a",
		Deliveries: []store.CommitDelivery{{Delivery: store.Delivery{PacketID: 1, QoS: 1, Conn: 4, Seq: 7, MessageID: 5, Hash: 8}, Message: -1}},
		Released:   []uint16{2},
		Acked:      map[int64]int64{3: 0, 4: 6},
		Attempted:  4, Connected: 1, Uncertain: 2,
	}); err != nil {
		t.Fatalf("second commit: %v", err)
	}
	ses, err := s.LoadSession(ctx, "a")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	want := store.Session{Attempted: 4, Connected: 3, Epoch: 2, Uncertain: 2, Acked: map[int64]int64{3: 1, 4: 6}}
	if ses.Attempted != want.Attempted || ses.Connected != want.Connected || ses.Epoch != want.Epoch ||
		ses.Uncertain != want.Uncertain || fmt.Sprint(ses.Acked) != fmt.Sprint(want.Acked) {
		t.Errorf("session = %+v,\nwant %+v", ses, want)
	}
	byID := map[uint16]store.Delivery{}
	for _, d := range ses.Deliveries {
		byID[d.PacketID] = d
	}
	wantD := map[uint16]store.Delivery{
		1:     {PacketID: 1, QoS: 1, Conn: 4, Seq: 7, MessageID: 5, Hash: 8},
		2:     {PacketID: 2, QoS: 2, Conn: 3, Seq: 2, MessageID: c.Messages[1].ID, Hash: 42},
		65535: {PacketID: 65535, QoS: 2, Conn: 3, Seq: 3, MessageID: 99, Pending: true},
	}
	if len(byID) != len(wantD) {
		t.Errorf("deliveries %+v, want %+v", ses.Deliveries, wantD)
	}
	for id, w := range wantD {
		if byID[id] != w {
			t.Errorf("delivery %d = %+v, want %+v", id, byID[id], w)
		}
	}
	if d, err := s.Delivery(ctx, "a", 65535); err != nil || d != wantD[65535] {
		t.Errorf("Delivery(a, 65535) = %+v, %v, want %+v", d, err, wantD[65535])
	}
	if _, err := s.Delivery(ctx, "a", 9); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delivery(a, 9): %v, want ErrNotFound", err)
	}
	if ses, err := s.LoadSession(ctx, "b"); err != nil || ses.Attempted != 9 || len(ses.Deliveries) != 1 {
		t.Errorf("session of b = %+v, %v, want attempted 9 and one delivery", ses, err)
	}
}

// testSessionEpoch checks that a new broker session (a higher Epoch,
// recorded with Connected) voids the deliveries of earlier connections.
func testSessionEpoch(t *testing.T, o Opener) {
	s := open(t, o)
	ctx := context.Background()
	if err := s.Commit(ctx, &store.Commit{ClientID: "a", Attempted: 1, Connected: 1, Epoch: 1,
		Deliveries: []store.CommitDelivery{{Delivery: store.Delivery{PacketID: 1, QoS: 2, Conn: 1, Seq: 1, Pending: true}, Message: -1}},
		Acked:      map[int64]int64{1: 1}}); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := s.Commit(ctx, &store.Commit{ClientID: "a", Attempted: 2, Connected: 2, Epoch: 2}); err != nil {
		t.Fatalf("commit of the new session: %v", err)
	}
	ses, err := s.LoadSession(ctx, "a")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if ses.Epoch != 2 || len(ses.Deliveries) != 0 {
		t.Errorf("after a new session: epoch %d, deliveries %+v, want 2 and none", ses.Epoch, ses.Deliveries)
	}
}

func testDeleteBefore(t *testing.T, o Opener) {
	s := open(t, o)
	ctx := context.Background()
	for i := range 10 {
		mustInsert(t, s, msg(fmt.Sprintf("t/%d", i), time.Duration(i)*time.Second))
	}
	cutoff := base.Add(7 * time.Second)
	n, err := s.DeleteBefore(ctx, cutoff, 3)
	if err != nil || n != 3 {
		t.Fatalf("first batch: deleted %d, err %v, want 3 nil", n, err)
	}
	if got, want := topics(mustList(t, s, store.Query{Filter: "#"})), []string{"t/9", "t/8", "t/7", "t/6", "t/5", "t/4", "t/3"}; !equal(got, want) {
		t.Errorf("after first batch: got %v, want %v (oldest go first)", got, want)
	}
	total := n
	for {
		n, err := s.DeleteBefore(ctx, cutoff, 3)
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
		total += n
		if n < 3 {
			break
		}
	}
	if total != 7 {
		t.Errorf("deleted %d in all, want 7", total)
	}
	if got, want := topics(mustList(t, s, store.Query{Filter: "#"})), []string{"t/9", "t/8", "t/7"}; !equal(got, want) {
		t.Errorf("after retention: got %v, want %v", got, want)
	}
	// A topic whose rows all went is found again once it has a new one.
	mustInsert(t, s, msg("t/0", time.Hour))
	if got, want := topics(mustList(t, s, store.Query{Filter: "t/+"})), []string{"t/0", "t/9", "t/8", "t/7"}; !equal(got, want) {
		t.Errorf("after a deleted topic came back: got %v, want %v", got, want)
	}
}
