package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
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

// Topics of the fill beyond fillTopic's 1,000: one row each, so that GET
// /topics lists 10,000.
const extraTopics = 9000

// seriesTopic is the topic of the series query; fill counts its rows.
const seriesTopic = "a/d07/c"

// fillPayload is the payload of fill row i: a JSON object with two numbers
// (the fields temp and hum), as a device reports its readings.
func fillPayload(i int) []byte {
	return fmt.Appendf(nil, `{"temp":%d.%d,"hum":%d}`, 15+i%11, i%10, 30+i%41)
}

// fill is what fillStore wrote: where the rows' times begin and end, and
// how many rows seriesTopic has.
type fill struct {
	first, last time.Time
	seriesRows  int
}

// fillStore adds rows messages, and one message to each of extraTopics
// more topics, to the subscriber's SQLite file at path, which the
// subscriber has created (and migrated) and is not running on. Publishing
// a million messages through the broker would take longer than the whole
// run may; writing rows with the subscriber's own schema gives the queries
// the same table and indexes (its triggers keep the topic names; the fill
// counts the topics itself, as the subscriber's commits do). The rows are as the subscriber would have stored them over the
// last day: QoS 1, a JSON payload of two numbers, received_at increasing
// with id. Their values are left to the subscriber to extract, as it does
// for a database of an earlier version: fillStore sets the backfill's
// range to every row.
func fillStore(ctx context.Context, path string, rows int) (fill, error) {
	var f fill
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)")
	if err != nil {
		return f, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if err := checkColumns(ctx, db); err != nil {
		return f, err
	}
	const perStmt = 100
	cols := "(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id)"
	stmtSQL := "INSERT INTO messages " + cols + " VALUES " +
		strings.TrimSuffix(strings.Repeat("(?, ?, 1, 0, 0, ?, 'bench-fill', ?),", perStmt), ",")
	r := rand.New(rand.NewPCG(1, 2))
	total := rows + extraTopics
	f.last = time.Now().Truncate(time.Second)
	f.first = f.last.Add(-24 * time.Hour)
	every := 24 * time.Hour / time.Duration(total)
	args := make([]any, 0, 4*perStmt)
	for done := 0; done < total; {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return f, fmt.Errorf("begin: %w", err)
		}
		stmt, err := tx.PrepareContext(ctx, stmtSQL)
		if err != nil {
			return f, errors.Join(fmt.Errorf("prepare insert: %w", err), tx.Rollback())
		}
		for end := min(done+50_000, total); done < end; {
			args = args[:0]
			for range perStmt {
				topic := fillTopic(r)
				// The extra topics' rows are spread among the others.
				if k := done * extraTopics / total; (done+1)*extraTopics/total != k {
					topic = fmt.Sprintf("z/t%04d", k)
				} else if topic == seriesTopic {
					f.seriesRows++
				}
				at := f.first.Add(time.Duration(done) * every).UnixMicro()
				args = append(args, topic, fillPayload(done), at, done%65535+1)
				done++
				if done == total {
					break
				}
			}
			if len(args) < 4*perStmt {
				break // the last statement is short: written below
			}
			if _, err := stmt.ExecContext(ctx, args...); err != nil {
				return f, errors.Join(fmt.Errorf("insert: %w", err), stmt.Close(), tx.Rollback())
			}
			args = args[:0]
		}
		if len(args) > 0 {
			short := "INSERT INTO messages " + cols + " VALUES " +
				strings.TrimSuffix(strings.Repeat("(?, ?, 1, 0, 0, ?, 'bench-fill', ?),", len(args)/4), ",")
			if _, err := tx.ExecContext(ctx, short, args...); err != nil {
				return f, errors.Join(fmt.Errorf("insert: %w", err), stmt.Close(), tx.Rollback())
			}
		}
		if err := errors.Join(stmt.Close(), tx.Commit()); err != nil {
			return f, fmt.Errorf("commit: %w", err)
		}
	}
	// As an import must: the subscriber names and counts the topics of what
	// it commits itself (importedRows in its sqlite package).
	if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO topics (name) SELECT DISTINCT topic FROM messages;
	UPDATE topics SET (count, first_id, last_id) =
		(SELECT count(*), min(id), max(id) FROM messages WHERE topic = topics.name);
	UPDATE topics SET first_at = (SELECT received_at FROM messages WHERE id = topics.first_id),
		last_at = (SELECT received_at FROM messages WHERE id = topics.last_id)`); err != nil {
		return f, fmt.Errorf("count the topics: %w", err)
	}
	if _, err := db.ExecContext(ctx, "UPDATE values_backfill SET next_id = 0, last_id = (SELECT max(id) FROM messages)"); err != nil {
		return f, fmt.Errorf("hand the rows to the backfill (does the subscriber keep values?): %w", err)
	}
	if _, err := db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return f, fmt.Errorf("checkpoint: %w", err)
	}
	return f, nil
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

// latency sends GET u one at a time (latency, not throughput) for d or max
// requests, after 20 unmeasured ones.
func latency(ctx context.Context, u string, d time.Duration, maxRequests int) (Latencies, error) {
	client := newClient(1)
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

// queryLatency measures GET /messages?topic=a/+/c&limit=100 after checking
// the first answer: 100 rows, each matching the filter.
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
	return latency(ctx, u, d, maxRequests)
}

// seriesLatency measures GET /series of one topic's field temp over the
// fill's day at 1-minute steps, after checking the first answer: one
// series holding every row of the topic.
func seriesLatency(ctx context.Context, base string, f fill, d time.Duration, maxRequests int) (Latencies, error) {
	u := base + "/series?" + url.Values{"topic": {seriesTopic}, "field": {"temp"}, "step": {"1m"},
		"since": {f.first.UTC().Format(time.RFC3339)}, "until": {f.last.Add(time.Second).UTC().Format(time.RFC3339)}}.Encode()
	b, err := get(ctx, newClient(1), u)
	if err != nil {
		return nil, err
	}
	var answer struct {
		Series []struct {
			Topic, Field string
			Points       []struct{ Count int }
		}
	}
	if err := json.Unmarshal(b, &answer); err != nil {
		return nil, fmt.Errorf("decode series: %w", err)
	}
	if len(answer.Series) != 1 || answer.Series[0].Topic != seriesTopic || answer.Series[0].Field != "temp" {
		return nil, fmt.Errorf("series answered %d series, want %s temp", len(answer.Series), seriesTopic)
	}
	n := 0
	for _, p := range answer.Series[0].Points {
		n += p.Count
	}
	if n != f.seriesRows {
		return nil, fmt.Errorf("series counted %d readings in %d points, want %d", n, len(answer.Series[0].Points), f.seriesRows)
	}
	return latency(ctx, u, d, maxRequests)
}

// topicsLatency measures GET /topics?limit=10000 after checking the first
// answer: every topic of the fill, with its newest values.
func topicsLatency(ctx context.Context, base string, d time.Duration, maxRequests int) (Latencies, error) {
	u := base + "/topics?limit=10000"
	b, err := get(ctx, newClient(1), u)
	if err != nil {
		return nil, err
	}
	var answer struct {
		Topics []struct {
			Topic  string
			Count  int
			Values map[string]float64
		}
		Next *string
	}
	if err := json.Unmarshal(b, &answer); err != nil {
		return nil, fmt.Errorf("decode topics: %w", err)
	}
	if len(answer.Topics) != 1000+extraTopics || answer.Next != nil {
		return nil, fmt.Errorf("topics answered %d topics (next %v), want %d", len(answer.Topics), answer.Next, 1000+extraTopics)
	}
	for _, t := range answer.Topics {
		if len(t.Values) != 2 || t.Count < 1 {
			return nil, fmt.Errorf("topics answered %s with %d rows and values %v, want temp and hum", t.Topic, t.Count, t.Values)
		}
	}
	return latency(ctx, u, d, maxRequests)
}
