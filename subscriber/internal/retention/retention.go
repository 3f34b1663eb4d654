// Package retention deletes messages older than a maximum age, in small
// batches so that the store's writer is never held for long.
package retention

import (
	"context"
	"log/slog"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/metrics"
)

// Deleter deletes at most limit rows received before cutoff.
type Deleter interface {
	DeleteBefore(ctx context.Context, cutoff time.Time, limit int) (int64, error)
}

// Batch is how many rows one delete statement removes.
const Batch = 1000

// Interval is how often Run looks for old rows, for a maximum age.
func Interval(maxAge time.Duration) time.Duration {
	return min(max(maxAge/10, time.Second), time.Minute)
}

// Run deletes rows older than maxAge every Interval(maxAge) until ctx ends.
func Run(ctx context.Context, log *slog.Logger, d Deleter, maxAge time.Duration, m *metrics.Metrics) {
	t := time.NewTicker(Interval(maxAge))
	defer t.Stop()
	for {
		Sweep(ctx, log, d, time.Now().Add(-maxAge), m)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes every row before cutoff, Batch rows at a time, pausing
// between batches to let ingest write.
func Sweep(ctx context.Context, log *slog.Logger, d Deleter, cutoff time.Time, m *metrics.Metrics) int64 {
	var total int64
	for ctx.Err() == nil {
		n, err := d.DeleteBefore(ctx, cutoff, Batch)
		if err != nil {
			if ctx.Err() == nil {
				m.StoreErrors.Inc()
				log.Warn("retention delete failed", "err", err)
			}
			break
		}
		total += n
		m.RetentionDeleted.Add(float64(n))
		if n < Batch {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	if total > 0 {
		log.Info("retention deleted old messages", "count", total, "before", cutoff.UTC().Format(time.RFC3339))
	}
	return total
}
