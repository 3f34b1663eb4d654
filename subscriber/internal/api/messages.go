package api

import (
	"bufio"
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"unicode/utf8"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// Limits of GET /messages.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Message is the JSON form of a stored message, shared by every endpoint
// that shows one.
type Message struct {
	ID         int64  `json:"id"`
	Topic      string `json:"topic"`
	Payload    string `json:"payload"`
	Encoding   string `json:"encoding"`
	QoS        byte   `json:"qos"`
	Retained   bool   `json:"retained"`
	Duplicate  bool   `json:"duplicate"`
	ReceivedAt string `json:"received_at"`
}

// timeFormat is RFC 3339 with exactly six fractional digits.
const timeFormat = "2006-01-02T15:04:05.000000Z07:00"

// NewMessage converts m: text when the payload is UTF-8, else base64.
func NewMessage(m store.Message) Message {
	out := Message{
		ID: m.ID, Topic: m.Topic, QoS: m.QoS, Retained: m.Retained, Duplicate: m.Duplicate,
		ReceivedAt: m.ReceivedAt.UTC().Format(timeFormat),
		Payload:    string(m.Payload), Encoding: "text",
	}
	if !utf8.Valid(m.Payload) {
		out.Payload, out.Encoding = base64.StdEncoding.EncodeToString(m.Payload), "base64"
	}
	return out
}

// parseQuery reads the parameters of GET /messages. The cursor is the id
// of the next message to show; clients treat it as opaque.
func parseQuery(v url.Values) (store.Query, error) {
	q := store.Query{Filter: "#", Limit: DefaultLimit}
	var err error
	if q.Filter, err = filterParam(v); err != nil {
		return q, err
	}
	if q.Since, q.Until, err = timeParams(v); err != nil {
		return q, err
	}
	s, ok, err := one(v, "limit")
	if err != nil {
		return q, err
	}
	if ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return q, &paramError{"limit", "want an integer from 1 to 1000"}
		}
		q.Limit = n
	}
	s, ok, err = one(v, "before")
	if err != nil {
		return q, err
	}
	if ok {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return q, &paramError{"before", "not a cursor returned as next by this endpoint"}
		}
		q.Before = n
	}
	return q, nil
}

// handleListMessages answers GET /messages. A page ends at the limit or
// at readlimit.PageBytes of payload, whichever comes first (at least one
// row), and is written as it is encoded; gate bounds how many pages are
// read and written at once. Asked for CSV or NDJSON (Accept, or the format
// parameter), it exports every matching row instead (see export).
func handleListMessages(log *slog.Logger, messages Lister, gate *readlimit.Gate) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query()
		q, err := parseQuery(v)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		format, err := negotiate(r, v)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if format != formatJSON {
			for _, name := range []string{"limit", "before"} {
				if v.Has(name) {
					writeError(w, r, log, &paramError{name, "an export (CSV or NDJSON) has every matching row: narrow it with topic, since and until"})
					return
				}
			}
			export(w, r, log, messages, gate, q, format)
			return
		}
		// The turn is held until the page is written: its rows are in
		// memory until then.
		release, err := gate.Acquire(r.Context())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		defer release()
		msgs, next, err := readPage(r.Context(), messages, q)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeOK(w, log, func(bw *bufio.Writer) error {
			writePage(bw, msgs, next)
			return nil
		})
	}
}

// readPage reads the page q asks for and the cursor of the next one, nil
// when no row follows.
func readPage(ctx context.Context, messages Lister, q store.Query) ([]store.Message, *string, error) {
	want := q.Limit
	q.Limit++ // one more tells whether there is a next page
	q.MaxBytes = readlimit.PageBytes
	msgs, err := messages.List(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	more := false
	switch {
	case len(msgs) > want:
		msgs, more = msgs[:want], true
	case len(msgs) > 0 && store.Full(q, msgs):
		// Cut by the byte budget: whether a row follows takes one more
		// look, of one row.
		last := msgs[len(msgs)-1].ID
		if last > 1 {
			peek := q
			peek.Before, peek.Limit, peek.MaxBytes = last-1, 1, 0
			rest, err := messages.List(ctx, peek)
			if err != nil {
				return nil, nil, err
			}
			more = len(rest) > 0
		}
	}
	if !more {
		return msgs, nil, nil
	}
	next := strconv.FormatInt(msgs[len(msgs)-1].ID-1, 10)
	return msgs, &next, nil
}
