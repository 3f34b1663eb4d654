package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/storetest"
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

func BenchmarkInsertBatch100(b *testing.B) { storetest.BenchmarkInsert(b, openTemp, 100) }
func BenchmarkInsertBatch500(b *testing.B) { storetest.BenchmarkInsert(b, openTemp, 500) }
func BenchmarkListWildcard(b *testing.B)   { storetest.BenchmarkList(b, openTemp, 200000, "a/+/c") }
func BenchmarkListAll(b *testing.B)        { storetest.BenchmarkList(b, openTemp, 200000, "#") }
func BenchmarkListExact(b *testing.B)      { storetest.BenchmarkList(b, openTemp, 200000, "a/d07/c") }

// A file made by the first schema (no batch_key) keeps its rows, with key 0,
// and takes keyed batches after Open migrates it.
func TestMigrateAddsBatchKey(t *testing.T) {
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
		(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id)
		VALUES ('old', x'', 1, 0, 0, 0, 'c', 1)`); err != nil {
		t.Fatalf("insert old row: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	defer s.Close()
	old, err := s.List(ctx, store.Query{Filter: "#", Limit: 10})
	if err != nil || len(old) != 1 || old[0].BatchKey != 0 {
		t.Fatalf("old rows: %+v, err %v, want one row with key 0", old, err)
	}
	msgs := []store.Message{{Topic: "new", Payload: []byte("x"), ClientID: "c", BatchKey: 7}}
	if err := s.Insert(ctx, msgs); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if ids, err := s.BatchIDs(ctx, 7, time.Time{}); err != nil || len(ids) != 1 || ids[0] != msgs[0].ID {
		t.Errorf("BatchIDs(7) = %v, %v, want [%d]", ids, err, msgs[0].ID)
	}
}

// Rows written into the file by another program (an import, the bench
// harness's fill) are found by wildcard queries too: the topic names are
// kept by triggers, not by Insert.
func TestRowsWrittenByOthersAreFound(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "messages.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	if got, err := s.List(ctx, store.Query{Filter: "import/+", Limit: 10}); err != nil || len(got) != 0 {
		t.Fatalf("before: %d rows, err %v, want 0 nil", len(got), err)
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
	got, err := s.List(ctx, store.Query{Filter: "import/+", Limit: 10})
	if err != nil || len(got) != 2 || got[0].Topic != "import/b" {
		t.Errorf("after: %+v, err %v, want import/b and import/a", got, err)
	}
}
