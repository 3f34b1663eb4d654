package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// seriesKey names a series.
type seriesKey struct{ topic, field string }

// seriesCache maps series to their ids. A series is never deleted (its
// values are), so an id once committed stays right for as long as the
// file: the cache lives in handles, which a reopened file replaces.
type seriesCache struct {
	mu  sync.Mutex
	ids map[seriesKey]int64
}

// maxCachedSeries bounds the cache; past it, it starts over.
const maxCachedSeries = 100_000

func (c *seriesCache) get(k seriesKey) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.ids[k]
	return id, ok
}

// add records ids once the transaction that made them has committed.
func (c *seriesCache) add(ids map[seriesKey]int64) {
	if len(ids) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil || len(c.ids)+len(ids) > maxCachedSeries {
		c.ids = make(map[seriesKey]int64, len(ids))
	}
	for k, id := range ids {
		c.ids[k] = id
	}
}

const valueColumns = 4

// valueInsertSQL inserts rows values. OR FAIL spares SQLite the statement
// journal of a multi-row insert (about 8 % of a batch's CPU, measured with
// BenchmarkInsertBatch500): a statement that fails rolls back the whole
// transaction anyway (commit), so what it inserted before failing goes too.
func valueInsertSQL(rows int) string {
	return `INSERT OR FAIL INTO message_values (series_id, at, message_id, value) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?),", rows), ",")
}

// insertValues stores vals, the values of msgs whose ids are ids, and
// returns the series it created (for the cache, after the commit).
//
// The rows go in in the order of the table's key, series by series, rather
// than message by message: a commit appends to the end of each of its
// series' ranges, inside the B-tree, and a series' rows one after the other
// find its page in the cache where rows of alternating series evicted and
// read pages again. CPU a message in commits of 2000 messages of two
// values, run alternately: over 100 topics 18.2 to 21.5 µs in arrival
// order, 16.1 to 17.5 sorted; over 50 (BenchmarkInsertBatch2000) 13.7 to
// 16.4 and 13.2 to 15.4.
func (h *handles) insertValues(ctx context.Context, tx *sql.Tx, msgs []store.Message, ids []int64, vals []store.MessageValue) (map[seriesKey]int64, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	var created map[seriesKey]int64
	rows := make([]valueRow, len(vals))
	for i, v := range vals {
		m := &msgs[v.Msg]
		key := seriesKey{m.Topic, v.Field}
		sid, ok := h.series.get(key)
		if !ok {
			if sid, ok = created[key]; !ok {
				var err error
				if sid, err = seriesID(ctx, tx, key); err != nil {
					return nil, err
				}
				if created == nil {
					created = map[seriesKey]int64{}
				}
				created[key] = sid
			}
		}
		rows[i] = valueRow{sid, m.ReceivedAt.UnixMicro(), ids[v.Msg], v.Number}
	}
	slices.SortFunc(rows, func(a, b valueRow) int {
		return cmp.Or(cmp.Compare(a.series, b.series), cmp.Compare(a.at, b.at), cmp.Compare(a.message, b.message))
	})
	args := make([]any, 0, min(len(vals), chunkSizes[0])*valueColumns)
	for done := 0; done < len(vals); {
		k := 0
		for chunkSizes[k] > len(vals)-done {
			k++
		}
		n := chunkSizes[k]
		args = args[:0]
		for _, r := range rows[done : done+n] {
			args = append(args, r.series, r.at, r.message, r.value)
		}
		if _, err := tx.StmtContext(ctx, h.valueInserts[k]).ExecContext(ctx, args...); err != nil {
			return nil, fmt.Errorf("insert %d values: %w", n, err)
		}
		done += n
	}
	return created, nil
}

// valueRow is a row of message_values.
type valueRow struct {
	series, at, message int64
	value               float64
}

// seriesID returns the id of k, creating the series if need be.
func seriesID(ctx context.Context, tx *sql.Tx, k seriesKey) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, `INSERT INTO series (topic, field) VALUES (?, ?)
		ON CONFLICT (topic, field) DO UPDATE SET field = excluded.field RETURNING id`, k.topic, k.field).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("series %s %s: %w", k.topic, k.field, err)
	}
	return id, nil
}

const topicColumns = 6

// topicUpsertSQL adds the counts and newest messages of rows topics, and
// their oldest where the topic had none (a name the trigger just added).
// OR FAIL: as valueInsertSQL.
func topicUpsertSQL(rows int) string {
	return `INSERT OR FAIL INTO topics (name, count, first_id, first_at, last_id, last_at) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?),", rows), ",") + `
		ON CONFLICT (name) DO UPDATE SET count = count + excluded.count,
		first_at = CASE WHEN first_id = 0 THEN excluded.first_at ELSE first_at END,
		first_id = CASE WHEN first_id = 0 THEN excluded.first_id ELSE first_id END,
		last_at = CASE WHEN excluded.last_id > last_id THEN excluded.last_at ELSE last_at END,
		last_id = max(last_id, excluded.last_id)`
}

// countTopics adds msgs, whose ids are ids, to the counts of their topics:
// one row per topic, a statement per chunk of topics.
func (h *handles) countTopics(ctx context.Context, tx *sql.Tx, msgs []store.Message, ids []int64) error {
	type stat struct {
		n               int64
		firstID, lastID int64
		firstAt, lastAt int64
	}
	var order []string
	stats := make(map[string]*stat, 16)
	for i := range msgs {
		m := &msgs[i]
		st := stats[m.Topic]
		if st == nil {
			st = &stat{firstID: ids[i], firstAt: m.ReceivedAt.UnixMicro()}
			stats[m.Topic] = st
			order = append(order, m.Topic)
		}
		st.n++
		st.lastID, st.lastAt = ids[i], m.ReceivedAt.UnixMicro()
	}
	args := make([]any, 0, min(len(order), chunkSizes[0])*topicColumns)
	for done := 0; done < len(order); {
		k := 0
		for chunkSizes[k] > len(order)-done {
			k++
		}
		n := chunkSizes[k]
		args = args[:0]
		for _, name := range order[done : done+n] {
			st := stats[name]
			args = append(args, name, st.n, st.firstID, st.firstAt, st.lastID, st.lastAt)
		}
		if _, err := tx.StmtContext(ctx, h.topicUpserts[k]).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("count %d topics: %w", n, err)
		}
		done += n
	}
	return nil
}
