// Package api is the subscriber's HTTP interface: health, readiness,
// metrics and reading stored messages.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

// Lister reads stored messages.
type Lister interface {
	List(ctx context.Context, q store.Query) ([]store.Message, error)
}

// Check is one condition of readiness; Func returns why it is not met.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// NewServer returns the handler of every route (see routes.go). hub feeds
// GET /messages/stream; publisherURL is where the web console publishes.
func NewServer(log *slog.Logger, messages Lister, ready []Check, metrics prometheus.Gatherer, hub *stream.Hub, publisherURL string) http.Handler {
	return routes(log, messages, ready, metrics, hub, publisherURL)
}

// Server wraps h with timeouts fit for this API. WriteTimeout bounds
// ordinary responses; a long-lived handler (a future event stream) lifts it
// for its own request with http.ResponseController.SetWriteDeadline.
func Server(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
