package api

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

func handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n")) //nolint:errcheck // the client left
	}
}

func handleReadyz(log *slog.Logger, checks []Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var failed []string
		for _, c := range checks {
			if err := c.Func(ctx); err != nil {
				failed = append(failed, c.Name+": "+err.Error())
			}
		}
		if len(failed) > 0 {
			writeError(w, r, log, &statusError{http.StatusServiceUnavailable, strings.Join(failed, "; ")})
			return
		}
		writeJSON(w, log, http.StatusOK, map[string]string{"status": "ready"})
	}
}
