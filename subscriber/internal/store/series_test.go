package store

import (
	"math"
	"testing"
	"time"
)

func TestBucketStart(t *testing.T) {
	tests := []struct {
		t    time.Time
		step time.Duration
		want time.Time
	}{
		{time.Date(2026, 11, 24, 10, 7, 30, 999, time.UTC), time.Minute, time.Date(2026, 11, 24, 10, 7, 0, 0, time.UTC)},
		{time.Date(2026, 11, 24, 10, 7, 0, 0, time.UTC), time.Minute, time.Date(2026, 11, 24, 10, 7, 0, 0, time.UTC)},
		{time.Date(2026, 11, 24, 23, 59, 59, 0, time.FixedZone("CET", 3600)), 24 * time.Hour, time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)},
		{time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), time.Hour, time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC)},
		{time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC), time.Hour, time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC)},
		// 7 days from 1970-01-01, a Thursday.
		{time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC), 7 * 24 * time.Hour, time.Date(2026, 11, 19, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		if got := BucketStart(tt.t, tt.step); !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("BucketStart(%v, %v) = %v, want %v", tt.t, tt.step, got, tt.want)
		}
	}
}

func TestBuckets(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC).UnixMicro()
	b := NewBuckets(time.Minute)
	for _, r := range []struct {
		at int64
		v  float64
	}{
		{t0, 2}, {t0 + 1, 4}, {t0 + 59_999_999, 3}, // one minute
		{t0 + 60_000_000, -1}, // the next, on its edge
		{t0 + 180_000_000, 5}, // a gap of a minute
		{t0 + 180_000_000, 6}, // the same microsecond: the later is last
		{t0 + 240_000_000, math.MaxFloat64}, {t0 + 240_000_001, math.MaxFloat64},
	} {
		b.Add(r.at, r.v)
	}
	pts := b.Points()
	want := []Point{
		{Start: time.UnixMicro(t0).UTC(), Count: 3, Avg: 3, Min: 2, Max: 4, Last: 3},
		{Start: time.UnixMicro(t0 + 60_000_000).UTC(), Count: 1, Avg: -1, Min: -1, Max: -1, Last: -1},
		{Start: time.UnixMicro(t0 + 180_000_000).UTC(), Count: 2, Avg: 5.5, Min: 5, Max: 6, Last: 6},
		{Start: time.UnixMicro(t0 + 240_000_000).UTC(), Count: 2, Avg: math.MaxFloat64, Min: math.MaxFloat64, Max: math.MaxFloat64, Last: math.MaxFloat64},
	}
	if len(pts) != len(want) {
		t.Fatalf("%d points, want %d: %+v", len(pts), len(want), pts)
	}
	for i := range want {
		if pts[i] != want[i] {
			t.Errorf("point %d = %+v, want %+v", i, pts[i], want[i])
		}
	}
	if got := NewBuckets(time.Hour).Points(); got == nil || len(got) != 0 {
		t.Errorf("no values: %v, want an empty, non-nil slice", got)
	}
}
