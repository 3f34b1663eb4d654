package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// Formats of GET /messages.
const (
	formatJSON   = "json"
	formatCSV    = "csv"
	formatNDJSON = "ndjson"
)

// mediaTypes maps the media types GET /messages answers in to formats.
var mediaTypes = map[string]string{
	"application/json":     formatJSON,
	"text/csv":             formatCSV,
	"application/x-ndjson": formatNDJSON,
	"application/ndjson":   formatNDJSON,
}

// negotiate picks the format of GET /messages: the format parameter
// (json, csv or ndjson; for links, which cannot set Accept), else the
// media type of Accept with the highest q that it answers in (the first
// listed of equal ones), else JSON.
func negotiate(r *http.Request, v url.Values) (string, error) {
	if s, ok, err := one(v, "format"); err != nil || ok {
		if err == nil && s != formatJSON && s != formatCSV && s != formatNDJSON {
			err = &paramError{"format", "want json, csv or ndjson"}
		}
		return s, err
	}
	best, bestQ := formatJSON, 0.0
	for _, field := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(field, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			f, ok := mediaTypes[mt]
			if !ok {
				continue
			}
			q := 1.0
			if s, ok := params["q"]; ok {
				if q, err = strconv.ParseFloat(s, 64); err != nil || q < 0 || q > 1 {
					continue
				}
			}
			if q > bestQ {
				best, bestQ = f, q
			}
		}
	}
	return best, nil
}

// exportBatch is how many rows one read of an export takes (with the byte
// budget of readlimit.PageBytes).
const exportBatch = 1000

// exportWriteTimeout bounds the writing of one batch: the server's
// WriteTimeout would cut an export of many rows.
const exportWriteTimeout = 30 * time.Second

// export answers GET /messages as CSV or NDJSON: every row matching q's
// filter and times, oldest first, up to the newest id when it starts (rows
// stored meanwhile are left for the next export). It reads a batch at a
// time, each within a turn of gate, and writes it before reading the next:
// memory stays at one batch however many rows there are. A store failure
// after the answer has started cuts the connection, so that the client
// sees an incomplete transfer, never a short file that looks whole.
func export(w http.ResponseWriter, r *http.Request, log *slog.Logger, src Lister, gate *readlimit.Gate, q store.Query, format string) {
	ctx := r.Context()
	release, err := gate.Acquire(ctx)
	if err != nil {
		writeError(w, r, log, err)
		return
	}
	defer func() { release() }()
	newest, err := src.List(ctx, store.Query{Limit: 1})
	if err != nil {
		writeError(w, r, log, err)
		return
	}
	q.Before, q.Limit, q.MaxBytes, q.Oldest = -1, exportBatch, readlimit.PageBytes, true
	var batch []store.Message
	if len(newest) > 0 {
		q.Before = newest[0].ID
		if batch, err = src.List(ctx, q); err != nil {
			writeError(w, r, log, err)
			return
		}
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if format == formatCSV {
		h.Set("Content-Type", "text/csv; charset=utf-8; header=present")
		h.Set("Content-Disposition", `attachment; filename="messages.csv"`)
	} else {
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("Content-Disposition", `attachment; filename="messages.ndjson"`)
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	bw := bufio.NewWriterSize(w, 64<<10)
	cw := csv.NewWriter(bw)
	cw.UseCRLF = true
	if format == formatCSV {
		_ = cw.Write(csvHeader) // errors stay in cw: see Flush below
	}
	var rows int64
	for {
		if err := rc.SetWriteDeadline(time.Now().Add(exportWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			log.Debug("export: set write deadline", "err", err)
			return
		}
		for _, m := range batch {
			if format == formatCSV {
				_ = cw.Write(csvRecord(m))
			} else {
				writeMessage(bw, m)
				bw.WriteByte('\n')
			}
		}
		rows += int64(len(batch))
		cw.Flush()
		if err := errors.Join(cw.Error(), bw.Flush(), rc.Flush()); err != nil {
			log.Debug("export: client gone", "rows", rows, "err", err)
			return
		}
		release()
		if len(batch) == 0 || !store.Full(q, batch) {
			log.Debug("export done", "filter", q.Filter, "format", format, "rows", rows)
			return
		}
		q.After = batch[len(batch)-1].ID
		batch = nil // not held while waiting for a turn
		if release, err = gate.Await(ctx); err != nil {
			release = func() {}
			return // the client left
		}
		if batch, err = src.List(ctx, q); err != nil {
			if !errors.Is(err, context.Canceled) {
				log.Error("export failed after it started; cutting the connection", "filter", q.Filter, "rows", rows, "err", err)
			}
			release()
			panic(http.ErrAbortHandler)
		}
	}
}

var csvHeader = []string{"id", "topic", "payload", "encoding", "qos", "retained", "duplicate", "received_at"}

// csvRecord is the CSV row of m: the columns of the JSON of GET /messages.
// The payload is text where it is UTF-8 without a carriage return (which
// CSV readers turn into a line feed), else base64.
func csvRecord(m store.Message) []string {
	payload, encoding := string(m.Payload), "text"
	if !utf8.Valid(m.Payload) || bytes.IndexByte(m.Payload, '\r') >= 0 {
		payload, encoding = base64.StdEncoding.EncodeToString(m.Payload), "base64"
	}
	return []string{
		strconv.FormatInt(m.ID, 10), m.Topic, payload, encoding,
		strconv.Itoa(int(m.QoS)), strconv.FormatBool(m.Retained), strconv.FormatBool(m.Duplicate),
		m.ReceivedAt.UTC().Format(timeFormat),
	}
}
