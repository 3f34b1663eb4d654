package postgres

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/pgtest"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/storetest"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/values"
)

func openFresh(tb testing.TB) store.Store {
	tb.Helper()
	s, err := Open(context.Background(), pgtest.Database(tb))
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, openFresh)
}

func TestOpenTwiceMigratesOnce(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	for range 2 {
		s, err := Open(ctx, url)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if err := s.Ping(ctx); err != nil {
			t.Errorf("ping: %v", err)
		}
		s.Close()
	}
}

func BenchmarkInsertBatch100(b *testing.B) { storetest.BenchmarkInsert(b, openFresh, 100) }
func BenchmarkInsertBatch500(b *testing.B) { storetest.BenchmarkInsert(b, openFresh, 500) }
func BenchmarkCommitBatch100(b *testing.B) { storetest.BenchmarkCommit(b, openFresh, 100) }
func BenchmarkListWildcard(b *testing.B)   { storetest.BenchmarkList(b, openFresh, 200000, "a/+/c") }
func BenchmarkListAll(b *testing.B)        { storetest.BenchmarkList(b, openFresh, 200000, "#") }
func BenchmarkListExact(b *testing.B)      { storetest.BenchmarkList(b, openFresh, 200000, "a/d07/c") }

// A database made by the first schema keeps its rows, and what they say
// about packet ids becomes uncertain deliveries of connection 0: the newest
// row of each client and packet id, with QoS > 0.
func TestMigrateKeepsWhatRowsSayOfPacketIDs(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if err := migrate(ctx, pool, migrations[:1]); err != nil {
		pool.Close()
		t.Fatalf("first schema: %v", err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO messages
		(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id) VALUES
		('old', '', 1, false, false, now(), 'c', 1), ('newer', '', 2, false, false, now(), 'c', 1),
		('zero', '', 0, false, false, now(), 'c', 0)`)
	pool.Close()
	if err != nil {
		t.Fatalf("insert old rows: %v", err)
	}
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	defer s.Close()
	old, err := s.List(ctx, store.Query{Filter: "#", Limit: 10})
	if err != nil || len(old) != 3 {
		t.Fatalf("old rows: %+v, err %v, want 3", old, err)
	}
	ses, err := s.LoadSession(ctx, "c")
	if err != nil {
		t.Fatalf("load session: %v", err)
	}
	want := store.Delivery{PacketID: 1, QoS: 2, Conn: 0, Seq: 0, MessageID: old[1].ID}
	if ses.Uncertain != 1 || len(ses.Deliveries) != 1 || ses.Deliveries[0] != want {
		t.Errorf("session %+v, want uncertain 1 and the one delivery %+v", ses, want)
	}
}

// A database dropped and created again under a running store: commits fail
// while it is gone, the first one after finds no schema, creates it again
// and reports store.ErrReset, and the next one is stored.
func TestDatabaseDroppedAndCreatedAgain(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	msg := func(topic string) []store.Message {
		return []store.Message{{Topic: topic, Payload: []byte("x"), ReceivedAt: time.Now()}}
	}
	if err := s.Insert(ctx, msg("before")); err != nil {
		t.Fatalf("insert: %v", err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	name := cfg.ConnConfig.Database
	admin, err := pgx.Connect(ctx, pgtest.Server())
	if err != nil {
		t.Fatalf("connect admin: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
		t.Fatalf("drop: %v", err)
	}
	if err := s.Insert(ctx, msg("while gone")); err == nil {
		t.Fatalf("insert while the database is gone succeeded")
	}
	if err := s.Ping(ctx); err == nil {
		t.Errorf("ping while the database is gone succeeded")
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create: %v", err)
	}
	var last error
	for range 20 {
		if last = s.Insert(ctx, msg("lost")); errors.Is(last, store.ErrReset) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !errors.Is(last, store.ErrReset) {
		t.Fatalf("insert into the new database: %v, want ErrReset", last)
	}
	if err := s.Insert(ctx, msg("after")); err != nil {
		t.Fatalf("insert after the schema came back: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("ping: %v", err)
	}
	got, err := s.List(ctx, store.Query{Filter: "#", Limit: 10})
	if err != nil || len(got) != 1 || got[0].Topic != "after" {
		t.Errorf("rows %+v, err %v, want only after", got, err)
	}
}

// A member stalled inside its insert transaction holds up every member
// (orderTrigger), so the server ends such a transaction after a while;
// the database URL may say how long.
func TestIdleTransactionTimeout(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	for _, tt := range []struct{ url, want string }{
		{url, "10s"},
		{url + "&idle_in_transaction_session_timeout=1min", "1min"},
	} {
		s, err := Open(ctx, tt.url)
		if err != nil {
			t.Fatalf("open %s: %v", tt.url, err)
		}
		var got string
		err = s.pool.QueryRow(ctx, "SHOW idle_in_transaction_session_timeout").Scan(&got)
		s.Close()
		if err != nil || got != tt.want {
			t.Errorf("%s: idle_in_transaction_session_timeout %q, %v; want %q", tt.url, got, err, tt.want)
		}
	}
}

// A database of the previous schema: its topics are counted when it is
// migrated, and its rows get their values from FillValues, which two
// members of a share group run at once.
func TestMigrateFillsValues(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	// The schema before the values.
	pool, old := olderDatabase(t, url, valuesSchema)
	// As the previous version kept them.
	if _, err := pool.Exec(ctx, `INSERT INTO topics (name) SELECT DISTINCT topic FROM messages`); err != nil {
		pool.Close()
		t.Fatalf("topics of the old rows: %v", err)
	}
	pool.Close()
	a, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	defer a.Close()
	b, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("open a second member: %v", err)
	}
	defer b.Close()
	storetest.CheckFilled(t, twoMembers{a, b}, old, 4)
}

// The values stored a row each before the chunks are in chunks after the
// migration, and read the same.
func TestMigrateMovesValuesIntoChunks(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	pool, old := olderDatabase(t, url, chunksSchema)
	n := 0
	for _, m := range old {
		// As the previous version stored them: a row a value.
		for _, v := range values.Extract(nil, m.Payload) {
			_, err := pool.Exec(ctx, `WITH s AS (INSERT INTO series (topic, field) VALUES ($1, $2)
					ON CONFLICT (topic, field) DO UPDATE SET field = excluded.field RETURNING id)
				INSERT INTO message_values (series_id, at, message_id, value) SELECT id, $3, $4, $5 FROM s`,
				m.Topic, v.Field, m.ReceivedAt, m.ID, v.Number)
			if err != nil {
				pool.Close()
				t.Fatalf("insert old values: %v", err)
			}
			n++
		}
	}
	// As that version kept them: counted, and nothing left to fill.
	if _, err := pool.Exec(ctx, `INSERT INTO topics (name, count, first_id, first_at, last_id, last_at)
		SELECT topic, count(*), min(id), min(received_at), max(id), max(received_at) FROM messages GROUP BY topic;
		UPDATE values_backfill SET next_id = last_id`); err != nil {
		pool.Close()
		t.Fatalf("backfill done: %v", err)
	}
	pool.Close()
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	defer s.Close()
	var chunks, inChunks int
	if err := s.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(cardinality(ats)), 0) FROM value_chunks`).Scan(&chunks, &inChunks); err != nil {
		t.Fatalf("count chunks: %v", err)
	}
	if inChunks != n || chunks == 0 || chunks >= n {
		t.Errorf("%d values in %d chunks, want the %d stored before in fewer chunks", inChunks, chunks, n)
	}
	storetest.CheckSeries(t, s, old)
	// The newest value of each field, by time and then id.
	want := map[string]float64{}
	newest := map[string][2]int64{}
	for _, m := range old {
		for _, v := range values.Extract(nil, m.Payload) {
			k, at := m.Topic+" "+v.Field, m.ReceivedAt.UnixMicro()
			if n, ok := newest[k]; !ok || at > n[0] || at == n[0] && m.ID > n[1] {
				newest[k], want[k] = [2]int64{at, m.ID}, v.Number
			}
		}
	}
	tps, err := s.Topics(ctx, store.TopicQuery{Filter: "#", Limit: 100})
	if err != nil {
		t.Fatalf("topics: %v", err)
	}
	got := map[string]float64{}
	for _, tp := range tps {
		for _, v := range tp.Values {
			got[tp.Name+" "+v.Field] = v.Number
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("newest values %v, want %v", got, want)
	}
}

// olderDatabase migrates the database at url up to the migration before
// step and inserts storetest.Telemetry's messages as rows of that version
// (their ids set), without what else that version kept of them.
func olderDatabase(t *testing.T, url, step string) (*pgxpool.Pool, []store.Message) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := migrate(ctx, pool, migrations[:slices.Index(migrations, step)]); err != nil {
		t.Fatalf("previous schema: %v", err)
	}
	old := storetest.Telemetry()
	for i := range old {
		m := &old[i]
		err := pool.QueryRow(ctx, `INSERT INTO messages
			(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id) VALUES ($1, $2, 1, false, false, $3, 'c', 1) RETURNING id`,
			m.Topic, m.Payload, m.ReceivedAt).Scan(&m.ID)
		if err != nil {
			t.Fatalf("insert old rows: %v", err)
		}
	}
	return pool, old
}

// twoMembers is one store whose FillValues calls alternate between two
// members of a group.
type twoMembers struct {
	*Store
	other *Store
}

var turn atomic.Int64

func (m twoMembers) FillValues(ctx context.Context, limit int) (int, int64, error) {
	if turn.Add(1)%2 == 0 {
		return m.other.FillValues(ctx, limit)
	}
	return m.Store.FillValues(ctx, limit)
}

func BenchmarkSeriesDay(b *testing.B)   { storetest.BenchmarkSeries(b, openFresh, 200000, 1000) }
func BenchmarkTopics10000(b *testing.B) { storetest.BenchmarkTopics(b, openFresh, 100000, 10000) }

// A member of a group whose schema another member created again (after the
// database was dropped) holds series ids of the old table: its next commit
// of values fails rather than file them under another series, and the one
// after looks the series up again.
func TestSeriesIDsOfARecreatedSchema(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	a, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer a.Close()
	b, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer b.Close()
	at := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	reading := func(topic, payload string, sec int) []store.Message {
		return []store.Message{{Topic: topic, Payload: []byte(payload), ReceivedAt: at.Add(time.Duration(sec) * time.Second), ClientID: "c"}}
	}
	if err := a.Insert(ctx, reading("x", "1", 0)); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if _, err := a.pool.Exec(ctx, "DROP SCHEMA public CASCADE; CREATE SCHEMA public"); err != nil {
		t.Fatalf("drop the schema: %v", err)
	}
	if err := b.Ping(ctx); !errors.Is(err, store.ErrReset) {
		t.Fatalf("ping of the other member: %v, want ErrReset", err)
	}
	if err := b.Insert(ctx, reading("y", "2", 1)); err != nil {
		t.Fatalf("insert by the other member: %v", err)
	}
	if err := a.Insert(ctx, reading("x", "3", 2)); !errors.Is(err, errStaleSeries) {
		t.Fatalf("insert with the old ids: %v, want errStaleSeries", err)
	}
	if err := a.Insert(ctx, reading("x", "3", 2)); err != nil {
		t.Fatalf("insert again: %v", err)
	}
	got, err := a.Series(ctx, store.SeriesQuery{Filter: "#", Since: at, Until: at.Add(time.Minute), Step: time.Minute})
	if err != nil {
		t.Fatalf("series: %v", err)
	}
	if len(got) != 2 || got[0].Topic != "x" || got[0].Points[0].Count != 1 || got[0].Points[0].Last != 3 ||
		got[1].Topic != "y" || got[1].Points[0].Count != 1 || got[1].Points[0].Last != 2 {
		t.Errorf("series %+v, want x with 3 and y with 2", got)
	}
}

func BenchmarkInsertText500(b *testing.B) {
	storetest.BenchmarkInsertPayload(b, openFresh, 500, []byte("seq=1234 value=21.5"))
}

// The rewrite of a page of delivery records is a heap-only update: the
// primary key is not written again at every commit.
func TestDeliveryUpsertsAreHeapOnly(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	const ids, rounds = 500, 3
	for r := range rounds {
		c := &store.Commit{ClientID: "sub"}
		for id := range ids {
			seq := int64(r*ids + id + 1)
			c.Messages = append(c.Messages, store.Message{Topic: "t", Payload: []byte("x"), QoS: 1,
				ReceivedAt: time.Now(), ClientID: "sub", PacketID: uint16(id + 1)})
			c.Deliveries = append(c.Deliveries, store.CommitDelivery{Message: id, Delivery: store.Delivery{
				PacketID: uint16(id + 1), QoS: 1, Conn: 1, Seq: seq, Hash: uint64(seq)}})
		}
		if err := s.Commit(ctx, c); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	// A backend reports its counts when it ends, else up to 10 s after it
	// goes idle.
	s.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	pages := store.PageOf(ids) + 1 // those of ids 1 to ids
	var upd, hot int64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err := conn.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
			WHERE relname = 'delivery_pages'`).Scan(&upd, &hot); err != nil {
			t.Fatalf("read statistics: %v", err)
		}
		if upd >= (rounds-1)*pages {
			break
		}
	}
	if upd < (rounds-1)*pages || hot < upd*9/10 {
		t.Errorf("%d updates of delivery pages, %d of them heap-only; want %d, at least 90 %% heap-only", upd, hot, (rounds-1)*pages)
	}
}
