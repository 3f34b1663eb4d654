package sqlite

import (
	"context"
	"path/filepath"
	"testing"

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
func BenchmarkListPrefixFilter(b *testing.B) {
	storetest.BenchmarkList(b, openTemp, 20000, "site3/+/temperature")
}
func BenchmarkListAll(b *testing.B) { storetest.BenchmarkList(b, openTemp, 20000, "#") }
