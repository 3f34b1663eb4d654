package api

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/config"
)

// addRoutes is the whole API surface.
func addRoutes(r chi.Router, log *slog.Logger, cfg config.Config, lim limits, b Broker, reg *prometheus.Registry, crossOrigin func(http.Handler) http.Handler) {
	r.Method(http.MethodGet, "/healthz", handleHealthz(log))
	r.Method(http.MethodGet, "/readyz", handleReadyz(log, b))
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))

	r.Group(func(r chi.Router) {
		r.Use(crossOrigin) // a page elsewhere must not publish through the user's browser
		if cfg.APIToken != "" {
			r.Use(service.RequireToken(cfg.APIToken, "publisher", refuse(log)))
		}
		r.Method(http.MethodPost, "/publish", handlePublish(log, lim, b))
		r.Method(http.MethodPost, "/mqtt/publish", handlePublish(log, lim, b)) // the Spring Boot original's path
		r.Method(http.MethodPost, "/publish/batch", handlePublishBatch(log, lim, b))
	})

	service.Unrouted(r, refuse(log))
}
