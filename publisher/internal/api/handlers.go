package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// Publisher sends one message and waits for its acknowledgement.
type Publisher interface {
	Publish(ctx context.Context, m message.Message) error
}

// BatchPublisher sends messages in order and returns an error, or nil, per
// message.
type BatchPublisher interface {
	PublishAll(ctx context.Context, msgs []message.Message) []error
}

// Connection reports whether the broker connection is open.
type Connection interface {
	Connected() bool
}

type publishResponse struct {
	Topic  string `json:"topic"`
	QoS    byte   `json:"qos"`
	Retain bool   `json:"retain"`
	Bytes  int    `json:"bytes"`
}

func handlePublish(log *slog.Logger, lim limits, p Publisher) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r, lim.maxBody)
		if err != nil {
			writeError(log, w, r, err)
			return
		}
		m, err := decodePublish(body, lim)
		if err != nil {
			writeError(log, w, r, err)
			return
		}
		if err := p.Publish(r.Context(), m); err != nil {
			writeError(log, w, r, err)
			return
		}
		log.Debug("published", "topic", m.Topic, "qos", m.QoS, "retain", m.Retain, "bytes", len(m.Payload))
		writeJSON(log, w, "application/json", http.StatusOK, publishResponse{
			Topic: m.Topic, QoS: m.QoS, Retain: m.Retain, Bytes: len(m.Payload),
		})
	})
}

// batchResult is the outcome of one batch item.
type batchResult struct {
	Index  int    `json:"index"`
	Topic  string `json:"topic"`
	QoS    byte   `json:"qos"`
	Retain bool   `json:"retain"`
	Bytes  int    `json:"bytes"`
	// Acknowledged: written (QoS 0), PUBACK (QoS 1) or PUBCOMP (QoS 2) seen.
	Acknowledged bool `json:"acknowledged"`
	// Status is what a single publish of this item would have answered.
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"`
}

type batchResponse struct {
	Acknowledged int           `json:"acknowledged"`
	Results      []batchResult `json:"results"`
}

func handlePublishBatch(log *slog.Logger, lim limits, p BatchPublisher) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r, lim.maxBatchBody)
		if err != nil {
			writeError(log, w, r, err)
			return
		}
		msgs, err := decodeBatch(body, lim)
		if err != nil {
			writeError(log, w, r, err)
			return
		}
		errs := p.PublishAll(r.Context(), msgs)
		results := make([]batchResult, len(msgs))
		acked := 0
		var firstErr error
		for i, m := range msgs {
			results[i] = batchResult{
				Index: i, Topic: m.Topic, QoS: m.QoS, Retain: m.Retain, Bytes: len(m.Payload),
				Acknowledged: errs[i] == nil, Status: statusOf(errs[i]),
			}
			if errs[i] != nil {
				results[i].Error = errs[i].Error()
				if firstErr == nil {
					firstErr = errs[i]
				}
				continue
			}
			acked++
		}
		if firstErr != nil {
			pr := newProblem(r, fmt.Errorf("%d of %d messages acknowledged; first failure: %w", acked, len(msgs), firstErr))
			pr.Results = results
			writeProblem(log, w, r, pr, firstErr)
			return
		}
		log.Debug("published batch", "messages", len(msgs))
		writeJSON(log, w, "application/json", http.StatusOK, batchResponse{Acknowledged: acked, Results: results})
	})
}

type statusResponse struct {
	Status string `json:"status"`
}

func handleHealthz(log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(log, w, "application/json", http.StatusOK, statusResponse{Status: "ok"})
	})
}

func handleReadyz(log *slog.Logger, c Connection) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.Connected() {
			// Not worth a log line: probes ask often while the broker is away.
			writeJSON(log, w, "application/problem+json", http.StatusServiceUnavailable, newProblem(r, message.ErrNotConnected))
			return
		}
		writeJSON(log, w, "application/json", http.StatusOK, statusResponse{Status: "ready"})
	})
}

// readBody reads a JSON request body of at most limit bytes. A declared
// length over the limit is refused before anything is read; a longer body
// without one is cut off at the limit.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	if r.ContentLength > limit {
		return nil, tooLargef("body is %d bytes, more than the limit of %d", r.ContentLength, limit)
	}
	// Sized by the declared length (one more byte to see the end), so that
	// the usual body is read into one allocation.
	size := int64(512)
	if r.ContentLength >= 0 {
		size = r.ContentLength + 1
	}
	body := make([]byte, 0, size)
	rd := http.MaxBytesReader(w, r.Body, limit)
	for {
		if len(body) == cap(body) {
			body = append(body, 0)[:len(body)]
		}
		n, err := rd.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if err == io.EOF {
			return body, nil
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, tooLargef("body is more than the limit of %d bytes", limit)
			}
			return nil, badRequestf("read body: %v", err)
		}
	}
}

// checkContentType accepts no Content-Type (read as JSON), application/json
// and any application/*+json, in UTF-8.
func checkContentType(ct string) error {
	if ct == "" {
		return nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return &statusError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is malformed, want application/json", ct)}
	}
	if mt != "application/json" && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return &statusError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not JSON, want application/json", mt)}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return &statusError{http.StatusUnsupportedMediaType, fmt.Sprintf("charset %q is not supported, want utf-8", cs)}
	}
	return nil
}
