package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

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
func BenchmarkListWildcard(b *testing.B)   { storetest.BenchmarkList(b, openFresh, 200000, "a/+/c") }
func BenchmarkListAll(b *testing.B)        { storetest.BenchmarkList(b, openFresh, 200000, "#") }
func BenchmarkListExact(b *testing.B)      { storetest.BenchmarkList(b, openFresh, 200000, "a/d07/c") }

// A database made by the first schema (no batch_key) keeps its rows, with
// key 0, and takes keyed batches after Open migrates it.
func TestMigrateAddsBatchKey(t *testing.T) {
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
		(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id)
		VALUES ('old', '', 1, false, false, now(), 'c', 1)`)
	pool.Close()
	if err != nil {
		t.Fatalf("insert old row: %v", err)
	}
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	defer s.Close()
	old, err := s.List(ctx, store.Query{Filter: "#", Limit: 10})
	if err != nil || len(old) != 1 || old[0].BatchKey != 0 {
		t.Fatalf("old rows: %+v, err %v, want one row with key 0", old, err)
	}
	msgs := []store.Message{{Topic: "new", Payload: []byte("x"), ClientID: "c", BatchKey: 7, ReceivedAt: time.Now()}}
	if err := s.Insert(ctx, msgs); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if ids, err := s.BatchIDs(ctx, 7, time.Time{}); err != nil || len(ids) != 1 || ids[0] != msgs[0].ID {
		t.Errorf("BatchIDs(7) = %v, %v, want [%d]", ids, err, msgs[0].ID)
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
