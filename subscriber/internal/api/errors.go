package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
)

// paramError is a bad query parameter: the client's fault, 400.
type paramError struct {
	Param  string
	Reason string
}

func (e *paramError) Error() string { return e.Param + ": " + e.Reason }

// statusError is a refusal with a status of its own and a detail for the
// client: a failed readiness check, a missing token, an unknown route.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

// problem is the body of every refusal, the same in both services.
type problem = service.Problem

// writeError is the one place that turns an error into an HTTP status;
// every handler, the stream and the console's routes answer through it.
// It logs what the client is not to blame for.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, detail := http.StatusInternalServerError, "internal error; the subscriber's log has the cause"
	var pe *paramError
	var se *statusError
	switch {
	case errors.As(err, &pe):
		status, detail = http.StatusBadRequest, err.Error()
	case errors.As(err, &se):
		status, detail = se.status, se.msg
	case errors.Is(err, readlimit.ErrBusy):
		status, detail = http.StatusServiceUnavailable, err.Error()
		w.Header().Set("Retry-After", strconv.Itoa(readlimit.RetryAfter))
		log.Warn("read refused", "method", r.Method, "path", r.URL.Path, "err", err)
	case errors.Is(err, context.DeadlineExceeded):
		status, detail = http.StatusServiceUnavailable, "the store did not answer in time"
		log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return // the client left
	default:
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, log, status, service.NewProblem(r, status, detail))
}

// refuse is writeError for the middleware of package service.
func refuse(log *slog.Logger) service.Refuse {
	return func(w http.ResponseWriter, r *http.Request, status int, detail string) {
		writeError(w, r, log, &statusError{status, detail})
	}
}

// writeOK answers 200 with the JSON body that write puts through a buffer
// of its own: the pages, series and topics, written piece by piece.
func writeOK(w http.ResponseWriter, log *slog.Logger, write func(*bufio.Writer) error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		log.Debug("write response", "err", err)
	}
}

// writeJSON answers v as JSON; a problem as application/problem+json.
func writeJSON(w http.ResponseWriter, log *slog.Logger, status int, v any) {
	ctype := "application/json"
	if _, ok := v.(problem); ok {
		ctype = "application/problem+json"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Debug("write response", "err", err)
	}
}
