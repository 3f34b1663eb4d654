package console

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// get asks the file of files at path, as the server mounting them would.
func get(t *testing.T, files map[string]http.Handler, method, path string, header ...string) (*http.Response, string) {
	t.Helper()
	h, ok := files[path]
	if !ok {
		t.Fatalf("no file at %s", path)
	}
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result(), rec.Body.String()
}

func TestConsoleFiles(t *testing.T) {
	files := Files(Config{PublisherURL: "http://localhost:8080/"})

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
			resp, body := get(t, files, http.MethodGet, tt.path)
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
			again, body := get(t, files, http.MethodGet, tt.path, "If-None-Match", etag)
			if again.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("with If-None-Match: status %d, %d bytes; want 304 and no body", again.StatusCode, len(body))
			}
		})
	}
}

// Everything the page loads is served by the handler or by the server's own
// API, by relative URL, and nothing comes from another host.
func TestConsoleReferencesResolve(t *testing.T) {
	files := Files(Config{})
	_, page := get(t, files, http.MethodGet, "/")
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
		if resp, _ := get(t, files, http.MethodGet, "/"+ref); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200", ref, resp.StatusCode)
		}
	}
	_, script := get(t, files, http.MethodGet, "/console/console.js")
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
			files := Files(Config{PublisherURL: tt.publisher})
			_, body := get(t, files, http.MethodGet, PathConfig)
			var got struct {
				PublisherURL *string `json:"publisher_url"`
			}
			if err := json.Unmarshal([]byte(body), &got); err != nil || got.PublisherURL == nil {
				t.Fatalf("config %q: %v; want publisher_url", body, err)
			}
			if *got.PublisherURL != tt.want {
				t.Errorf("publisher_url %q, want %q", *got.PublisherURL, tt.want)
			}
			resp, _ := get(t, files, http.MethodGet, "/")
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, tt.connect) || !strings.Contains(csp, "script-src 'self'") {
				t.Errorf("Content-Security-Policy %q, want %q and script-src 'self'", csp, tt.connect)
			}
		})
	}
}

func TestConsoleConfigTokenRequired(t *testing.T) {
	for _, required := range []bool{false, true} {
		files := Files(Config{TokenRequired: required})
		_, body := get(t, files, http.MethodGet, PathConfig)
		var got struct {
			TokenRequired *bool `json:"token_required"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil || got.TokenRequired == nil || *got.TokenRequired != required {
			t.Errorf("config %q, want token_required %v", body, required)
		}
	}
}
