package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// pagesSchema moves the delivery records from a row each into pages
// (store.Page; its encoding, in SQL). A commit of 2,000 arrivals upserted
// 2,000 rows of deliveries, about 4 µs of the server's CPU a message; it
// now rewrites the about 125 pages they fall in. Half-filled pages, as
// deliveries had: a page is rewritten at every commit that touches it, and
// the new version stays on its page (HOT), the index untouched.
const pagesSchema = `CREATE TABLE delivery_pages (
		client_id text    NOT NULL,
		page      integer NOT NULL, -- packet id >> 4
		data      bytea   NOT NULL, -- its records (store.Page.Encode)
		PRIMARY KEY (client_id, page)
	) WITH (fillfactor = 50);
	INSERT INTO delivery_pages (client_id, page, data)
		SELECT client_id, packet_id >> 4, decode(string_agg(
			lpad(to_hex(packet_id), 4, '0') || lpad(to_hex(qos + CASE WHEN pending THEN 4 ELSE 0 END), 2, '0') ||
			lpad(to_hex(conn), 16, '0') || lpad(to_hex(seq), 16, '0') ||
			lpad(to_hex(message_id), 16, '0') || lpad(to_hex(hash), 16, '0'),
			'' ORDER BY packet_id), 'hex')
		FROM deliveries GROUP BY client_id, packet_id >> 4;
	DROP TABLE deliveries;`

// sessionPages reads, locked until the transaction ends, the pages c
// changes; with c.Connected, every page of the session, to forget what a
// new broker session voided (queueSession). The one writer of a session
// and a connection's CONNACK may commit at once: the lock keeps either
// from writing back a page the other changed.
// It also returns, with c.Connected, the session's epoch once c raised it.
func sessionPages(ctx context.Context, tx pgx.Tx, c *store.Commit) (map[int64]*store.Page, int64, error) {
	pages := map[int64]*store.Page{}
	if c.ClientID == "" || len(c.Deliveries) == 0 && len(c.Released) == 0 && c.Connected == 0 {
		return pages, 0, nil
	}
	var rows pgx.Rows
	var err error
	if c.Connected != 0 {
		rows, err = tx.Query(ctx, `SELECT page, data FROM delivery_pages WHERE client_id = $1 ORDER BY page FOR UPDATE`, c.ClientID)
	} else {
		nos := store.CommitPages(c)
		rows, err = tx.Query(ctx, `SELECT page, data FROM delivery_pages
			WHERE client_id = $1 AND page = ANY($2) ORDER BY page FOR UPDATE`, c.ClientID, nos)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read the delivery pages of %s: %w", c.ClientID, err)
	}
	var no int64
	var data []byte
	if _, err := pgx.ForEachRow(rows, []any{&no, &data}, func() error {
		p, err := store.DecodePage(no, data)
		pages[no] = p
		return err
	}); err != nil {
		return nil, 0, fmt.Errorf("read the delivery pages of %s: %w", c.ClientID, err)
	}
	var epoch int64
	if c.Connected != 0 {
		err := tx.QueryRow(ctx, `SELECT epoch FROM sessions WHERE client_id = $1`, c.ClientID).Scan(&epoch)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, 0, fmt.Errorf("read the epoch of %s: %w", c.ClientID, err)
		}
	}
	return pages, max(epoch, c.Epoch), nil
}

// queuePages queues c's deliveries and releases into pages (read by
// sessionPages), and with c.Connected the forgetting of the records of
// connections before the epoch and of the acknowledgement marks no record
// refers to any more; epoch is sessionPages'. ids are the ids of
// c.Messages.
func queuePages(b *pgx.Batch, c *store.Commit, ids []int64, pages map[int64]*store.Page, epoch int64) {
	write := store.ApplyCommit(pages, c, ids)
	var gone []int64
	var oldest int64
	if c.Connected != 0 {
		var changed []int64
		changed, gone, oldest = store.ForgetVoid(pages, epoch, c.Connected)
		write = slices.DeleteFunc(write, func(no int64) bool { return pages[no].Empty() })
		write = slices.Compact(slices.Sorted(slices.Values(append(write, changed...))))
	}
	if len(write) > 0 {
		data := make([][]byte, len(write))
		for k, no := range write {
			data[k] = pages[no].Encode(make([]byte, 0, store.PageSize*store.RecordSize))
		}
		b.Queue(`INSERT INTO delivery_pages (client_id, page, data)
			SELECT $1, unnest($2::integer[]), unnest($3::bytea[])
			ON CONFLICT (client_id, page) DO UPDATE SET data = excluded.data`, c.ClientID, write, data)
	}
	if len(gone) > 0 {
		b.Queue(`DELETE FROM delivery_pages WHERE client_id = $1 AND page = ANY($2)`, c.ClientID, gone)
	}
	if c.Connected != 0 {
		b.Queue(`DELETE FROM acked WHERE client_id = $1 AND conn < $2`, c.ClientID, oldest)
	}
}

// loadDeliveries reads clientID's records of connections from epoch on.
func (s *Store) loadDeliveries(ctx context.Context, clientID string, epoch int64) ([]store.Delivery, error) {
	rows, err := s.pool.Query(ctx, `SELECT page, data FROM delivery_pages WHERE client_id = $1 ORDER BY page`, clientID)
	if err != nil {
		return nil, err
	}
	var out []store.Delivery
	var no int64
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&no, &data}, func() error {
		p, err := store.DecodePage(no, data)
		if err != nil {
			return err
		}
		out = p.AppendSince(out, epoch)
		return nil
	})
	return out, err
}

// Delivery reads clientID's record of packetID.
func (s *Store) Delivery(ctx context.Context, clientID string, packetID uint16) (store.Delivery, error) {
	var data []byte
	err := s.pool.QueryRow(ctx, `SELECT data FROM delivery_pages WHERE client_id = $1 AND page = $2`, clientID, store.PageOf(packetID)).Scan(&data)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.Delivery{}, store.ErrNotFound
	case err != nil:
		return store.Delivery{}, fmt.Errorf("read delivery %d of %s: %w", packetID, clientID, err)
	}
	return store.Record(packetID, data)
}
