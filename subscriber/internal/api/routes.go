package api

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/console"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

func routes(log *slog.Logger, st Reader, ready []Check, metrics prometheus.Gatherer, hub *stream.Hub, opt Options) http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, log, errNotFound)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, log, errMethodNotAllowed)
	})

	// Open with API_TOKEN too: probes, the scraper and the console's own
	// files, which ask the user for the token.
	r.Get("/healthz", handleHealthz())
	r.Get("/readyz", handleReadyz(log, ready))
	r.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	ui := console.Handler(console.Config{PublisherURL: opt.PublisherURL, TokenRequired: opt.APIToken != ""})
	r.Get("/", ui.ServeHTTP)
	r.Get("/console/*", ui.ServeHTTP)

	r.Group(func(r chi.Router) {
		if opt.APIToken != "" {
			r.Use(requireToken(log, opt.APIToken))
		}
		r.Get("/messages", handleListMessages(log, st, opt.Gate))
		r.Get("/messages/stream", stream.Handler(log, st, hub, func(m store.Message) any { return NewMessage(m) },
			stream.Options{Gate: opt.Gate, PageBytes: readlimit.PageBytes}).ServeHTTP)
		r.Get("/series", handleSeries(log, st, opt.Gate))
		r.Get("/topics", handleTopics(log, st, opt.Gate))
	})
	return r
}
