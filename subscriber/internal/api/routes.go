package api

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/console"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

func routes(log *slog.Logger, messages Lister, ready []Check, metrics prometheus.Gatherer, hub *stream.Hub, publisherURL string) http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, log, errNotFound)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, log, errMethodNotAllowed)
	})

	r.Get("/healthz", handleHealthz())
	r.Get("/readyz", handleReadyz(log, ready))
	r.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	r.Get("/messages", handleListMessages(log, messages))
	r.Get("/messages/stream", stream.Handler(log, messages, hub, func(m store.Message) any { return NewMessage(m) }, stream.Options{}).ServeHTTP)
	ui := console.Handler(publisherURL)
	r.Get("/", ui.ServeHTTP)
	r.Get("/console/*", ui.ServeHTTP)
	return r
}
