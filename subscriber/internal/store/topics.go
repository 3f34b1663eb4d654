package store

import (
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/values"
)

// TopicQuery selects stored topics by name, in ascending byte order.
type TopicQuery struct {
	Filter string // a valid MQTT topic filter
	After  string // only names after this one; "" is from the start
	Limit  int    // at most this many topics
	// MaxBytes, when > 0, bounds the payloads of the topics' Last
	// messages as Query.MaxBytes bounds a page of messages: the result
	// ends with the topic that reaches it, the first is returned whatever
	// its size.
	MaxBytes int64
}

// Topic is what the store knows of one topic.
type Topic struct {
	Name    string
	Count   int64     // messages stored
	FirstAt time.Time // ReceivedAt of the oldest stored message (lowest id)
	LastAt  time.Time // ReceivedAt of Last
	Last    Message   // the newest stored message (highest id)
	// Values are the newest value of each field that the topic's
	// messages had (see Point.Last for which is newest), by field name.
	Values []values.Value
}

// Value returns the newest value of field.
func (t Topic) Value(field string) (float64, bool) {
	for _, v := range t.Values {
		if v.Field == field {
			return v.Number, true
		}
	}
	return 0, false
}
