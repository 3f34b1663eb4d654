package main

import (
	"math"
	"slices"
	"time"
)

// Latencies is a set of measured durations.
type Latencies []time.Duration

// Percentile returns the nearest-rank q-quantile (0 < q <= 1) of l: the
// smallest sample such that at least q of all samples are at or below it.
// It sorts l in place and returns 0 for an empty set.
func (l Latencies) Percentile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	if !slices.IsSorted(l) {
		slices.Sort(l)
	}
	rank := int(math.Ceil(q * float64(len(l))))
	rank = min(max(rank, 1), len(l))
	return l[rank-1]
}

// ms is d in milliseconds as a float, the unit of every latency figure.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rate is n events over d, per second.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
