package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// The delivery records of a session are kept in pages: a row of
// delivery_pages holds the records of the packet ids id>>pageBits = page
// (pageSize of them), as records of recordSize bytes in the order of their
// ids (deliveryPage.encode). A commit of 2,000 arrivals, whose ids the
// broker hands out in turn, rewrites about 125 rows instead of upserting
// 2,000 (docs/performance.md). The migration that made the table
// (pagesSchema) encodes the same way in SQL: keep the two alike.
const (
	pageBits   = 4
	pageSize   = 1 << pageBits
	recordSize = 2 + 1 + 4*8 // packet id, QoS and Pending, Conn, Seq, MessageID, Hash
)

// pagesSchema moves the delivery records from a row each into pages.
const pagesSchema = `CREATE TABLE delivery_pages (
		client_id TEXT    NOT NULL,
		page      INTEGER NOT NULL, -- packet id >> 4
		data      BLOB    NOT NULL, -- its records (deliveryPage.encode)
		PRIMARY KEY (client_id, page)
	) WITHOUT ROWID;
	INSERT INTO delivery_pages (client_id, page, data)
		SELECT client_id, packet_id >> 4, unhex(group_concat(
			printf('%04x%02x%016x%016x%016x%016x', packet_id, qos + 4 * pending, conn, seq, message_id, hash),
			'' ORDER BY packet_id))
		FROM deliveries GROUP BY client_id, packet_id >> 4;
	DROP TABLE deliveries`

// deliveryPage is the records of one page: slot i holds packet id
// page<<pageBits | i, when bit i of has is set.
type deliveryPage struct {
	has  uint16
	recs [pageSize]store.Delivery
}

func (p *deliveryPage) set(d store.Delivery) {
	i := d.PacketID & (pageSize - 1)
	p.has |= 1 << i
	p.recs[i] = d
}

func (p *deliveryPage) get(id uint16) (store.Delivery, bool) {
	i := id & (pageSize - 1)
	return p.recs[i], p.has&(1<<i) != 0
}

// each calls f with each record, in the order of packet ids.
func (p *deliveryPage) each(f func(d *store.Delivery)) {
	for has := p.has; has != 0; has &= has - 1 {
		f(&p.recs[bits.TrailingZeros16(has)])
	}
}

// encode appends the records to buf: each the packet id (2 bytes), QoS +
// 4 if Pending (1 byte), then Conn, Seq, MessageID and Hash (8 bytes each),
// big-endian.
func (p *deliveryPage) encode(buf []byte) []byte {
	p.each(func(d *store.Delivery) {
		flags := d.QoS
		if d.Pending {
			flags |= 4
		}
		buf = binary.BigEndian.AppendUint16(buf, d.PacketID)
		buf = append(buf, flags)
		buf = binary.BigEndian.AppendUint64(buf, uint64(d.Conn))
		buf = binary.BigEndian.AppendUint64(buf, uint64(d.Seq))
		buf = binary.BigEndian.AppendUint64(buf, uint64(d.MessageID))
		buf = binary.BigEndian.AppendUint64(buf, d.Hash)
	})
	return buf
}

// decodePage reads the records of page no from data.
func decodePage(no int64, data []byte) (*deliveryPage, error) {
	if len(data)%recordSize != 0 {
		return nil, fmt.Errorf("delivery page %d: %d bytes, not records of %d", no, len(data), recordSize)
	}
	p := new(deliveryPage)
	for ; len(data) > 0; data = data[recordSize:] {
		d := store.Delivery{
			PacketID:  binary.BigEndian.Uint16(data),
			QoS:       data[2] & 3,
			Pending:   data[2]&4 != 0,
			Conn:      int64(binary.BigEndian.Uint64(data[3:])),
			Seq:       int64(binary.BigEndian.Uint64(data[11:])),
			MessageID: int64(binary.BigEndian.Uint64(data[19:])),
			Hash:      binary.BigEndian.Uint64(data[27:]),
		}
		if int64(d.PacketID>>pageBits) != no || d.QoS > 2 || data[2] > 7 {
			return nil, fmt.Errorf("delivery page %d: a record of packet id %d, flags %d", no, d.PacketID, data[2])
		}
		p.set(d)
	}
	return p, nil
}

const pageColumns = 3

// pageWriteSQL writes rows pages.
func pageWriteSQL(rows int) string {
	return `INSERT OR REPLACE INTO delivery_pages (client_id, page, data) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?),", rows), ",")
}

// pageReadSQL reads a range of pages.
const pageReadSQL = `SELECT page, data FROM delivery_pages WHERE client_id = ? AND page BETWEEN ? AND ?`

// pageGap is how many pages no delivery of a commit touches that may lie
// between two that are read with one statement: reading them costs less
// than another statement.
const pageGap = 16

// writeDeliveries records c's deliveries and releases in the pages they
// fall in; ids are the ids of c.Messages.
func (h *handles) writeDeliveries(ctx context.Context, tx *sql.Tx, c *store.Commit, ids []int64) error {
	if len(c.Deliveries) == 0 && len(c.Released) == 0 {
		return nil
	}
	nos := make([]int64, 0, len(c.Deliveries)/pageSize+len(c.Released)+1)
	for _, d := range c.Deliveries {
		nos = append(nos, int64(d.PacketID>>pageBits))
	}
	for _, id := range c.Released {
		nos = append(nos, int64(id>>pageBits))
	}
	slices.Sort(nos)
	nos = slices.Compact(nos)
	pages := make(map[int64]*deliveryPage, len(nos))
	read := tx.StmtContext(ctx, h.pageRead)
	for i := 0; i < len(nos); {
		j := i
		for j+1 < len(nos) && nos[j+1]-nos[j] <= pageGap {
			j++
		}
		if err := readPages(ctx, read, c.ClientID, nos[i], nos[j], pages); err != nil {
			return err
		}
		i = j + 1
	}
	dirty := make(map[int64]bool, len(nos))
	for _, cd := range c.Deliveries {
		d := cd.Delivery
		if cd.Message >= 0 {
			d.MessageID = ids[cd.Message]
		}
		no := int64(d.PacketID >> pageBits)
		p := pages[no]
		if p == nil {
			p = new(deliveryPage)
			pages[no] = p
		}
		p.set(d)
		dirty[no] = true
	}
	for _, id := range c.Released {
		no := int64(id >> pageBits)
		if p := pages[no]; p != nil && p.has&(1<<(id&(pageSize-1))) != 0 {
			p.recs[id&(pageSize-1)].Pending = false
			dirty[no] = true
		}
	}
	var write []int64
	for _, no := range nos {
		if dirty[no] {
			write = append(write, no)
		}
	}
	return h.writePages(ctx, tx, c.ClientID, write, pages)
}

// readPages adds clientID's pages from first to last to pages.
func readPages(ctx context.Context, read *sql.Stmt, clientID string, first, last int64, pages map[int64]*deliveryPage) error {
	rows, err := read.QueryContext(ctx, clientID, first, last)
	if err != nil {
		return fmt.Errorf("read delivery pages %d to %d: %w", first, last, err)
	}
	defer rows.Close()
	for rows.Next() {
		var no int64
		var data []byte
		if err := rows.Scan(&no, &data); err != nil {
			return fmt.Errorf("read delivery pages %d to %d: %w", first, last, err)
		}
		if pages[no], err = decodePage(no, data); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read delivery pages %d to %d: %w", first, last, err)
	}
	return nil
}

// writePages writes clientID's pages nos, in chunks of the prepared
// statements.
func (h *handles) writePages(ctx context.Context, tx *sql.Tx, clientID string, nos []int64, pages map[int64]*deliveryPage) error {
	args := make([]any, 0, chunkSizes[0]*pageColumns)
	buf := make([]byte, 0, min(len(nos), chunkSizes[0])*pageSize*recordSize)
	for done := 0; done < len(nos); {
		k := 0
		for chunkSizes[k] > len(nos)-done {
			k++
		}
		n := chunkSizes[k]
		args, buf = args[:0], buf[:0]
		for _, no := range nos[done : done+n] {
			start := len(buf)
			buf = pages[no].encode(buf)
			args = append(args, clientID, no, buf[start:len(buf):len(buf)])
		}
		if _, err := tx.StmtContext(ctx, h.pageWrites[k]).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("write %d delivery pages: %w", n, err)
		}
		done += n
	}
	return nil
}

// forgetVoid drops clientID's records of connections before its epoch
// (a new broker session voided them) and the acknowledgement marks of
// connections no record refers to any more (or, with no record, before
// connected). It reads every page of the session: it runs once a
// connection.
func (h *handles) forgetVoid(ctx context.Context, tx *sql.Tx, clientID string, connected int64) error {
	var epoch int64
	if err := tx.QueryRowContext(ctx, `SELECT epoch FROM sessions WHERE client_id = ?`, clientID).Scan(&epoch); err != nil {
		return fmt.Errorf("read the epoch of %s: %w", clientID, err)
	}
	pages, nos, err := allPages(ctx, tx, clientID)
	if err != nil {
		return err
	}
	oldest, found := connected, false
	var empty, changed []int64
	for _, no := range nos {
		p := pages[no]
		before := p.has
		p.each(func(d *store.Delivery) {
			if d.Conn < epoch {
				p.has &^= 1 << (d.PacketID & (pageSize - 1))
			} else if !found || d.Conn < oldest {
				oldest, found = d.Conn, true
			}
		})
		switch {
		case p.has == 0:
			empty = append(empty, no)
		case p.has != before:
			changed = append(changed, no)
		}
	}
	for _, no := range empty {
		if _, err := tx.ExecContext(ctx, `DELETE FROM delivery_pages WHERE client_id = ? AND page = ?`, clientID, no); err != nil {
			return fmt.Errorf("forget delivery page %d: %w", no, err)
		}
	}
	if err := h.writePages(ctx, tx, clientID, changed, pages); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM acked WHERE client_id = ? AND conn < ?`, clientID, oldest); err != nil {
		return fmt.Errorf("forget acknowledgement marks: %w", err)
	}
	return nil
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// allPages reads every page of clientID's session, and their numbers in
// order.
func allPages(ctx context.Context, q querier, clientID string) (map[int64]*deliveryPage, []int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT page, data FROM delivery_pages WHERE client_id = ? ORDER BY page`, clientID)
	if err != nil {
		return nil, nil, fmt.Errorf("read the delivery pages of %s: %w", clientID, err)
	}
	defer rows.Close()
	pages := map[int64]*deliveryPage{}
	var nos []int64
	for rows.Next() {
		var no int64
		var data []byte
		if err := rows.Scan(&no, &data); err != nil {
			return nil, nil, fmt.Errorf("read the delivery pages of %s: %w", clientID, err)
		}
		if pages[no], err = decodePage(no, data); err != nil {
			return nil, nil, err
		}
		nos = append(nos, no)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read the delivery pages of %s: %w", clientID, err)
	}
	return pages, nos, nil
}

// delivery reads clientID's record of packetID.
func delivery(ctx context.Context, db *sql.DB, clientID string, packetID uint16) (store.Delivery, error) {
	no := int64(packetID >> pageBits)
	var data []byte
	err := db.QueryRowContext(ctx, `SELECT data FROM delivery_pages WHERE client_id = ? AND page = ?`, clientID, no).Scan(&data)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Delivery{}, store.ErrNotFound
	case err != nil:
		return store.Delivery{}, fmt.Errorf("read delivery %d of %s: %w", packetID, clientID, err)
	}
	p, err := decodePage(no, data)
	if err != nil {
		return store.Delivery{}, err
	}
	d, ok := p.get(packetID)
	if !ok {
		return store.Delivery{}, store.ErrNotFound
	}
	return d, nil
}
