package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// Kinds of request error. They are wrapped by the errors the handlers return
// and mapped to a status in statusOf, the only place that does so.
var (
	errBadRequest           = errors.New("bad request")
	errUnauthorized         = errors.New("unauthorized")
	errForbidden            = errors.New("forbidden")
	errNotFound             = errors.New("not found")
	errMethodNotAllowed     = errors.New("method not allowed")
	errTooLarge             = errors.New("content too large")
	errUnsupportedMediaType = errors.New("unsupported media type")
)

// statusOf maps an error to the HTTP status of its problem details.
func statusOf(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, errForbidden):
		return http.StatusForbidden
	case errors.Is(err, errNotFound):
		return http.StatusNotFound
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errUnsupportedMediaType):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, errBadRequest), errors.Is(err, message.ErrInvalid):
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

// kindError is an error of one of the kinds above with a message for the
// client.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func badRequestf(format string, args ...any) error {
	return &kindError{kind: errBadRequest, msg: fmt.Sprintf(format, args...)}
}

func tooLargef(format string, args ...any) error {
	return &kindError{kind: errTooLarge, msg: fmt.Sprintf(format, args...)}
}

// itemError names the batch item at fault; problem details carry its index.
type itemError struct {
	index int
	err   error
}

func (e *itemError) Error() string { return fmt.Sprintf("messages[%d]: %v", e.index, e.err) }
func (e *itemError) Unwrap() error { return e.err }
