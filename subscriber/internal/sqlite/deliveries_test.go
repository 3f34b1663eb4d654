package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// A page's data decodes into its records and encodes back into the same
// bytes when they are in order, one per packet id; data that is not whole
// records of the page's ids is an error, never a panic.
func FuzzDecodePage(f *testing.F) {
	p := new(deliveryPage)
	p.set(store.Delivery{PacketID: 0x1230, QoS: 2, Conn: 3, Seq: 1 << 40, MessageID: 7, Hash: 1 << 63, Pending: true})
	p.set(store.Delivery{PacketID: 0x123f, QoS: 1, Conn: 1, Seq: 2, Hash: 42})
	f.Add(int64(0x123), p.encode(nil))
	f.Add(int64(0), []byte{})
	f.Add(int64(1), make([]byte, recordSize))
	f.Fuzz(func(t *testing.T, no int64, data []byte) {
		p, err := decodePage(no, data)
		if len(data)%recordSize != 0 {
			if err == nil {
				t.Fatalf("%d bytes decoded without error", len(data))
			}
			return
		}
		if err != nil {
			return
		}
		n := 0
		inOrder := true
		for i := 0; i+recordSize <= len(data); i += recordSize {
			if i > 0 && bytes.Compare(data[i:i+2], data[i-recordSize:i-recordSize+2]) <= 0 {
				inOrder = false
			}
			n++
		}
		back := p.encode(nil)
		if inOrder && !bytes.Equal(back, data) {
			t.Fatalf("encoded back %x, want %x", back, data)
		}
		again, err := decodePage(no, back)
		if err != nil || *again != *p {
			t.Fatalf("decoded again %+v, %v, want %+v", again, err, p)
		}
		if got := len(back) / recordSize; got > n {
			t.Fatalf("%d records from %d", got, n)
		}
	})
}

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
	want := map[string][]store.Delivery{
		"a": {
			{PacketID: 1, QoS: 1, Conn: 2, Seq: 9, MessageID: 11, Hash: 1 << 63},
			{PacketID: 2, QoS: 2, Conn: 2, Seq: 10, MessageID: 12, Hash: 42, Pending: true},
			{PacketID: 15, QoS: 2, Conn: 3, Seq: 1 << 40, Hash: 1<<64 - 1},
			{PacketID: 16, QoS: 1, Conn: 3, Seq: 2, MessageID: 1<<63 - 1, Hash: 5},
			{PacketID: 65535, QoS: 2, Conn: 3, Seq: 3, MessageID: 99, Pending: true},
		},
		"b": {{PacketID: 1, QoS: 1, Conn: 1, Seq: 1, MessageID: 1, Hash: 1}},
	}
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
	s := openMigrated(t, db, path)
	for client, ds := range want {
		ses, err := s.LoadSession(ctx, client)
		if err != nil {
			t.Fatalf("load session of %s: %v", client, err)
		}
		if len(ses.Deliveries) != len(ds) {
			t.Fatalf("session of %s: %+v, want %+v", client, ses.Deliveries, ds)
		}
		for i, d := range ds {
			if ses.Deliveries[i] != d {
				t.Errorf("delivery %d of %s = %+v, want %+v", i, client, ses.Deliveries[i], d)
			}
			if got, err := s.Delivery(ctx, client, d.PacketID); err != nil || got != d {
				t.Errorf("Delivery(%s, %d) = %+v, %v, want %+v", client, d.PacketID, got, err, d)
			}
		}
	}
}
