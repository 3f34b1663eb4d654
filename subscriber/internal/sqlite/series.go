package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/values"
)

// seriesRow is a series of the catalog.
type seriesRow struct {
	id           int64
	topic, field string
}

// nameConditions is the SQL condition on the text column col that
// selects the names filter matches: equality for a name, else the range of
// its literal prefix and mqtt_match.
func nameConditions(col, filter string) ([]string, []any) {
	switch {
	case !strings.ContainsAny(filter, "+#"):
		return []string{col + " = ?"}, []any{filter}
	case filter == "#":
		// Every name but those starting with '$' (MQTT 3.1.1 section
		// 4.7.2): two ranges, without a call per name.
		return []string{"(" + col + " < '$' OR " + col + " >= '%')"}, nil
	}
	lo, hi, bounded := topic.Range(topic.Prefix(filter))
	where, args := []string{col + " >= ?"}, []any{lo}
	if bounded {
		where, args = append(where, col+" < ?"), append(args, hi)
	}
	return append(where, matchFunc+"(?, "+col+")"), append(args, filter)
}

// catalog returns the series of the topics filter matches (of field, unless
// it is ""), by topic and field.
func catalog(ctx context.Context, db *sql.Conn, filter, field string) ([]seriesRow, error) {
	where, args := nameConditions("topic", filter)
	if field != "" {
		where, args = append(where, "field = ?"), append(args, field)
	}
	rows, err := db.QueryContext(ctx, "SELECT id, topic, field FROM series WHERE "+strings.Join(where, " AND ")+" ORDER BY topic, field", args...)
	if err != nil {
		return nil, fmt.Errorf("read series: %w", err)
	}
	defer rows.Close()
	var out []seriesRow
	for rows.Next() {
		var r seriesRow
		if err := rows.Scan(&r.id, &r.topic, &r.field); err != nil {
			return nil, fmt.Errorf("read series: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read series: %w", err)
	}
	return out, nil
}

// micros is t in Unix microseconds; the zero time is def.
func micros(t time.Time, def int64) int64 {
	if t.IsZero() {
		return def
	}
	return t.UnixMicro()
}

// Series returns the values of q's series as buckets, reading each series'
// chunks that may hold values of the range on one reader connection.
func (s *Store) Series(ctx context.Context, q store.SeriesQuery) ([]store.Series, error) {
	conn, err := s.h.Load().r.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("series: %w", err)
	}
	defer conn.Close()
	cat, err := catalog(ctx, conn, q.Filter, q.Field)
	if err != nil {
		return nil, err
	}
	if q.MaxSeries > 0 && len(cat) > q.MaxSeries {
		return nil, fmt.Errorf("%s matches %d series, more than %d: %w", q.Filter, len(cat), q.MaxSeries, store.ErrTooManySeries)
	}
	stmt, err := conn.PrepareContext(ctx, `SELECT last_at, last_id, last_number, data FROM value_chunks
		WHERE series_id = ? AND last_at >= ? AND last_at < ? ORDER BY last_at`)
	if err != nil {
		return nil, fmt.Errorf("series: %w", err)
	}
	defer stmt.Close()
	since, until := micros(q.Since, math.MinInt64), micros(q.Until, math.MaxInt64)
	span := chunkSpan.Microseconds()
	out := []store.Series{}
	for _, c := range cat {
		b := store.NewBuckets(q.Step)
		if err := readSeries(ctx, stmt, c.id, since, until, span, b); err != nil {
			return nil, fmt.Errorf("series %s %s: %w", c.topic, c.field, err)
		}
		if pts := b.Points(); len(pts) > 0 {
			out = append(out, store.Series{Topic: c.topic, Field: c.field, Points: pts})
		}
	}
	return out, nil
}

// seriesWaiting is how many values readSeries gathers before it hands the
// final ones on; a variable for the tests.
var seriesWaiting = 4096

// readSeries hands the values of series id in [since, until) to b in order
// of time and message id. It reads the chunks by their last times; a value
// of a chunk read later is later than that chunk's last time less span, so
// the values read before it and earlier than that are final, and go to b
// in order while the rest wait: what waits is about a span of the series.
func readSeries(ctx context.Context, stmt *sql.Stmt, id, since, until, span int64, b *store.Buckets) error {
	upper := until
	if upper <= math.MaxInt64-span {
		upper += span
	} else {
		upper = math.MaxInt64
	}
	rows, err := stmt.QueryContext(ctx, id, since, upper)
	if err != nil {
		return err
	}
	defer rows.Close()
	var waiting, chunk []valueRow
	limit := seriesWaiting
	order := func(a, b valueRow) int { return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.message, b.message)) }
	flush := func(before int64) {
		slices.SortFunc(waiting, order)
		n := 0
		for n < len(waiting) && waiting[n].at < before {
			b.Add(waiting[n].at, waiting[n].value)
			n++
		}
		waiting = append(waiting[:0], waiting[n:]...)
	}
	for rows.Next() {
		var last, lastID int64
		var lastNumber float64
		var data []byte
		if err := rows.Scan(&last, &lastID, &lastNumber, &data); err != nil {
			return err
		}
		if chunk, err = chunkValues(chunk[:0], last, lastID, lastNumber, data); err != nil {
			return err
		}
		for _, v := range chunk {
			if v.at >= since && v.at < until {
				waiting = append(waiting, v)
			}
		}
		if len(waiting) >= limit {
			flush(last - span)
			// A series denser than seriesWaiting values a span waits for
			// twice what is left, not for every chunk: sorted once each.
			limit = max(seriesWaiting, 2*len(waiting))
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	flush(until) // every value left: they are all before until
	return nil
}

// Topics returns the topics q selects with their newest message, then the
// newest value of each of their series.
func (s *Store) Topics(ctx context.Context, q store.TopicQuery) ([]store.Topic, error) {
	conn, err := s.h.Load().r.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("topics: %w", err)
	}
	defer conn.Close()
	where, args := nameConditions("t.name", q.Filter)
	if q.After != "" {
		where, args = append(where, "t.name > ?"), append(args, q.After)
	}
	// The columns of the newest message that GET /topics shows (not its
	// client, packet id or batch key).
	rows, err := conn.QueryContext(ctx, `SELECT t.name, t.count, t.first_at, t.last_at,
		m.id, m.payload, m.qos, m.retained, m.duplicate, m.received_at
		FROM topics t JOIN messages m ON m.id = t.last_id
		WHERE `+strings.Join(where, " AND ")+` ORDER BY t.name LIMIT ?`, append(args, q.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("topics: %w", err)
	}
	out := make([]store.Topic, 0, q.Limit) // at most 10,001: once, rather than by doubling
	var total int64
	for (q.MaxBytes <= 0 || total < q.MaxBytes) && rows.Next() {
		out = append(out, store.Topic{})
		t := &out[len(out)-1]
		var first, last, at int64
		var qos int
		if err := rows.Scan(&t.Name, &t.Count, &first, &last, &t.Last.ID, &t.Last.Payload, &qos, &t.Last.Retained, &t.Last.Duplicate, &at); err != nil {
			rows.Close()
			return nil, fmt.Errorf("topics: %w", err)
		}
		t.FirstAt, t.LastAt = time.UnixMicro(first).UTC(), time.UnixMicro(last).UTC()
		t.Last.Topic, t.Last.QoS, t.Last.ReceivedAt = t.Name, byte(qos), time.UnixMicro(at).UTC()
		if t.Last.Payload == nil {
			t.Last.Payload = []byte{}
		}
		total += int64(len(t.Last.Payload))
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("topics: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	byName := make(map[string]*store.Topic, len(out))
	for i := range out {
		byName[out[i].Name] = &out[i]
	}
	// The newest value of each series of the page's topics: one seek per
	// series through the key of value_chunks.
	vrows, err := conn.QueryContext(ctx, `SELECT s.topic, s.field,
		(SELECT last_number FROM value_chunks WHERE series_id = s.id ORDER BY last_at DESC, last_id DESC LIMIT 1)
		FROM series s WHERE s.topic >= ? AND s.topic <= ? ORDER BY s.topic, s.field`, out[0].Name, out[len(out)-1].Name)
	if err != nil {
		return nil, fmt.Errorf("topics: values: %w", err)
	}
	defer vrows.Close()
	for vrows.Next() {
		var name sql.RawBytes
		var field string
		var v sql.NullFloat64
		if err := vrows.Scan(&name, &field, &v); err != nil {
			return nil, fmt.Errorf("topics: values: %w", err)
		}
		if t := byName[string(name)]; t != nil && v.Valid {
			t.Values = append(t.Values, values.Value{Field: field, Number: v.Float64})
		}
	}
	if err := vrows.Err(); err != nil {
		return nil, fmt.Errorf("topics: values: %w", err)
	}
	return out, nil
}

// fillBytes bounds the payload one FillValues reads and parses while it
// holds the writer.
const fillBytes = 1 << 20

// FillValues extracts the values of the next messages stored before the
// file kept values. It reads them inside its write transaction, so that
// retention cannot delete one between the read and the insert of its
// values, and holds the writer for one batch only.
func (s *Store) FillValues(ctx context.Context, limit int) (read int, left int64, err error) {
	h := s.h.Load()
	tx, err := h.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("fill values: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("fill values: %w", err), ignoreDone(tx.Rollback()))
		}
	}()
	var next, last int64
	if err := tx.QueryRowContext(ctx, `SELECT next_id, last_id FROM values_backfill`).Scan(&next, &last); err != nil {
		return 0, 0, err
	}
	if next >= last {
		return 0, 0, tx.Rollback()
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+columns+` FROM messages WHERE id > ? AND id <= ? ORDER BY id LIMIT ?`, next, last, limit)
	if err != nil {
		return 0, 0, err
	}
	msgs, err := collect(rows, nil, fillBytes)
	if err != nil {
		return 0, 0, err
	}
	ids := make([]int64, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	created, err := h.insertValues(ctx, tx, msgs, ids, store.ExtractValues(msgs))
	if err != nil {
		return 0, 0, err
	}
	next = last // no row left in the range
	if len(msgs) == limit || store.PayloadBytes(msgs) >= fillBytes {
		next = msgs[len(msgs)-1].ID
	}
	if _, err := tx.ExecContext(ctx, `UPDATE values_backfill SET next_id = ?`, next); err != nil {
		return 0, 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, err
	}
	h.series.add(created)
	return len(msgs), last - next, nil
}
