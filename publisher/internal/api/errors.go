// The one mapping of errors to HTTP statuses and the one writer of answers,
// problem details and JSON alike.

package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// statusOf maps an error to the HTTP status of its problem details.
func statusOf(err error) int {
	var se *statusError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &se):
		return se.status
	case errors.Is(err, message.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, message.ErrNotConnected), errors.Is(err, message.ErrConnectionLost):
		return http.StatusServiceUnavailable
	case errors.Is(err, message.ErrTimeout):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// statusError is a refusal of the request with a status of its own and a
// message for the client.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

func badRequestf(format string, args ...any) error {
	return &statusError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func tooLargef(format string, args ...any) error {
	return &statusError{http.StatusRequestEntityTooLarge, fmt.Sprintf(format, args...)}
}

// itemError names the batch item at fault; problem details carry its index.
type itemError struct {
	index int
	err   error
}

func (e *itemError) Error() string { return fmt.Sprintf("messages[%d]: %v", e.index, e.err) }
func (e *itemError) Unwrap() error { return e.err }

// problem is the problem details of both services, with what a batch
// adds.
type problem struct {
	service.Problem
	// Index is the 0-based index of the batch item at fault.
	Index *int `json:"index,omitempty"`
	// Results are the per-item outcomes of a batch that failed part-way.
	Results []batchResult `json:"results,omitempty"`
}

// newProblem describes err. The details of a client error are meant for the
// client; an internal error's are not, so those say only where to look.
func newProblem(r *http.Request, err error) problem {
	status := statusOf(err)
	p := problem{Problem: service.NewProblem(r, status, err.Error())}
	if status == http.StatusInternalServerError {
		p.Detail = "internal error; the publisher's log has the cause"
	}
	var ie *itemError
	if errors.As(err, &ie) {
		p.Index = &ie.index
	}
	return p
}

// writeError answers err as problem details and logs what the server, not
// the client, must look into.
func writeError(log *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	writeProblem(log, w, r, newProblem(r, err), err)
}

func writeProblem(log *slog.Logger, w http.ResponseWriter, r *http.Request, p problem, err error) {
	if p.Status >= 500 {
		log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", p.Status, "err", err)
	} else {
		log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "status", p.Status, "err", err)
	}
	writeJSON(log, w, "application/problem+json", p.Status, p)
}

// Header values shared by every answer; net/http only reads them.
var (
	headerNosniff     = []string{"nosniff"}
	headerJSON        = []string{"application/json"}
	headerProblemJSON = []string{"application/problem+json"}
)

func writeJSON(log *slog.Logger, w http.ResponseWriter, contentType string, status int, v any) {
	buf := buffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 { // a large batch's buffer is not kept
			buf.Reset()
			buffers.Put(buf)
		}
	}()
	if err := marshal(buf, v); err != nil {
		// Only a programming error gets here: every value written is plain data.
		log.Error("encode response", "err", err)
		status = http.StatusInternalServerError
		contentType = "application/problem+json"
		buf.Reset()
		buf.WriteString(`{"type":"about:blank","title":"Internal Server Error","status":500,"detail":"internal error; the publisher's log has the cause"}` + "\n")
	}
	h := w.Header()
	switch contentType {
	case "application/json":
		h["Content-Type"] = headerJSON
	case "application/problem+json":
		h["Content-Type"] = headerProblemJSON
	default:
		h.Set("Content-Type", contentType)
	}
	h["X-Content-Type-Options"] = headerNosniff
	w.WriteHeader(status)
	if _, err := w.Write(buf.Bytes()); err != nil {
		log.Debug("write response", "err", err)
	}
}

// refuse is writeError for the middleware of package service.
func refuse(log *slog.Logger) service.Refuse {
	return func(w http.ResponseWriter, r *http.Request, status int, detail string) {
		writeError(log, w, r, &statusError{status, detail})
	}
}
