package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/values"
)

// Bounds of GET /series.
const (
	// DefaultRange is the time range when since is not given: the day
	// before until.
	DefaultRange = 24 * time.Hour
	// DefaultPoints is the most buckets the default step gives.
	DefaultPoints = 300
	// MaxPoints bounds an answer: the series it may hold times the buckets
	// of each. Past it, the request is a 400.
	MaxPoints = 100_000
	// MaxSeries bounds the series of one answer, whatever the buckets.
	MaxSeries = 1000
	// MinStep and MaxStep bound the bucket size.
	MinStep = time.Second
	MaxStep = 31 * 24 * time.Hour
)

// niceSteps are the steps a default is chosen from, ascending.
var niceSteps = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	24 * time.Hour, 2 * 24 * time.Hour, 7 * 24 * time.Hour, 14 * 24 * time.Hour, MaxStep,
}

// seriesRequest is a parsed GET /series request.
type seriesRequest struct {
	store.SeriesQuery
	buckets int64 // per series
}

// buckets is how many buckets of step [since, until) touches. It counts in
// microseconds: a time.Duration cannot span more than 292 years.
func buckets(since, until time.Time, step time.Duration) int64 {
	start, end, s := store.BucketStart(since, step).UnixMicro(), until.UnixMicro(), step.Microseconds()
	return (end - start + s - 1) / s
}

// parseStep reads a bucket size: a Go duration (90s, 5m, 1h30m) or a whole
// number of days (1d, 7d).
func parseStep(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 || n > int(MaxStep/(24*time.Hour)) {
			return 0, &paramError{"step", fmt.Sprintf("%q: want a duration like 30s, 5m, 1h or 1d, from 1s to %s", s, formatStep(MaxStep))}
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, &paramError{"step", fmt.Sprintf("%q: want a duration like 30s, 5m, 1h or 1d, from 1s to %s", s, formatStep(MaxStep))}
		}
	}
	switch {
	case d < MinStep || d > MaxStep:
		return 0, &paramError{"step", fmt.Sprintf("%s is out of range: from 1s to %s", s, formatStep(MaxStep))}
	case d%time.Second != 0:
		return 0, &paramError{"step", fmt.Sprintf("%s is not a whole number of seconds", s)}
	}
	return d, nil
}

// formatStep writes d in the largest unit that divides it: 1d, 6h, 5m, 90s.
func formatStep(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		unit string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}} {
		if d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.unit
		}
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// parseSeries reads the parameters of GET /series; now is the default
// until.
func parseSeries(v url.Values, now time.Time) (seriesRequest, error) {
	var r seriesRequest
	var err error
	if r.Filter, err = filterParam(v); err != nil {
		return r, err
	}
	field, ok, err := one(v, "field")
	if err != nil {
		return r, err
	}
	if ok {
		if field == "" || len(field) > values.MaxFieldBytes || !utf8.ValidString(field) ||
			strings.ContainsFunc(field, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
			return r, &paramError{"field", fmt.Sprintf("want a field name like value or env.hum (1 to %d bytes of text)", values.MaxFieldBytes)}
		}
		r.Field = field
	}
	if r.Since, r.Until, err = timeParams(v); err != nil {
		return r, err
	}
	switch {
	case r.Until.IsZero() && r.Since.IsZero():
		r.Until = now
		r.Since = now.Add(-DefaultRange)
	case r.Until.IsZero():
		r.Until = now
		if !r.Until.After(r.Since) {
			return r, &paramError{"since", "must be before now when until is not given"}
		}
	case r.Since.IsZero():
		r.Since = r.Until.Add(-DefaultRange)
	}
	s, ok, err := one(v, "step")
	if err != nil {
		return r, err
	}
	if ok {
		if r.Step, err = parseStep(s); err != nil {
			return r, err
		}
	} else {
		for _, st := range niceSteps {
			r.Step = st
			if buckets(r.Since, r.Until, st) <= DefaultPoints {
				break
			}
		}
	}
	r.buckets = buckets(r.Since, r.Until, r.Step)
	if r.buckets > MaxPoints {
		return r, &paramError{"step", fmt.Sprintf("%s from %s to %s gives %d points per series, more than %d: widen step or narrow since and until",
			formatStep(r.Step), r.Since.Format(time.RFC3339), r.Until.Format(time.RFC3339), r.buckets, MaxPoints)}
	}
	r.MaxSeries = int(min(MaxSeries, MaxPoints/r.buckets))
	return r, nil
}

// SeriesReader reads time buckets of values.
type SeriesReader interface {
	Series(ctx context.Context, q store.SeriesQuery) ([]store.Series, error)
}

type seriesPoint struct {
	T     string  `json:"t"`
	Count int64   `json:"count"`
	Avg   float64 `json:"avg"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Last  float64 `json:"last"`
}

type seriesJSON struct {
	Topic  string        `json:"topic"`
	Field  string        `json:"field"`
	Points []seriesPoint `json:"points"`
}

type seriesAnswer struct {
	Topic  string       `json:"topic"`
	Field  *string      `json:"field"`
	Since  string       `json:"since"`
	Until  string       `json:"until"`
	Step   string       `json:"step"`
	Series []seriesJSON `json:"series"`
}

// handleSeries answers GET /series within a turn of the read gate; the
// answer is bounded by MaxPoints.
func handleSeries(log *slog.Logger, src SeriesReader, gate *readlimit.Gate) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := parseSeries(r.URL.Query(), time.Now())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		release, err := gate.Acquire(r.Context())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		defer release()
		series, err := src.Series(r.Context(), q.SeriesQuery)
		if errors.Is(err, store.ErrTooManySeries) {
			err = &paramError{"topic", fmt.Sprintf("%v (at %d points each, of %d in all): narrow the filter, give a field, or widen step", err, q.buckets, MaxPoints)}
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		a := seriesAnswer{Topic: q.Filter, Since: q.Since.UTC().Format(timeFormat), Until: q.Until.UTC().Format(timeFormat),
			Step: formatStep(q.Step), Series: make([]seriesJSON, len(series))}
		if q.Field != "" {
			a.Field = &q.Field
		}
		for i, s := range series {
			pts := make([]seriesPoint, len(s.Points))
			for k, p := range s.Points {
				pts[k] = seriesPoint{T: p.Start.UTC().Format(time.RFC3339), Count: p.Count, Avg: p.Avg, Min: p.Min, Max: p.Max, Last: p.Last}
			}
			a.Series[i] = seriesJSON{Topic: s.Topic, Field: s.Field, Points: pts}
		}
		writeOK(w, log, func(bw *bufio.Writer) error { return json.NewEncoder(bw).Encode(a) })
	}
}
