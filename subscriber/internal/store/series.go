package store

import (
	"errors"
	"math"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/values"
)

// SeriesQuery selects the numeric values (package values) of the stored
// messages whose topic matches Filter, received in [Since, Until), and
// folds each topic's and field's values into buckets of Step.
type SeriesQuery struct {
	Filter string // a valid MQTT topic filter
	Field  string // one field; "" is every field
	Since  time.Time
	Until  time.Time
	// Step is the bucket size, a whole number of seconds. Buckets start at
	// multiples of Step since the Unix epoch, so that their edges are the
	// same in every query (a day's bucket starts at midnight UTC).
	Step time.Duration
	// MaxSeries bounds how many series (topic and field) may match: more
	// is an error wrapping ErrTooManySeries, before any value is read.
	MaxSeries int
}

// ErrTooManySeries is returned when a SeriesQuery matches more than
// MaxSeries series.
var ErrTooManySeries = errors.New("too many series")

// Series is the values of one field of one topic.
type Series struct {
	Topic  string
	Field  string
	Points []Point // ascending; buckets without values are left out
}

// Point is one bucket of a Series.
type Point struct {
	Start time.Time // UTC
	Count int64
	Avg   float64
	Min   float64
	Max   float64
	// Last is the value of the latest reading in the bucket: the latest
	// received, and of those received at the same microsecond, the one
	// stored last.
	Last float64
}

// BucketStart is the start of the bucket of step that holds t.
func BucketStart(t time.Time, step time.Duration) time.Time {
	return time.UnixMicro(floor(t.UnixMicro(), step.Microseconds())).UTC()
}

// floor is the greatest multiple of step not above us (before 1970 too).
func floor(us, step int64) int64 { return FloorDiv(us, step) * step }

// FloorDiv is the greatest integer not above a/b, for b > 0 (a/b rounds
// towards zero): the index of the span of b that holds a.
func FloorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// Buckets folds the values of one series into Points. The stores read a
// series' values in order (time, then message id) and hand each to Add, so
// that every store gives the same points, to the last bit of the averages.
type Buckets struct {
	step   int64 // microseconds
	points []Point
	cur    *Point
	end    int64   // the current bucket ends before this
	sum    float64 // of the current bucket
	mean   float64 // running mean of the current bucket, where sum overflows
}

// NewBuckets returns the buckets of step.
func NewBuckets(step time.Duration) *Buckets {
	return &Buckets{step: step.Microseconds()}
}

// Add takes the value v received at at (Unix microseconds), which must not
// be earlier than the one before.
func (b *Buckets) Add(at int64, v float64) {
	if b.cur == nil || at >= b.end {
		b.close()
		start := floor(at, b.step)
		b.points = append(b.points, Point{Start: time.UnixMicro(start).UTC(), Min: v, Max: v})
		b.cur = &b.points[len(b.points)-1]
		b.end, b.sum, b.mean = start+b.step, 0, 0
	}
	p := b.cur
	p.Count++
	b.sum += v
	b.mean += (v - b.mean) / float64(p.Count)
	p.Min, p.Max, p.Last = math.Min(p.Min, v), math.Max(p.Max, v), v
}

// close computes the average of the current bucket. A sum past the float64
// range (values near 1e308) takes the running mean, itself kept in range.
func (b *Buckets) close() {
	if b.cur == nil {
		return
	}
	avg := b.sum / float64(b.cur.Count)
	if math.IsInf(avg, 0) || math.IsNaN(avg) {
		avg = max(-math.MaxFloat64, min(math.MaxFloat64, b.mean))
	}
	b.cur.Avg = avg
	b.cur = nil
}

// Points returns the points so far; Add must not be called after it.
func (b *Buckets) Points() []Point {
	b.close()
	if b.points == nil {
		return []Point{}
	}
	return b.points
}

// MessageValue is a value of the message at index Msg of a batch.
type MessageValue struct {
	Msg int
	values.Value
}

// ExtractValues finds the values of msgs (package values), for the stores
// to write with the messages.
func ExtractValues(msgs []Message) []MessageValue {
	var out []MessageValue
	var buf []values.Value
	for i := range msgs {
		buf = values.Extract(buf[:0], msgs[i].Payload)
		for _, v := range buf {
			out = append(out, MessageValue{Msg: i, Value: v})
		}
	}
	return out
}
