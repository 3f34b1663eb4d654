package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

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

const chunkColumns = 6

// chunkInsertSQL inserts rows chunks of values. OR FAIL spares SQLite the
// statement journal of a multi-row insert (about 8 % of a batch's CPU,
// measured with BenchmarkInsertBatch500 when values had a row each): a
// statement that fails rolls back the whole transaction anyway (commit), so
// what it inserted before failing goes too.
func chunkInsertSQL(rows int) string {
	return `INSERT OR FAIL INTO value_chunks (series_id, last_at, last_id, last_number, first_at, data) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?),", rows), ",")
}

// chunkSpan bounds how far apart the values of one chunk may be
// (chunksSchema).
const chunkSpan = time.Minute

// insertValues stores vals, the values of msgs whose ids are ids, as
// chunks, and returns the series it created (for the cache, after the
// commit).
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
	// Sorted, each chunk's values are a run of rows: the same series and
	// span of chunkSpan since the epoch.
	span := chunkSpan.Microseconds()
	type chunk struct{ from, to int }
	var chunks []chunk
	for i := range rows {
		if i == 0 || rows[i].series != rows[i-1].series || store.FloorDiv(rows[i].at, span) != store.FloorDiv(rows[i-1].at, span) {
			chunks = append(chunks, chunk{i, i})
		}
		chunks[len(chunks)-1].to = i + 1
	}
	data := make([]byte, 0, len(rows)*valueBytes)
	args := make([]any, 0, min(len(chunks), chunkSizes[0])*chunkColumns)
	for done := 0; done < len(chunks); {
		k := 0
		for chunkSizes[k] > len(chunks)-done {
			k++
		}
		n := chunkSizes[k]
		args = args[:0]
		for _, c := range chunks[done : done+n] {
			run := rows[c.from:c.to]
			last := run[len(run)-1] // the newest: the run is by time, then id
			// A chunk of one value is its last value and no data: a slow
			// series' row is no bigger than a row a value was.
			packed := []byte{}
			if len(run) > 1 {
				start := len(data)
				data = encodeChunk(data, run)
				packed = data[start:]
			}
			args = append(args, last.series, last.at, last.message, last.value, run[0].at, packed)
		}
		if _, err := tx.StmtContext(ctx, h.chunkInserts[k]).ExecContext(ctx, args...); err != nil {
			return nil, fmt.Errorf("insert %d chunks of values: %w", n, err)
		}
		done += n
	}
	return created, nil
}

// deleteValues deletes the values of topic's series up to upto (Unix
// microseconds): the chunks all of whose values go, and those of the chunks
// that upto cuts.
func deleteValues(ctx context.Context, tx *sql.Tx, topic string, upto int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM value_chunks
		WHERE series_id IN (SELECT id FROM series WHERE topic = ?) AND last_at <= ?`, topic, upto); err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT series_id, last_at, last_id, data FROM value_chunks
		WHERE series_id IN (SELECT id FROM series WHERE topic = ?) AND last_at > ? AND last_at < ? AND first_at <= ?`,
		topic, upto, upto+chunkSpan.Microseconds(), upto)
	if err != nil {
		return err
	}
	type cut struct {
		series, lastAt, lastID int64
		data                   []byte
	}
	var cuts []cut
	for rows.Next() {
		var c cut
		if err := rows.Scan(&c.series, &c.lastAt, &c.lastID, &c.data); err != nil {
			rows.Close()
			return err
		}
		cuts = append(cuts, c)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	for _, c := range cuts {
		vals, err := decodeChunk(nil, c.data)
		if err != nil {
			return err
		}
		kept := slices.DeleteFunc(vals, func(v valueRow) bool { return v.at <= upto })
		if len(kept) == 0 { // not a chunk the select can find: its last is after upto
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE value_chunks SET first_at = ?, data = ?
			WHERE series_id = ? AND last_at = ? AND last_id = ?`,
			kept[0].at, encodeChunk(nil, kept), c.series, c.lastAt, c.lastID); err != nil {
			return err
		}
	}
	return nil
}

// valueRow is a value with its series and message.
type valueRow struct {
	series, at, message int64
	value               float64
}

// valueBytes is the size of a value in a chunk's data.
const valueBytes = 24

// encodeChunk appends the values of rows (their times, message ids and
// numbers) to b.
func encodeChunk(b []byte, rows []valueRow) []byte {
	for _, r := range rows {
		b = binary.LittleEndian.AppendUint64(b, uint64(r.at))
		b = binary.LittleEndian.AppendUint64(b, uint64(r.message))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(r.value))
	}
	return b
}

// chunkValues appends the values of a chunk to rows, with series 0: those
// packed in data, or, if it is empty, the one value of the chunk, its last.
func chunkValues(rows []valueRow, lastAt, lastID int64, lastNumber float64, data []byte) ([]valueRow, error) {
	if len(data) == 0 {
		return append(rows, valueRow{at: lastAt, message: lastID, value: lastNumber}), nil
	}
	return decodeChunk(rows, data)
}

// decodeChunk appends the values of data to rows, with series 0.
func decodeChunk(rows []valueRow, data []byte) ([]valueRow, error) {
	if len(data)%valueBytes != 0 {
		return rows, fmt.Errorf("a chunk of values of %d bytes, not a multiple of %d", len(data), valueBytes)
	}
	for ; len(data) > 0; data = data[valueBytes:] {
		rows = append(rows, valueRow{
			at:      int64(binary.LittleEndian.Uint64(data)),
			message: int64(binary.LittleEndian.Uint64(data[8:])),
			value:   math.Float64frombits(binary.LittleEndian.Uint64(data[16:])),
		})
	}
	return rows, nil
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
