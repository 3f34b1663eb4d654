package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// extract finds the values of msgs before the transaction begins.
func extract(msgs []store.Message) []store.MessageValue { return store.ExtractValues(msgs) }

// seriesKey names a series.
type seriesKey struct{ topic, field string }

// seriesCache maps series to their ids. A series is never deleted (its
// values are), so an id once committed stays right until the schema is
// created again: by this store (recover resets the cache), or by another
// member of a group, which this one may never see fail. So the cache also
// keeps the OID of the table series its ids came from, and the insert of
// values only inserts while that is still the table (see queueValues).
type seriesCache struct {
	mu  sync.Mutex
	oid uint32
	ids map[seriesKey]int64
}

// errStaleSeries is a commit whose cached series ids are of a table series
// since created again: it is rolled back, the cache emptied, and the retry
// looks the series up again.
var errStaleSeries = errors.New("the table series was created again since its ids were cached")

// maxCachedSeries bounds the cache; past it, it starts over.
const maxCachedSeries = 100_000

// get returns the id of k and the OID of the table it came from.
func (c *seriesCache) get(k seriesKey) (id int64, oid uint32, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok = c.ids[k]
	return id, c.oid, ok
}

// found is what a transaction looked up: ids, of the table with oid.
type found struct {
	oid uint32
	ids map[seriesKey]int64
}

// add records f once the transaction that made or found it committed.
func (c *seriesCache) add(f found) {
	if len(f.ids) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil || c.oid != f.oid || len(c.ids)+len(f.ids) > maxCachedSeries {
		c.ids, c.oid = make(map[seriesKey]int64, len(f.ids)), f.oid
	}
	for k, id := range f.ids {
		c.ids[k] = id
	}
}

func (c *seriesCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids, c.oid = nil, 0
}

// seriesIDs returns the ids of keys, creating the series that do not exist
// yet, in one round trip. Keys are sorted so that writers that create the
// same series lock them in one order; the SELECT, a statement of its own,
// sees the series that another transaction created and committed while
// this one waited for it.
func seriesIDs(ctx context.Context, tx pgx.Tx, keys []seriesKey) (found, error) {
	slices.SortFunc(keys, func(a, b seriesKey) int {
		if c := strings.Compare(a.topic, b.topic); c != 0 {
			return c
		}
		return strings.Compare(a.field, b.field)
	})
	topics, fields := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		topics[i], fields[i] = k.topic, k.field
	}
	var b pgx.Batch
	var f found
	b.Queue(`SELECT 'series'::regclass::oid`).QueryRow(func(row pgx.Row) error { return row.Scan(&f.oid) })
	b.Queue(`INSERT INTO series (topic, field) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING`, topics, fields)
	out := make(map[seriesKey]int64, len(keys))
	f.ids = out
	b.Queue(`SELECT s.id, s.topic, s.field FROM series s JOIN unnest($1::text[], $2::text[]) AS k(topic, field)
		ON s.topic = k.topic AND s.field = k.field`, topics, fields).Query(func(rows pgx.Rows) error {
		var id int64
		var k seriesKey
		_, err := pgx.ForEachRow(rows, []any{&id, &k.topic, &k.field}, func() error { out[k] = id; return nil })
		return err
	})
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return found{}, fmt.Errorf("series: %w", err)
	}
	if len(out) != len(keys) {
		return found{}, fmt.Errorf("series: found %d of %d", len(out), len(keys))
	}
	return f, nil
}

// queueValues queues the insert of vals, the values of msgs whose ids are
// ids, first looking up (or creating) the series the cache does not know.
// It returns what it looked up, for the cache once the commit is done. The
// insert takes only rows whose series ids are of the table series as it is
// (its OID): a commit with ids of a table since created again inserts
// fewer rows than it has, fails with errStaleSeries and empties the cache.
func (s *Store) queueValues(ctx context.Context, tx pgx.Tx, b *pgx.Batch, msgs []store.Message, ids []int64, vals []store.MessageValue) (found, error) {
	if len(vals) == 0 {
		return found{}, nil
	}
	sids := make([]int64, len(vals))
	var oid uint32
	var missing []seriesKey
	seen := map[seriesKey]bool{}
	for i, v := range vals {
		k := seriesKey{msgs[v.Msg].Topic, v.Field}
		id, from, ok := s.series.get(k)
		sids[i] = id
		if ok {
			oid = from
		} else if !seen[k] {
			seen[k] = true
			missing = append(missing, k)
		}
	}
	var f found
	if len(missing) > 0 {
		var err error
		if f, err = seriesIDs(ctx, tx, missing); err != nil {
			return found{}, err
		}
		if oid != 0 && oid != f.oid {
			s.series.reset()
			return found{}, errStaleSeries
		}
		oid = f.oid
		for i, v := range vals {
			if id, ok := f.ids[seriesKey{msgs[v.Msg].Topic, v.Field}]; ok {
				sids[i] = id
			}
		}
	}
	// The chunks: the values of a series within one chunkSpan (counted
	// from the Unix epoch), numbered in the order met.
	type chunkKey struct{ series, span int64 }
	number := map[chunkKey]int32{}
	chunks := make([]int32, len(vals))
	ats, mids, nums := make([]time.Time, len(vals)), make([]int64, len(vals)), make([]float64, len(vals))
	var newest []int // of each chunk, the index in vals of its newest value
	for i, v := range vals {
		at := msgs[v.Msg].ReceivedAt
		k := chunkKey{sids[i], store.FloorDiv(at.UnixMicro(), chunkSpan.Microseconds())}
		n, ok := number[k]
		if !ok {
			n = int32(len(number))
			number[k] = n
			newest = append(newest, i)
		}
		chunks[i], ats[i], mids[i], nums[i] = n, at, ids[v.Msg], v.Number
		if j := newest[n]; at.UnixMicro() > ats[j].UnixMicro() || at.UnixMicro() == ats[j].UnixMicro() && mids[i] > mids[j] {
			newest[n] = i
		}
	}
	lastIDs, lastNums := make([]int64, len(newest)), make([]float64, len(newest))
	for n, i := range newest {
		lastIDs[n], lastNums[n] = mids[i], nums[i]
	}
	b.Queue(`INSERT INTO value_chunks (series_id, first_at, last_at, last_message_id, last_number, ats, message_ids, numbers)
		SELECT min(series_id), min(at), max(at), ($7::bigint[])[chunk + 1], ($8::float8[])[chunk + 1],
			array_agg(at), array_agg(message_id), array_agg(number)
		FROM (SELECT unnest($1::integer[]) AS chunk, unnest($2::bigint[]) AS series_id, unnest($3::timestamptz[]) AS at,
			unnest($4::bigint[]) AS message_id, unnest($5::float8[]) AS number) u
		WHERE 'series'::regclass::oid = $6 GROUP BY chunk`, chunks, sids, ats, mids, nums, oid, lastIDs, lastNums).Exec(func(ct pgconn.CommandTag) error {
		if ct.RowsAffected() != int64(len(number)) {
			s.series.reset()
			return errStaleSeries
		}
		return nil
	})
	return f, nil
}
