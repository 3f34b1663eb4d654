// Package api is the subscriber's HTTP interface: health, readiness,
// metrics and reading stored messages.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

// Lister reads stored messages.
type Lister interface {
	List(ctx context.Context, q store.Query) ([]store.Message, error)
}

// Reader is what the API reads from the store: messages, time buckets of
// their values, and topics.
type Reader interface {
	Lister
	SeriesReader
	TopicLister
}

// Check is one condition of readiness; Func returns why it is not met.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// Options are the settings of the HTTP interface beyond its dependencies.
type Options struct {
	// PublisherURL is where the web console publishes (empty: nowhere).
	PublisherURL string
	// APIToken, when set, is the bearer token every route but the
	// probes, the metrics and the console's files needs.
	APIToken string
	// Gate bounds concurrent reads of stored messages; nil is a gate of
	// readlimit.Concurrent turns and readlimit.Wait.
	Gate *readlimit.Gate
}

// NewServer returns the handler of every route (see routes.go). hub feeds
// GET /messages/stream.
func NewServer(log *slog.Logger, st Reader, ready []Check, metrics prometheus.Gatherer, hub *stream.Hub, opt Options) http.Handler {
	if opt.Gate == nil {
		opt.Gate = readlimit.New(readlimit.Concurrent, readlimit.Wait)
	}
	r := chi.NewRouter()
	addRoutes(r, log, st, ready, metrics, hub, opt)
	return r
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
