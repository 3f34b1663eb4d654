package harness

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"
)

// Response is a finished HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// Do sends one request; header is a list of name, value pairs.
func Do(tb testing.TB, method, url, contentType string, body []byte, header ...string) Response {
	tb.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("new request: %v", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body of %s %s: %v", method, url, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// PostJSON posts body with Content-Type application/json.
func PostJSON(tb testing.TB, url, body string, header ...string) Response {
	tb.Helper()
	return Do(tb, http.MethodPost, url, "application/json", []byte(body), header...)
}

// Get sends a GET.
func Get(tb testing.TB, url string, header ...string) Response {
	tb.Helper()
	return Do(tb, http.MethodGet, url, "", nil, header...)
}
