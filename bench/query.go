package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the driver the subscriber embeds
)

// queryFilter is the query of the table.
const queryFilter = "a/+/c"

// fillTopic is the topic of fill row i: 1000 topics site/device/metric
// (10 sites a..j, 25 devices, 4 metrics c..f), drawn at random so that
// matching rows are spread over the whole id range. a/+/c matches 25 of
// them, 2.5 % of the rows.
func fillTopic(r *rand.Rand) string {
	return fmt.Sprintf("%c/d%02d/%c", 'a'+r.IntN(10), r.IntN(25), 'c'+r.IntN(4))
}

// fillStore adds rows messages to the subscriber's SQLite file at path,
// which the subscriber has created (and migrated) and is not running on.
// Publishing a million messages through the broker would take longer than
// the whole run may; writing rows with the subscriber's own schema gives
// the query the same table and indexes. The rows are as the subscriber
// would have stored them over the last rows/20 seconds: QoS 1, a short
// text payload, received_at increasing with id.
func fillStore(ctx context.Context, path string, rows int) error {
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)")
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if err := checkColumns(ctx, db); err != nil {
		return err
	}
	const perStmt = 100
	cols := "(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id)"
	stmtSQL := "INSERT INTO messages " + cols + " VALUES " +
		strings.TrimSuffix(strings.Repeat("(?, ?, 1, 0, 0, ?, 'bench-fill', ?),", perStmt), ",")
	r := rand.New(rand.NewPCG(1, 2))
	first := time.Now().Add(-time.Duration(rows) * 50 * time.Millisecond)
	args := make([]any, 0, 4*perStmt)
	for done := 0; done < rows; {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		stmt, err := tx.PrepareContext(ctx, stmtSQL)
		if err != nil {
			return errors.Join(fmt.Errorf("prepare insert: %w", err), tx.Rollback())
		}
		for end := min(done+50_000, rows); done < end; {
			args = args[:0]
			for range perStmt {
				_, payload := sample("fill", done)
				at := first.Add(time.Duration(done) * 50 * time.Millisecond).UnixMicro()
				args = append(args, fillTopic(r), []byte(payload), at, done%65535+1)
				done++
			}
			if _, err := stmt.ExecContext(ctx, args...); err != nil {
				return errors.Join(fmt.Errorf("insert: %w", err), stmt.Close(), tx.Rollback())
			}
		}
		if err := errors.Join(stmt.Close(), tx.Commit()); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	if _, err := db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// checkColumns makes sure every NOT NULL column without a default is one
// the fill writes, so that a schema change fails here with a clear message
// rather than with a constraint error.
func checkColumns(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, "SELECT name, \"notnull\", dflt_value, pk FROM pragma_table_info('messages')")
	if err != nil {
		return fmt.Errorf("read schema: %w", err)
	}
	defer rows.Close()
	known := map[string]bool{"id": true, "topic": true, "payload": true, "qos": true, "retained": true,
		"duplicate": true, "received_at": true, "client_id": true, "packet_id": true}
	var n int
	for rows.Next() {
		var name string
		var notNull, pk int
		var dflt sql.NullString
		if err := rows.Scan(&name, &notNull, &dflt, &pk); err != nil {
			return fmt.Errorf("read schema: %w", err)
		}
		n++
		if notNull == 1 && !dflt.Valid && pk == 0 && !known[name] {
			return fmt.Errorf("messages has a required column %q the fill does not know", name)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read schema: %w", err)
	}
	if n == 0 {
		return errors.New("the subscriber's file has no messages table")
	}
	return nil
}

// queryLatency sends GET /messages?topic=a/+/c&limit=100 one at a time
// (latency, not throughput) for d or max requests, after a warm-up, and
// checks the first answer: 100 rows, each matching the filter.
func queryLatency(ctx context.Context, base string, d time.Duration, maxRequests int) (Latencies, error) {
	client := newClient(1)
	u := base + "/messages?topic=a/%2B/c&limit=100"
	b, err := get(ctx, client, u)
	if err != nil {
		return nil, err
	}
	var page struct {
		Messages []storedMessage `json:"messages"`
	}
	if err := json.Unmarshal(b, &page); err != nil {
		return nil, fmt.Errorf("decode messages: %w", err)
	}
	if len(page.Messages) != 100 {
		return nil, fmt.Errorf("query answered %d rows, want 100", len(page.Messages))
	}
	for _, m := range page.Messages {
		site, rest, _ := strings.Cut(m.Topic, "/")
		if site != "a" || !strings.HasSuffix(rest, "/c") || strings.Count(rest, "/") != 1 {
			return nil, fmt.Errorf("query answered topic %q for %s", m.Topic, queryFilter)
		}
	}
	for range 20 {
		if _, err := get(ctx, client, u); err != nil {
			return nil, err
		}
	}
	var lat Latencies
	deadline := time.Now().Add(d)
	for len(lat) < maxRequests && time.Now().Before(deadline) && ctx.Err() == nil {
		t := time.Now()
		if _, err := get(ctx, client, u); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t))
	}
	return lat, nil
}
