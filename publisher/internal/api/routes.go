package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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
			r.Use(requireToken(log, cfg.APIToken))
		}
		r.Method(http.MethodPost, "/publish", handlePublish(log, lim, b))
		r.Method(http.MethodPost, "/mqtt/publish", handlePublish(log, lim, b)) // the Spring Boot original's path
		r.Method(http.MethodPost, "/publish/batch", handlePublishBatch(log, lim, b))
	})

	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		writeError(log, w, req, &kindError{kind: errNotFound, msg: fmt.Sprintf("no route for %s", req.URL.Path)})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			if r.Match(chi.NewRouteContext(), m, req.URL.Path) {
				allow = append(allow, m)
			}
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(log, w, req, &kindError{kind: errMethodNotAllowed, msg: fmt.Sprintf("%s is not allowed on %s (allowed: %s)", req.Method, req.URL.Path, strings.Join(allow, ", "))})
	})
}
