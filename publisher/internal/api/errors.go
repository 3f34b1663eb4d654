package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

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
