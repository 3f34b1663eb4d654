package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// Both services refuse alike: an unknown path is a 404 and a method a path
// does not take a 405 naming the path's methods in Allow, each as problem
// details of one shape.
func TestProblemSameInBothServices(t *testing.T) {
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, nil)
	pub := startPublisher(t, b, nil)
	sub.WaitReady(t, 15*time.Second)
	pub.WaitReady(t, 15*time.Second)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/no/such/path", 404, ""},
		{http.MethodPost, "/healthz", 405, "GET"},
		{http.MethodPut, "/readyz", 405, "GET"},
		{http.MethodDelete, "/metrics", 405, "GET"},
	}
	for _, tt := range tests {
		for _, svc := range []*harness.Service{pub, sub} {
			r := harness.Do(t, tt.method, svc.URL()+tt.path, "", nil)
			var p map[string]any
			if err := json.Unmarshal(r.Body, &p); err != nil {
				t.Errorf("%s %s%s: body %s: %v", tt.method, svc.URL(), tt.path, r.Body, err)
				continue
			}
			want := map[string]any{"type": "about:blank", "title": http.StatusText(tt.status), "status": float64(tt.status), "instance": tt.path}
			for k, v := range want {
				if p[k] != v {
					t.Errorf("%s %s%s: %s %v, want %v (body %s)", tt.method, svc.URL(), tt.path, k, p[k], v, r.Body)
				}
			}
			if d, _ := p["detail"].(string); r.Status != tt.status || d == "" || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/problem+json") {
				t.Errorf("%s %s%s: %d %s %s, want %d problem details", tt.method, svc.URL(), tt.path, r.Status, r.Header.Get("Content-Type"), r.Body, tt.status)
			}
			if got := r.Header.Get("Allow"); got != tt.allow {
				t.Errorf("%s %s%s: Allow %q, want %q", tt.method, svc.URL(), tt.path, got, tt.allow)
			}
		}
	}
}
