package api

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/console"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

// addRoutes is the whole API surface.
func addRoutes(r chi.Router, log *slog.Logger, st Reader, ready []Check, metrics prometheus.Gatherer, hub *stream.Hub, opt Options) {
	r.Use(service.Recover(log, refuse(log)))

	// Open with API_TOKEN too: probes, the scraper and the console's own
	// files, which ask the user for the token.
	r.Get("/healthz", handleHealthz())
	r.Get("/readyz", handleReadyz(log, ready))
	r.Get("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}).ServeHTTP)
	for path, h := range console.Files(console.Config{PublisherURL: opt.PublisherURL, TokenRequired: opt.APIToken != ""}) {
		r.Method(http.MethodGet, path, h)
		r.Method(http.MethodHead, path, h)
	}

	r.Group(func(r chi.Router) {
		if opt.APIToken != "" {
			r.Use(service.RequireToken(opt.APIToken, "subscriber", refuse(log)))
		}
		r.Get("/messages", handleListMessages(log, st, opt.Gate))
		r.Get("/messages/stream", handleStream(log, st, hub, streamOptions{Gate: opt.Gate}))
		r.Get("/series", handleSeries(log, st, opt.Gate))
		r.Get("/topics", handleTopics(log, st, opt.Gate))
	})

	service.Unrouted(r, refuse(log))
}
