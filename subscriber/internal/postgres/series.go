package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/values"
)

// nameConditions is the SQL condition on the text column col that selects
// the names filter matches (placeholders from $first on): equality for a
// name, else the range of its literal prefix and the filter's regular
// expression.
func nameConditions(col, filter string, first int) ([]string, []any) {
	ph := func(i int) string { return "$" + strconv.Itoa(first+i) }
	switch {
	case !strings.ContainsAny(filter, "+#"):
		return []string{col + " = " + ph(0)}, []any{filter}
	case filter == "#":
		// Every name but those starting with '$' (MQTT 3.1.1 section
		// 4.7.2): two ranges, which need no regular expression.
		return []string{"(" + col + " < '$' OR " + col + " >= '%')"}, nil
	}
	lo, hi, bounded := topic.Range(topic.Prefix(filter))
	where, args := []string{col + " >= " + ph(0), col + " ~ " + ph(1)}, []any{lo, topic.Regexp(filter)}
	if bounded {
		where, args = append(where, col+" < "+ph(2)), append(args, hi)
	}
	return where, args
}

// Series returns the values of q's series as buckets: the catalog first,
// then each series' values out of its chunks that may hold some of the
// range, in order, all queries in one batch.
func (s *Store) Series(ctx context.Context, q store.SeriesQuery) ([]store.Series, error) {
	where, args := nameConditions("topic", q.Filter, 1)
	if q.Field != "" {
		args = append(args, q.Field)
		where = append(where, "field = $"+strconv.Itoa(len(args)))
	}
	rows, err := s.pool.Query(ctx, "SELECT id, topic, field FROM series WHERE "+strings.Join(where, " AND ")+" ORDER BY topic, field", args...)
	if err != nil {
		return nil, fmt.Errorf("read series: %w", err)
	}
	type entry struct {
		id           int64
		topic, field string
	}
	var cat []entry
	var e entry
	if _, err := pgx.ForEachRow(rows, []any{&e.id, &e.topic, &e.field}, func() error { cat = append(cat, e); return nil }); err != nil {
		return nil, fmt.Errorf("read series: %w", err)
	}
	if q.MaxSeries > 0 && len(cat) > q.MaxSeries {
		return nil, fmt.Errorf("%s matches %d series, more than %d: %w", q.Filter, len(cat), q.MaxSeries, store.ErrTooManySeries)
	}
	out := []store.Series{}
	if len(cat) == 0 {
		return out, nil
	}
	// Unbounded ends, within what timestamptz holds.
	since, until := q.Since, q.Until
	if since.IsZero() {
		since = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if until.IsZero() {
		until = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	var b pgx.Batch
	for _, c := range cat {
		b.Queue(`SELECT u.at, u.number FROM value_chunks c,
				unnest(c.ats, c.message_ids, c.numbers) AS u(at, message_id, number)
			WHERE c.series_id = $1 AND c.last_at >= $2 AND c.last_at < $3::timestamptz + $4::interval
				AND u.at >= $2 AND u.at < $3
			ORDER BY u.at, u.message_id`, c.id, since, until, chunkSpan).Query(func(rows pgx.Rows) error {
			bk := store.NewBuckets(q.Step)
			var at time.Time
			var v float64
			if _, err := pgx.ForEachRow(rows, []any{&at, &v}, func() error { bk.Add(at.UnixMicro(), v); return nil }); err != nil {
				return fmt.Errorf("series %s %s: %w", c.topic, c.field, err)
			}
			if pts := bk.Points(); len(pts) > 0 {
				out = append(out, store.Series{Topic: c.topic, Field: c.field, Points: pts})
			}
			return nil
		})
	}
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// Topics returns the topics q selects with their newest message and the
// newest value of each of their series. The byte budget is applied to the
// payload sizes (from the row headers) before any payload is read.
func (s *Store) Topics(ctx context.Context, q store.TopicQuery) ([]store.Topic, error) {
	where, args := nameConditions("t.name", q.Filter, 1)
	if q.After != "" {
		args = append(args, q.After)
		where = append(where, "t.name > $"+strconv.Itoa(len(args)))
	}
	args = append(args, q.Limit)
	// LIMIT 1 keeps the lateral subquery a lookup by primary key per
	// topic; as a plain join the planner would hash the whole of messages.
	rows, err := s.pool.Query(ctx, `SELECT t.name, t.count, t.first_at, t.last_at, t.last_id, m.size
		FROM topics t CROSS JOIN LATERAL (SELECT octet_length(payload) AS size FROM messages WHERE id = t.last_id LIMIT 1) m
		WHERE `+strings.Join(where, " AND ")+` ORDER BY t.name LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("topics: %w", err)
	}
	out := make([]store.Topic, 0, q.Limit)
	var ids []int64
	var total int64
	var t store.Topic
	var lastID, size int64
	if _, err := pgx.ForEachRow(rows, []any{&t.Name, &t.Count, &t.FirstAt, &t.LastAt, &lastID, &size}, func() error {
		if q.MaxBytes > 0 && total >= q.MaxBytes {
			return nil
		}
		t.FirstAt, t.LastAt = t.FirstAt.UTC(), t.LastAt.UTC()
		out = append(out, t)
		ids = append(ids, lastID)
		total += size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("topics: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	index := make(map[string]int, len(out))
	for i := range out {
		index[out[i].Name] = i
	}
	var b pgx.Batch
	b.Queue("SELECT "+columns+" FROM messages WHERE id = ANY($1)", ids).Query(func(rows pgx.Rows) error {
		msgs, err := pgx.CollectRows(rows, scanMessage)
		for _, m := range msgs {
			if i, ok := index[m.Topic]; ok {
				out[i].Last = m
			}
		}
		return err
	})
	// The newest value of each series of these topics (those between the
	// first and the last of the page that match): one seek each.
	where, args = nameConditions("s.topic", q.Filter, 3)
	args = append([]any{out[0].Name, out[len(out)-1].Name}, args...)
	b.Queue(`SELECT s.topic, s.field, v.value FROM series s
		CROSS JOIN LATERAL (SELECT last_number AS value FROM value_chunks WHERE series_id = s.id
			ORDER BY last_at DESC, last_message_id DESC LIMIT 1) v
		WHERE s.topic >= $1 AND s.topic <= $2 AND `+strings.Join(where, " AND ")+` ORDER BY s.topic, s.field`, args...).Query(func(rows pgx.Rows) error {
		var name, field string
		var v float64
		_, err := pgx.ForEachRow(rows, []any{&name, &field, &v}, func() error {
			i, ok := index[name]
			if !ok {
				return nil
			}
			out[i].Values = append(out[i].Values, values.Value{Field: field, Number: v})
			return nil
		})
		return err
	})
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return nil, fmt.Errorf("topics: %w", err)
	}
	// A topic whose newest message went between the two reads (retention)
	// is left out rather than shown without it.
	kept := out[:0]
	for _, t := range out {
		if t.Last.ID != 0 {
			kept = append(kept, t)
		}
	}
	return kept, nil
}

// fillBytes bounds the payload one FillValues reads and parses.
const fillBytes = 1 << 20

// FillValues extracts the values of the next messages stored before the
// database kept values, in one transaction on a connection of the pool.
// The position row is locked with SKIP LOCKED, so that the members of a
// share group take turns instead of waiting for each other; the messages
// are read FOR KEY SHARE, so that retention cannot delete one between the
// read and the insert of its values.
func (s *Store) FillValues(ctx context.Context, limit int) (read int, left int64, err error) {
	var created found
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var next, last int64
		err := tx.QueryRow(ctx, `SELECT next_id, last_id FROM values_backfill FOR UPDATE SKIP LOCKED`).Scan(&next, &last)
		if errors.Is(err, pgx.ErrNoRows) {
			// Another member is at it: say how far it is.
			err = tx.QueryRow(ctx, `SELECT last_id - next_id FROM values_backfill`).Scan(&left)
			return err
		}
		if err != nil {
			return err
		}
		if next >= last {
			return nil
		}
		// Which rows fit the budget, from their sizes alone.
		rows, err := tx.Query(ctx, `SELECT id, octet_length(payload) FROM messages
			WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3`, next, last, limit)
		if err != nil {
			return err
		}
		var ids []int64
		var total, id, size int64
		if _, err := pgx.ForEachRow(rows, []any{&id, &size}, func() error {
			if total < fillBytes {
				ids = append(ids, id)
				total += size
			}
			return nil
		}); err != nil {
			return err
		}
		done := len(ids) < limit && total < fillBytes
		rows, err = tx.Query(ctx, "SELECT "+columns+" FROM messages WHERE id = ANY($1) ORDER BY id FOR KEY SHARE", ids)
		if err != nil {
			return err
		}
		msgs, err := pgx.CollectRows(rows, scanMessage)
		if err != nil {
			return err
		}
		read = len(msgs)
		mids := make([]int64, len(msgs))
		for i, m := range msgs {
			mids[i] = m.ID
		}
		var b pgx.Batch
		if created, err = s.queueValues(ctx, tx, &b, msgs, mids, extract(msgs)); err != nil {
			return err
		}
		next = last
		if !done {
			next = ids[len(ids)-1]
		}
		b.Queue(`UPDATE values_backfill SET next_id = $1`, next)
		left = last - next
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return 0, 0, s.recover(ctx, fmt.Errorf("fill values: %w", err))
	}
	s.series.add(created)
	return read, left, nil
}
