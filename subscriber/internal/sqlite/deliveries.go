package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// pagesSchema moves the delivery records from a row each into pages
// (store.Page; its encoding, in SQL).
const pagesSchema = `CREATE TABLE delivery_pages (
		client_id TEXT    NOT NULL,
		page      INTEGER NOT NULL, -- packet id >> 4
		data      BLOB    NOT NULL, -- its records (store.Page.Encode)
		PRIMARY KEY (client_id, page)
	) WITHOUT ROWID;
	INSERT INTO delivery_pages (client_id, page, data)
		SELECT client_id, packet_id >> 4, unhex(group_concat(
			printf('%04x%02x%016x%016x%016x%016x', packet_id, qos + 4 * pending, conn, seq, message_id, hash),
			'' ORDER BY packet_id))
		FROM deliveries GROUP BY client_id, packet_id >> 4;
	DROP TABLE deliveries`

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
	nos := store.CommitPages(c)
	pages := make(map[int64]*store.Page, len(nos))
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
	return h.writePages(ctx, tx, c.ClientID, store.ApplyCommit(pages, c, ids), pages)
}

// readPages adds clientID's pages from first to last to pages.
func readPages(ctx context.Context, read *sql.Stmt, clientID string, first, last int64, pages map[int64]*store.Page) error {
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
		if pages[no], err = store.DecodePage(no, data); err != nil {
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
func (h *handles) writePages(ctx context.Context, tx *sql.Tx, clientID string, nos []int64, pages map[int64]*store.Page) error {
	args := make([]any, 0, chunkSizes[0]*pageColumns)
	buf := make([]byte, 0, min(len(nos), chunkSizes[0])*store.PageSize*store.RecordSize)
	for done := 0; done < len(nos); {
		k := 0
		for chunkSizes[k] > len(nos)-done {
			k++
		}
		n := chunkSizes[k]
		args, buf = args[:0], buf[:0]
		for _, no := range nos[done : done+n] {
			start := len(buf)
			buf = pages[no].Encode(buf)
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
	pages, _, err := allPages(ctx, tx, clientID)
	if err != nil {
		return err
	}
	changed, empty, oldest := store.ForgetVoid(pages, epoch, connected)
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
func allPages(ctx context.Context, q querier, clientID string) (map[int64]*store.Page, []int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT page, data FROM delivery_pages WHERE client_id = ? ORDER BY page`, clientID)
	if err != nil {
		return nil, nil, fmt.Errorf("read the delivery pages of %s: %w", clientID, err)
	}
	defer rows.Close()
	pages := map[int64]*store.Page{}
	var nos []int64
	for rows.Next() {
		var no int64
		var data []byte
		if err := rows.Scan(&no, &data); err != nil {
			return nil, nil, fmt.Errorf("read the delivery pages of %s: %w", clientID, err)
		}
		if pages[no], err = store.DecodePage(no, data); err != nil {
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
	var data []byte
	err := db.QueryRowContext(ctx, `SELECT data FROM delivery_pages WHERE client_id = ? AND page = ?`, clientID, store.PageOf(packetID)).Scan(&data)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Delivery{}, store.ErrNotFound
	case err != nil:
		return store.Delivery{}, fmt.Errorf("read delivery %d of %s: %w", packetID, clientID, err)
	}
	return store.Record(packetID, data)
}
