package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
)

// paramError is a bad query parameter: the client's fault, 400.
type paramError struct {
	Param  string
	Reason string
}

func (e *paramError) Error() string { return e.Param + ": " + e.Reason }

// notReadyError is a failed readiness check, 503.
type notReadyError struct{ reason string }

func (e *notReadyError) Error() string { return e.reason }

// authError is a request without the right bearer token, 401. The caller
// sets WWW-Authenticate.
type authError struct{ msg string }

func (e *authError) Error() string { return e.msg }

var (
	errNotFound         = errors.New("no such resource")
	errMethodNotAllowed = errors.New("method not allowed")
)

type problem struct {
	Type   string `json:"type,omitempty"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// writeError is the one place that turns an error into an HTTP status. It
// logs what the client is not to blame for.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	p := problem{Status: http.StatusInternalServerError, Detail: "internal error"}
	var pe *paramError
	var nr *notReadyError
	var ae *authError
	switch {
	case errors.As(err, &pe):
		p.Status, p.Detail = http.StatusBadRequest, err.Error()
	case errors.As(err, &ae):
		p.Status, p.Detail = http.StatusUnauthorized, err.Error()
	case errors.Is(err, readlimit.ErrBusy):
		p.Status, p.Detail = http.StatusServiceUnavailable, err.Error()
		w.Header().Set("Retry-After", strconv.Itoa(readlimit.RetryAfter))
		log.Warn("read refused", "method", r.Method, "path", r.URL.Path, "err", err)
	case errors.As(err, &nr):
		p.Status, p.Detail = http.StatusServiceUnavailable, err.Error()
	case errors.Is(err, errNotFound):
		p.Status, p.Detail = http.StatusNotFound, r.URL.Path+": "+err.Error()
	case errors.Is(err, errMethodNotAllowed):
		p.Status, p.Detail = http.StatusMethodNotAllowed, r.Method+" "+r.URL.Path+": "+err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		p.Status, p.Detail = http.StatusServiceUnavailable, "the store did not answer in time"
		log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return // the client left
	default:
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	p.Title = http.StatusText(p.Status)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	if err := json.NewEncoder(w).Encode(p); err != nil {
		log.Debug("write problem", "err", err)
	}
}

func writeJSON(w http.ResponseWriter, log *slog.Logger, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Debug("write response", "err", err)
	}
}
