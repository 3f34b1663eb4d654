package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/backfill"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/storetest"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/values"
)

func openTemp(tb testing.TB) store.Store {
	tb.Helper()
	s, err := Open(context.Background(), filepath.Join(tb.TempDir(), "messages.db"))
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, openTemp)
}

func TestReopenKeepsSchemaAndRows(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "messages.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if err := s.Insert(ctx, []store.Message{{Topic: "a", Payload: []byte("x"), ClientID: "c"}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	got, err := s.List(ctx, store.Query{Filter: "#", Limit: 10})
	if err != nil || len(got) != 1 {
		t.Fatalf("after reopen: %d rows, err %v, want 1 nil", len(got), err)
	}
}

// Readers keep a page cache of readerCacheKiB and the writer SQLite's
// 2 MiB, unless CacheSize asks for another size for all of them.
func TestReaderCacheSize(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name           string
		opts           []Option
		writer, reader int
	}{
		{"default", nil, -2000, -readerCacheKiB},
		{"CacheSize", []Option{CacheSize(65536)}, -65536, -65536},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(ctx, filepath.Join(t.TempDir(), "messages.db"), tt.opts...)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			h := s.h.Load()
			for _, c := range []struct {
				db   *sql.DB
				name string
				want int
			}{{h.w, "writer", tt.writer}, {h.r, "reader", tt.reader}} {
				var got int
				if err := c.db.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&got); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if got != c.want {
					t.Errorf("%s cache_size = %d, want %d", c.name, got, c.want)
				}
			}
		})
	}
}

func BenchmarkInsertBatch100(b *testing.B)  { storetest.BenchmarkInsert(b, openTemp, 100) }
func BenchmarkInsertBatch500(b *testing.B)  { storetest.BenchmarkInsert(b, openTemp, 500) }
func BenchmarkInsertBatch2000(b *testing.B) { storetest.BenchmarkInsert(b, openTemp, 2000) }
func BenchmarkCommitBatch100(b *testing.B)  { storetest.BenchmarkCommit(b, openTemp, 100) }
func BenchmarkListWildcard(b *testing.B)    { storetest.BenchmarkList(b, openTemp, 200000, "a/+/c") }
func BenchmarkListAll(b *testing.B)         { storetest.BenchmarkList(b, openTemp, 200000, "#") }
func BenchmarkListExact(b *testing.B)       { storetest.BenchmarkList(b, openTemp, 200000, "a/d07/c") }

// A file made by the first schema keeps its rows, and what they say about
// packet ids becomes uncertain deliveries of connection 0: the newest row
// of each client and packet id, with QoS > 0.
func TestMigrateKeepsWhatRowsSayOfPacketIDs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "messages.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if err := migrate(ctx, db, migrations[:1]); err != nil {
		t.Fatalf("first schema: %v", err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO messages
		(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id) VALUES
		('old', x'', 1, 0, 0, 0, 'c', 1), ('newer', x'', 2, 0, 0, 0, 'c', 1), ('zero', x'', 0, 0, 0, 0, 'c', 0)`); err != nil {
		t.Fatalf("insert old rows: %v", err)
	}
	s := openMigrated(t, db, path)
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

// A file deleted or replaced under a running store is noticed: the commit
// that went into the old file reports store.ErrReset (nothing of it is
// where readers look), Ping fails once, and the next commit and every
// read use a new file at the same path.
func TestFileDeletedOrReplacedIsOpenedAgain(t *testing.T) {
	for _, how := range []string{"deleted", "replaced"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			path := filepath.Join(dir, "messages.db")
			s, err := Open(ctx, path)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			if err := s.Insert(ctx, []store.Message{{Topic: "before", Payload: []byte("x")}}); err != nil {
				t.Fatalf("insert: %v", err)
			}
			for _, f := range []string{path, path + "-wal", path + "-shm"} {
				if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
					t.Fatalf("remove %s: %v", f, err)
				}
			}
			if how == "replaced" {
				other, err := Open(ctx, path)
				if err != nil {
					t.Fatalf("create the replacement: %v", err)
				}
				if err := other.Insert(ctx, []store.Message{{Topic: "other", Payload: []byte("o")}}); err != nil {
					t.Fatalf("insert into the replacement: %v", err)
				}
				if err := other.Close(); err != nil {
					t.Fatalf("close the replacement: %v", err)
				}
			}
			err = s.Insert(ctx, []store.Message{{Topic: "lost", Payload: []byte("y")}})
			if !errors.Is(err, store.ErrReset) {
				t.Fatalf("insert after the file went: err %v, want ErrReset", err)
			}
			if err := s.Ping(ctx); err != nil {
				t.Errorf("ping after reopening: %v", err)
			}
			if err := s.Insert(ctx, []store.Message{{Topic: "after", Payload: []byte("z")}}); err != nil {
				t.Fatalf("insert into the new file: %v", err)
			}
			got, err := s.List(ctx, store.Query{Filter: "#", Limit: 10})
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			want := []string{"after"}
			if how == "replaced" {
				want = []string{"after", "other"}
			}
			var topics []string
			for _, m := range got {
				topics = append(topics, m.Topic)
			}
			if fmt.Sprint(topics) != fmt.Sprint(want) {
				t.Errorf("topics %v, want %v", topics, want)
			}
		})
	}
}

// Ping notices a deleted file by itself, opens the path again and then
// answers.
func TestPingNoticesDeletedFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "messages.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	if err := os.Remove(path); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrReset) {
		t.Fatalf("ping after delete: %v, want ErrReset", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ping after reopening: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the file was not created again: %v", err)
	}
}

// Rows written into the file by another program (an import, the bench
// harness's fill) are found by wildcard queries and counted once that
// program has run importedRows: Commit keeps the names and counts of its
// own rows, and no trigger does it row by row.
func TestRowsWrittenByOthersAreFound(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "messages.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	if err := s.Insert(ctx, []store.Message{{Topic: "import/own", Payload: []byte("o")}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `INSERT INTO messages
		(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id)
		VALUES ('import/a', x'', 1, 0, 0, 0, 'c', 1), ('import/b', x'', 1, 0, 0, 0, 'c', 2)`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if _, err := db.ExecContext(ctx, importedRows); err != nil {
		t.Fatalf("the import's step: %v", err)
	}
	got, err := s.List(ctx, store.Query{Filter: "import/+", Limit: 10})
	if err != nil || len(got) != 3 || got[0].Topic != "import/b" {
		t.Errorf("after: %+v, err %v, want import/b, import/a and import/own", got, err)
	}
	topics, err := s.Topics(ctx, store.TopicQuery{Filter: "import/+", Limit: 10})
	if err != nil || len(topics) != 3 {
		t.Fatalf("topics: %+v, err %v, want three", topics, err)
	}
	for _, tp := range topics {
		if tp.Count != 1 {
			t.Errorf("topic %s counted %d, want 1", tp.Name, tp.Count)
		}
	}
}

// A file of the previous schema: its topics are counted when it is
// migrated, and its rows get their values from FillValues.
func TestMigrateFillsValues(t *testing.T) {
	path, db, old := olderFile(t, valuesSchema)
	s := openMigrated(t, db, path)
	storetest.CheckFilled(t, s, old, 2)
}

// openMigrated closes db, the older version's handle on the file at path,
// and opens the file as a Store, which migrates it; the Store is closed
// when the test ends.
func openMigrated(t *testing.T, db *sql.DB, path string) *Store {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// olderFile makes a file migrated up to the migration before step and
// inserts storetest.Telemetry's messages as rows of that version (their
// ids set), without what else that version kept of them. The caller
// closes db.
func olderFile(t *testing.T, step string) (string, *sql.DB, []store.Message) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "messages.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if err := migrate(ctx, db, migrations[:slices.Index(migrations, step)]); err != nil {
		t.Fatalf("previous schema: %v", err)
	}
	old := storetest.Telemetry()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	for i := range old {
		m := &old[i]
		res, err := tx.ExecContext(ctx, `INSERT INTO messages
			(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id) VALUES (?, ?, 1, 0, 0, ?, 'c', 1)`,
			m.Topic, m.Payload, m.ReceivedAt.UnixMicro())
		if err != nil {
			t.Fatalf("insert old rows: %v", err)
		}
		if m.ID, err = res.LastInsertId(); err != nil {
			t.Fatalf("insert old rows: %v", err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit old rows: %v", err)
	}
	return path, db, old
}

// A file whose values had a row each: the migration drops them, and
// FillValues extracts them again into chunks.
func TestMigrateFillsValueChunks(t *testing.T) {
	ctx := context.Background()
	path, db, old := olderFile(t, chunksSchema)
	for _, m := range old {
		for _, v := range values.Extract(nil, m.Payload) {
			if _, err := db.ExecContext(ctx, `INSERT INTO series (topic, field) VALUES (?, ?) ON CONFLICT DO NOTHING`, m.Topic, v.Field); err != nil {
				t.Fatalf("insert old series: %v", err)
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO message_values (series_id, at, message_id, value)
				SELECT id, ?, ?, ? FROM series WHERE topic = ? AND field = ?`, m.ReceivedAt.UnixMicro(), m.ID, v.Number, m.Topic, v.Field); err != nil {
				t.Fatalf("insert old values: %v", err)
			}
		}
	}
	// As that version kept them: counted, and nothing left to fill.
	if _, err := db.ExecContext(ctx, recountTopics+`; UPDATE values_backfill SET next_id = last_id`); err != nil {
		t.Fatalf("count the old rows: %v", err)
	}
	s := openMigrated(t, db, path)
	storetest.CheckFilled(t, s, old, 2)
}

// Every query again with the values of a series handed on after each
// chunk read (readSeries), not only at the end.
func TestStoreSeriesWaitingOne(t *testing.T) {
	defer func(n int) { seriesWaiting = n }(seriesWaiting)
	seriesWaiting = 1
	storetest.Run(t, openTemp)
}

func BenchmarkSeriesDay(b *testing.B)   { storetest.BenchmarkSeries(b, openTemp, 200000, 1000) }
func BenchmarkTopics10000(b *testing.B) { storetest.BenchmarkTopics(b, openTemp, 100000, 10000) }

// BenchmarkFillValues measures FillValues over rows of a file of the
// previous schema, batch after batch without pauses.
func BenchmarkFillValues(b *testing.B) {
	ctx := context.Background()
	const rows = 50_000
	for b.Loop() {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "messages.db")
		db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)")
		if err != nil {
			b.Fatalf("open: %v", err)
		}
		if err := migrate(ctx, db, migrations[:len(migrations)-1]); err != nil {
			b.Fatalf("previous schema: %v", err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := range rows {
			if _, err := tx.ExecContext(ctx, `INSERT INTO messages (topic, payload, qos, retained, duplicate, received_at, client_id, packet_id)
				VALUES (?, ?, 1, 0, 0, ?, 'c', 1)`, fmt.Sprintf("t/%d", i%1000), fmt.Sprintf(`{"temp":%d.5,"hum":%d}`, i%30, i%50), i); err != nil {
				b.Fatal(err)
			}
		}
		if err := errors.Join(tx.Commit(), db.Close()); err != nil {
			b.Fatal(err)
		}
		s, err := Open(ctx, path)
		if err != nil {
			b.Fatalf("open: %v", err)
		}
		b.StartTimer()
		batches := 0
		for {
			n, left, err := s.FillValues(ctx, backfill.Batch)
			if err != nil {
				b.Fatal(err)
			}
			batches++
			if n == 0 && left == 0 {
				break
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(batches), "batches")
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkInsertText500(b *testing.B) {
	storetest.BenchmarkInsertPayload(b, openTemp, 500, []byte("seq=1234 value=21.5"))
}
