package api

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// Every refusal is one problem shape, the publisher's; a 405 names in
// Allow the methods its path takes, the console's files included.
func TestUnroutedAnswers(t *testing.T) {
	srv, _ := newTestServer(t)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"POST", "/messages", 405, "GET"},
		{"DELETE", "/messages/stream", 405, "GET"},
		{"POST", "/readyz", 405, "GET"},
		{"POST", "/metrics", 405, "GET"},
		{"POST", "/", 405, "GET, HEAD"},
		{"PUT", "/console/console.js", 405, "GET, HEAD"},
		{"GET", "/nope", 404, ""},
		{"GET", "/console/", 404, ""},
		{"GET", "/console/nope.js", 404, ""},
		{"GET", "/index.html", 404, ""},
		{"GET", "/messages?limit=0", 400, ""},
		{"GET", "/messages/stream?topic=a/%23/b", 400, ""},
		{"GET", "/messages/stream?after=x", 400, ""},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s %s: read: %v", tt.method, tt.path, err)
		}
		var p problem
		if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(body, &p) != nil {
			t.Errorf("%s %s: status %d, %s %s; want %d problem details", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.status)
			continue
		}
		want := problem{Type: "about:blank", Title: http.StatusText(tt.status), Status: tt.status, Detail: p.Detail, Instance: req.URL.Path}
		if p != want || p.Detail == "" {
			t.Errorf("%s %s: problem %+v, want %+v with a detail", tt.method, tt.path, p, want)
		}
		if got := resp.Header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
	}
	resp, _ := get(t, srv.URL+"/")
	if head, err := http.Head(srv.URL + "/"); err != nil || head.StatusCode != 200 || resp.StatusCode != 200 {
		t.Errorf("GET and HEAD /: %d and %v %v, want 200 and 200", resp.StatusCode, head, err)
	}
}
