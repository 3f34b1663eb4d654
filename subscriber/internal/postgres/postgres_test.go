package postgres

import (
	"context"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/pgtest"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/storetest"
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
func BenchmarkListPrefixFilter(b *testing.B) {
	storetest.BenchmarkList(b, openFresh, 20000, "site3/+/temperature")
}
func BenchmarkListAll(b *testing.B) { storetest.BenchmarkList(b, openFresh, 20000, "#") }
