// Package api is the publisher's HTTP adapter: routes, request decoding,
// authentication and RFC 9457 problem details.
package api

import (
	"log/slog"
	"net/http"
	"slices"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/config"
)

// Broker is everything the API needs from the MQTT side.
type Broker interface {
	Publisher
	BatchPublisher
	Connection
}

// NewServer returns the publisher's HTTP API. reg receives the HTTP metrics
// and is served on /metrics with everything else registered on it.
func NewServer(log *slog.Logger, cfg config.Config, b Broker, reg *prometheus.Registry) (http.Handler, error) {
	m, err := newHTTPMetrics(reg)
	if err != nil {
		return nil, err
	}
	lim := newLimits(byte(cfg.QoS), cfg.MaxMessageBytes, cfg.MaxBodyBytes(), cfg.MaxBatchBytes)
	crossOrigin, err := refuseCrossOrigin(log, cfg.CORSAllowedOrigins)
	if err != nil {
		return nil, err
	}
	if slices.Contains(cfg.CORSAllowedOrigins, "*") && cfg.APIToken == "" {
		log.Warn("CORS_ALLOWED_ORIGINS is * and API_TOKEN is empty: any web page a user opens can publish through this publisher")
	}
	r := chi.NewRouter()
	r.Use(service.Recover(log, refuse(log)), observe(log, m), allowCrossOrigin(cfg.CORSAllowedOrigins))
	addRoutes(r, log, cfg, lim, b, reg, crossOrigin)
	return r, nil
}
