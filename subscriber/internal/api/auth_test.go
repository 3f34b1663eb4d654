package api

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// openStatus opens url and returns the status without reading the body
// (a stream's never ends).
func openStatus(t *testing.T, url string, header ...string) int {
	t.Helper()
	return open(t, url, header...).resp.StatusCode
}

func TestAPIToken(t *testing.T) {
	srv, _ := newServerWith(t, Options{APIToken: "s3cret"})
	tests := []struct {
		name, auth string
		status     int
		challenge  string // WWW-Authenticate
		detail     string
	}{
		{"no header", "", 401, `Bearer realm="subscriber"`, "missing bearer token: send Authorization: Bearer <API_TOKEN>"},
		{"basic", "Basic czNjcmV0", 401, `Bearer realm="subscriber"`, "missing bearer token: send Authorization: Bearer <API_TOKEN>"},
		{"no scheme", "s3cret", 401, `Bearer realm="subscriber"`, "missing bearer token: send Authorization: Bearer <API_TOKEN>"},
		// HTTP drops the trailing space: "Bearer" alone.
		{"empty token", "Bearer ", 401, `Bearer realm="subscriber"`, "missing bearer token: send Authorization: Bearer <API_TOKEN>"},
		{"blank token", "Bearer  \t ", 401, `Bearer realm="subscriber"`, "missing bearer token: send Authorization: Bearer <API_TOKEN>"},
		{"token after two spaces", "Bearer  s3cret", 200, "", ""},
		{"wrong token", "Bearer s3cre", 401, `Bearer realm="subscriber", error="invalid_token"`, "invalid bearer token"},
		{"right token", "Bearer s3cret", 200, "", ""},
		{"scheme in another case", "bearer s3cret", 200, "", ""},
	}
	for _, tt := range tests {
		for _, path := range []string{"/messages", "/messages?after=0", "/messages?format=csv", "/series", "/topics"} {
			req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || resp.Header.Get("WWW-Authenticate") != tt.challenge {
				t.Errorf("%s %s: status %d WWW-Authenticate %q, want %d %q", tt.name, path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), tt.status, tt.challenge)
			}
			if tt.status != 401 {
				continue
			}
			var p problem
			if resp.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(body, &p) != nil ||
				p.Status != 401 || p.Title != "Unauthorized" || p.Detail != tt.detail {
				t.Errorf("%s %s: %q %s, want a 401 problem saying %q", tt.name, path, resp.Header.Get("Content-Type"), body, tt.detail)
			}
		}
		if got := openStatus(t, srv.URL+"/messages/stream", "Authorization", tt.auth); got != tt.status {
			t.Errorf("%s: stream status %d, want %d", tt.name, got, tt.status)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/", "/console/console.js", "/console/console.css", "/console/config.json"} {
		resp, body := get(t, srv.URL+path)
		if resp.StatusCode != 200 {
			t.Errorf("%s without a token: status %d, want 200", path, resp.StatusCode)
		}
		if path == "/console/config.json" && !strings.Contains(string(body), `"token_required":true`) {
			t.Errorf("config %s, want token_required true", body)
		}
	}
}
