package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/storetest"
)

// A file whose delivery records had a row each keeps every one of them in
// pages, as the SQL of the migration encodes them: Go decodes the same.
func TestMigrateDeliveriesIntoPages(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "messages.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if err := migrate(ctx, db, migrations[:slices.Index(migrations, pagesSchema)]); err != nil {
		t.Fatalf("the schema before pages: %v", err)
	}
	want := storetest.RowDeliveries()
	for client, ds := range want {
		if _, err := db.ExecContext(ctx, `INSERT INTO sessions (client_id, epoch) VALUES (?, 1)`, client); err != nil {
			t.Fatalf("insert session: %v", err)
		}
		for _, d := range ds {
			if _, err := db.ExecContext(ctx, `INSERT INTO deliveries (client_id, packet_id, qos, conn, seq, message_id, hash, pending)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, client, int64(d.PacketID), int64(d.QoS), d.Conn, d.Seq, d.MessageID, int64(d.Hash), d.Pending); err != nil {
				t.Fatalf("insert delivery: %v", err)
			}
		}
	}
	storetest.CheckDeliveries(t, openMigrated(t, db, path), want)
}
