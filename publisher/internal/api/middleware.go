package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/go-chi/cors"
	"github.com/prometheus/client_golang/prometheus"
)

// refuseCrossOrigin refuses, with 403, the browser requests that change
// something (POST) and come from an origin that is neither the publisher's
// own nor trusted (CORS_ALLOWED_ORIGINS). Without it, and with API_TOKEN
// empty, any web page a user opens could publish through a publisher on
// their machine or network: a fetch with mode no-cors is sent without asking
// the publisher first, and a body without Content-Type is read as JSON.
// Browsers say where a request comes from (Sec-Fetch-Site, Origin); a
// request without those headers (curl, scripts, devices) passes.
// net/http's CrossOriginProtection decides.
//
// "*" trusts every origin, so the check is off: the CORS answers then let
// any page call the API in the open anyway, and only API_TOKEN (which a
// browser never sends by itself) keeps pages out.
func refuseCrossOrigin(log *slog.Logger, trusted []string) (func(http.Handler) http.Handler, error) {
	if slices.Contains(trusted, "*") {
		return func(next http.Handler) http.Handler { return next }, nil
	}
	p := http.NewCrossOriginProtection()
	for _, o := range trusted {
		if err := p.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("CORS_ALLOWED_ORIGINS: %w", err)
		}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if p.Check(r) != nil {
				from := "a page on another site (no Origin)"
				if o := r.Header.Get("Origin"); o != "" {
					from = fmt.Sprintf("origin %.200q", o)
				}
				writeError(log, w, r, &statusError{http.StatusForbidden, "cross-origin request refused: " + from +
					" is not in CORS_ALLOWED_ORIGINS, and a browser may publish only from the origins listed there"})
				return
			}
			next.ServeHTTP(w, r)
		})
	}, nil
}

// allowCrossOrigin lets browsers on the allowed origins call the API and
// answers their preflight requests. It runs before routing, so preflights
// need no routes of their own and never meet the token check (browsers
// send no credentials on a preflight). Without allowed origins it adds
// nothing: browsers then keep other origins' pages to themselves.
func allowCrossOrigin(allowed []string) func(http.Handler) http.Handler {
	if len(allowed) == 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	return cors.Handler(cors.Options{
		AllowedOrigins: allowed,
		AllowedMethods: []string{http.MethodGet, http.MethodPost},
		AllowedHeaders: []string{"Authorization", "Content-Type"},
		ExposedHeaders: []string{"WWW-Authenticate"},
		MaxAge:         600,
	})
}

type httpMetrics struct {
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_http_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "publisher_http_request_seconds",
			Help:    "HTTP request duration by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register http metrics: %w", err)
		}
	}
	return m, nil
}

// observe logs and counts every request by route pattern, so that the
// metrics' labels stay bounded whatever paths clients send.
func observe(log *slog.Logger, m *httpMetrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(rec, r)
			d := time.Since(start)
			status := rec.Status()
			if status == 0 {
				status = http.StatusOK // nothing written
			}
			route := "unmatched"
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				route = rc.RoutePattern()
			}
			if m != nil {
				m.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
				m.seconds.WithLabelValues(route).Observe(d.Seconds())
			}
			// Refused and failed requests are logged at INFO (failures also
			// at WARN, by writeProblem); answered ones only at DEBUG: the
			// metrics above count them, and a line per publish cost about a
			// tenth of the publisher's CPU under load. Probes are DEBUG.
			level := slog.LevelDebug
			if status >= 400 && route != "/healthz" && route != "/readyz" && route != "/metrics" {
				level = slog.LevelInfo
			}
			if !log.Enabled(r.Context(), level) {
				return
			}
			log.LogAttrs(r.Context(), level, "http request", slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", status), slog.Int("bytes", rec.BytesWritten()), slog.Duration("duration", d), slog.String("remote", r.RemoteAddr))
		})
	}
}
