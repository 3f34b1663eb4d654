package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// extract finds the values of msgs before the transaction begins.
func extract(msgs []store.Message) []store.MessageValue { return store.ExtractValues(msgs) }

// seriesKey names a series.
type seriesKey struct{ topic, field string }

// seriesCache maps series to their ids. A series is never deleted (its
// values are), so an id once committed stays right until the schema is
// created again (recover resets the cache).
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

// add records ids once the transaction that made or found them committed.
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

func (c *seriesCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids = nil
}

// seriesIDs returns the ids of keys, creating the series that do not exist
// yet, in one round trip. Keys are sorted so that writers that create the
// same series lock them in one order; the SELECT, a statement of its own,
// sees the series that another transaction created and committed while
// this one waited for it.
func seriesIDs(ctx context.Context, tx pgx.Tx, keys []seriesKey) (map[seriesKey]int64, error) {
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
	b.Queue(`INSERT INTO series (topic, field) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING`, topics, fields)
	out := make(map[seriesKey]int64, len(keys))
	b.Queue(`SELECT s.id, s.topic, s.field FROM series s JOIN unnest($1::text[], $2::text[]) AS k(topic, field)
		ON s.topic = k.topic AND s.field = k.field`, topics, fields).Query(func(rows pgx.Rows) error {
		var id int64
		var k seriesKey
		_, err := pgx.ForEachRow(rows, []any{&id, &k.topic, &k.field}, func() error { out[k] = id; return nil })
		return err
	})
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return nil, fmt.Errorf("series: %w", err)
	}
	if len(out) != len(keys) {
		return nil, fmt.Errorf("series: found %d of %d", len(out), len(keys))
	}
	return out, nil
}

// queueValues queues the insert of vals, the values of msgs whose ids are
// ids, first looking up (or creating) the series the cache does not know.
// It returns the ids it looked up, for the cache once the commit is done.
func (s *Store) queueValues(ctx context.Context, tx pgx.Tx, b *pgx.Batch, msgs []store.Message, ids []int64, vals []store.MessageValue) (map[seriesKey]int64, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	sids := make([]int64, len(vals))
	var missing []seriesKey
	seen := map[seriesKey]bool{}
	for i, v := range vals {
		k := seriesKey{msgs[v.Msg].Topic, v.Field}
		id, ok := s.series.get(k)
		sids[i] = id
		if !ok && !seen[k] {
			seen[k] = true
			missing = append(missing, k)
		}
	}
	var found map[seriesKey]int64
	if len(missing) > 0 {
		var err error
		if found, err = seriesIDs(ctx, tx, missing); err != nil {
			return nil, err
		}
		for i, v := range vals {
			if id, ok := found[seriesKey{msgs[v.Msg].Topic, v.Field}]; ok {
				sids[i] = id
			}
		}
	}
	ats, mids, nums := make([]time.Time, len(vals)), make([]int64, len(vals)), make([]float64, len(vals))
	for i, v := range vals {
		ats[i], mids[i], nums[i] = msgs[v.Msg].ReceivedAt, ids[v.Msg], v.Number
	}
	b.Queue(`INSERT INTO message_values (series_id, at, message_id, value)
		SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[], $4::float8[])`, sids, ats, mids, nums)
	return found, nil
}
