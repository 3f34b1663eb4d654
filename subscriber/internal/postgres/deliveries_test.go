package postgres

import (
	"context"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/pgtest"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/storetest"
)

// A database whose delivery records had a row each keeps every one of
// them in pages, as the SQL of the migration encodes them: Go decodes the
// same.
func TestMigrateDeliveriesIntoPages(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t)
	pool, _ := olderDatabase(t, url, pagesSchema)
	want := storetest.RowDeliveries()
	for client, ds := range want {
		if _, err := pool.Exec(ctx, `INSERT INTO sessions (client_id, epoch) VALUES ($1, 1)`, client); err != nil {
			t.Fatalf("insert session: %v", err)
		}
		for _, d := range ds {
			if _, err := pool.Exec(ctx, `INSERT INTO deliveries (client_id, packet_id, qos, conn, seq, message_id, hash, pending)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, client, int32(d.PacketID), int16(d.QoS), d.Conn, d.Seq, d.MessageID, int64(d.Hash), d.Pending); err != nil {
				t.Fatalf("insert delivery: %v", err)
			}
		}
	}
	pool.Close()
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	defer s.Close()
	storetest.CheckDeliveries(t, s, want)
}
