package console

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, method, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp, string(body)
}

func TestConsoleFiles(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{PublisherURL: "http://localhost:8080/"}))
	defer srv.Close()

	tests := []struct {
		path  string
		ctype string
		has   string
	}{
		{"/", "text/html; charset=utf-8", "<title>MQTT console</title>"},
		{"/console/console.js", "text/javascript; charset=utf-8", `"use strict"`},
		{"/console/console.css", "text/css; charset=utf-8", "prefers-color-scheme"},
		{"/console/config.json", "application/json", `"publisher_url":"http://localhost:8080"`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := get(t, http.MethodGet, srv.URL+tt.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type %q, want %q", got, tt.ctype)
			}
			if !strings.Contains(body, tt.has) {
				t.Errorf("body does not contain %q", tt.has)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q, want nosniff", got)
			}
			etag := resp.Header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			again, body := get(t, http.MethodGet, srv.URL+tt.path, "If-None-Match", etag)
			if again.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("with If-None-Match: status %d, %d bytes; want 304 and no body", again.StatusCode, len(body))
			}
		})
	}
}

// Everything the page loads is served by the handler or by the server's own
// API, by relative URL, and nothing comes from another host.
func TestConsoleReferencesResolve(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{}))
	defer srv.Close()
	_, page := get(t, http.MethodGet, srv.URL+"/")
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) == 0 {
		t.Fatal("the page references no files")
	}
	for _, m := range refs {
		ref := m[1]
		switch {
		case ref == "data:,", ref == "messages":
			continue // the empty icon; the no-script link to the API
		case strings.Contains(ref, "//") || strings.HasPrefix(ref, "/"):
			t.Errorf("reference %q is not relative to the page", ref)
			continue
		}
		if resp, _ := get(t, http.MethodGet, srv.URL+"/"+ref); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200", ref, resp.StatusCode)
		}
	}
	_, script := get(t, http.MethodGet, srv.URL+"/console/console.js")
	if regexp.MustCompile(`https?://`).MatchString(script) {
		t.Error("the script names an absolute URL; it must work offline and behind a prefix")
	}
}

func TestConsoleConfig(t *testing.T) {
	tests := []struct {
		publisher string
		want      string
		connect   string
	}{
		{"", "", "connect-src 'self';"},
		{"http://localhost:8080", "http://localhost:8080", "connect-src 'self' http://localhost:8080;"},
		{"https://pub.example/api/", "https://pub.example/api", "connect-src 'self' https://pub.example;"},
	}
	for _, tt := range tests {
		t.Run(tt.publisher, func(t *testing.T) {
			srv := httptest.NewServer(Handler(Config{PublisherURL: tt.publisher}))
			defer srv.Close()
			_, body := get(t, http.MethodGet, srv.URL+PathConfig)
			var got struct {
				PublisherURL *string `json:"publisher_url"`
			}
			if err := json.Unmarshal([]byte(body), &got); err != nil || got.PublisherURL == nil {
				t.Fatalf("config %q: %v; want publisher_url", body, err)
			}
			if *got.PublisherURL != tt.want {
				t.Errorf("publisher_url %q, want %q", *got.PublisherURL, tt.want)
			}
			resp, _ := get(t, http.MethodGet, srv.URL+"/")
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, tt.connect) || !strings.Contains(csp, "script-src 'self'") {
				t.Errorf("Content-Security-Policy %q, want %q and script-src 'self'", csp, tt.connect)
			}
		})
	}
}

func TestConsoleConfigTokenRequired(t *testing.T) {
	for _, required := range []bool{false, true} {
		srv := httptest.NewServer(Handler(Config{TokenRequired: required}))
		_, body := get(t, http.MethodGet, srv.URL+PathConfig)
		srv.Close()
		var got struct {
			TokenRequired *bool `json:"token_required"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil || got.TokenRequired == nil || *got.TokenRequired != required {
			t.Errorf("config %q, want token_required %v", body, required)
		}
	}
}

func TestConsoleRefuses(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{}))
	defer srv.Close()
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/console/", http.StatusNotFound},
		{http.MethodGet, "/console/nope.js", http.StatusNotFound},
		{http.MethodGet, "/index.html", http.StatusNotFound},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodHead, "/", http.StatusOK},
	}
	for _, tt := range tests {
		if resp, _ := get(t, tt.method, srv.URL+tt.path); resp.StatusCode != tt.want {
			t.Errorf("%s %s: status %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}
}
