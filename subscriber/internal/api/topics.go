package api

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"unicode/utf8"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// Limits of GET /topics.
const (
	DefaultTopics = 1000
	MaxTopics     = 10_000
)

// TopicLister reads stored topics.
type TopicLister interface {
	Topics(ctx context.Context, q store.TopicQuery) ([]store.Topic, error)
}

// parseTopics reads the parameters of GET /topics. The cursor is the last
// name of the previous page.
func parseTopics(v url.Values) (store.TopicQuery, error) {
	q := store.TopicQuery{Limit: DefaultTopics}
	var err error
	if q.Filter, err = filterParam(v); err != nil {
		return q, err
	}
	s, ok, err := one(v, "limit")
	if err != nil {
		return q, err
	}
	if ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxTopics {
			return q, &paramError{"limit", "want an integer from 1 to " + strconv.Itoa(MaxTopics)}
		}
		q.Limit = n
	}
	s, ok, err = one(v, "after")
	if err != nil {
		return q, err
	}
	if ok {
		if s == "" || len(s) > topic.MaxLen || !utf8.ValidString(s) {
			return q, &paramError{"after", "not a cursor returned as next by this endpoint"}
		}
		q.After = s
	}
	return q, nil
}

// handleTopics answers GET /topics: a page of topics by name, ending at the
// limit or at readlimit.PageBytes of their newest messages' payloads, read
// and written within one turn of the read gate.
func handleTopics(log *slog.Logger, src TopicLister, gate *readlimit.Gate) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := parseTopics(r.URL.Query())
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
		topics, next, err := readTopics(r.Context(), src, q)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeOK(w, log, func(bw *bufio.Writer) error {
			writeTopics(bw, topics, next)
			return nil
		})
	}
}

// readTopics reads the page q asks for and the cursor of the next one, nil
// when no topic follows.
func readTopics(ctx context.Context, src TopicLister, q store.TopicQuery) ([]store.Topic, *string, error) {
	want := q.Limit
	q.Limit++ // one more tells whether there is a next page
	q.MaxBytes = readlimit.PageBytes
	topics, err := src.Topics(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	more := false
	switch {
	case len(topics) > want:
		topics, more = topics[:want], true
	case len(topics) > 0 && len(topics) < q.Limit:
		var n int64
		for _, t := range topics {
			n += int64(len(t.Last.Payload))
		}
		if n >= q.MaxBytes {
			peek := q
			peek.After, peek.Limit, peek.MaxBytes = topics[len(topics)-1].Name, 1, 0
			rest, err := src.Topics(ctx, peek)
			if err != nil {
				return nil, nil, err
			}
			more = len(rest) > 0
		}
	}
	if !more {
		return topics, nil, nil
	}
	next := topics[len(topics)-1].Name
	return topics, &next, nil
}

// writeTopics writes {"topics": [...], "next": next} as it goes; each
// topic's last message is the JSON of GET /messages.
func writeTopics(w *bufio.Writer, topics []store.Topic, next *string) {
	var num [64]byte
	w.WriteString(`{"topics":[`)
	for i, t := range topics {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteString(`{"topic":`)
		writeString(w, []byte(t.Name))
		w.WriteString(`,"count":`)
		w.Write(strconv.AppendInt(num[:0], t.Count, 10))
		w.WriteString(`,"first_at":"`)
		w.Write(t.FirstAt.UTC().AppendFormat(num[:0], timeFormat))
		w.WriteString(`","last_at":"`)
		w.Write(t.LastAt.UTC().AppendFormat(num[:0], timeFormat))
		w.WriteString(`","last":`)
		writeMessage(w, t.Last)
		w.WriteString(`,"values":{`)
		for k, v := range t.Values { // by field, as the stores give them
			if k > 0 {
				w.WriteByte(',')
			}
			writeString(w, []byte(v.Field))
			w.WriteByte(':')
			w.Write(appendFloat(num[:0], v.Number))
		}
		w.WriteString("}}")
	}
	w.WriteString(`],"next":`)
	if next == nil {
		w.WriteString("null")
	} else {
		writeString(w, []byte(*next))
	}
	w.WriteString("}\n")
}
