package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/config"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// fakeBroker stands in for the MQTT client: these tests are about HTTP.
type fakeBroker struct {
	mu        sync.Mutex
	connected bool
	fail      func(i int, m message.Message) error
	published []message.Message
}

func (f *fakeBroker) Publish(ctx context.Context, m message.Message) error {
	return f.PublishAll(ctx, []message.Message{m})[0]
}

func (f *fakeBroker) PublishAll(_ context.Context, msgs []message.Message) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		if f.fail != nil {
			errs[i] = f.fail(i, m)
		}
		if errs[i] == nil {
			f.published = append(f.published, m)
		}
	}
	return errs
}

func (f *fakeBroker) Connected() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connected
}

func (f *fakeBroker) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.published)
}

func testConfig() config.Config {
	return config.Config{Common: service.Common{QoS: 1}, MaxMessageBytes: 64, MaxBatchBytes: 1 << 20}
}

func startServer(t *testing.T, cfg config.Config, b *fakeBroker) *httptest.Server {
	t.Helper()
	h, err := NewServer(slog.New(slog.DiscardHandler), cfg, b, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url, contentType, body string, header ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

// checkProblem asserts an RFC 9457 answer with the given status.
func checkProblem(t *testing.T, a answer, status int) problem {
	t.Helper()
	if a.status != status {
		t.Errorf("status %d, want %d (body %s)", a.status, status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p problem
	if err := json.Unmarshal(a.body, &p); err != nil {
		t.Fatalf("problem body %s: %v", a.body, err)
	}
	if p.Status != status || p.Title != http.StatusText(status) || p.Detail == "" {
		t.Errorf("problem %+v, want status %d, title %q and a detail", p, status, http.StatusText(status))
	}
	return p
}

func TestPublishAnswers(t *testing.T) {
	b := &fakeBroker{connected: true}
	srv := startServer(t, testConfig(), b)
	for _, path := range []string{"/publish", "/mqtt/publish"} {
		for _, ct := range []string{"", "application/json", "application/json; charset=UTF-8", "application/vnd.example+json"} {
			a := do(t, "POST", srv.URL+path, ct, `{"topic":"a/b","message":"AAEC","encoding":"base64","qos":2,"retain":true}`)
			if a.status != 200 || a.header.Get("Content-Type") != "application/json" {
				t.Fatalf("POST %s (Content-Type %q): %d %s %s, want 200 application/json", path, ct, a.status, a.header.Get("Content-Type"), a.body)
			}
			var got publishResponse
			if err := json.Unmarshal(a.body, &got); err != nil {
				t.Fatal(err)
			}
			if want := (publishResponse{Topic: "a/b", QoS: 2, Retain: true, Bytes: 3}); got != want {
				t.Errorf("POST %s answered %+v, want %+v", path, got, want)
			}
		}
	}
	if got := b.count(); got != 8 {
		t.Errorf("published %d messages, want 8", got)
	}
}

func TestPublishErrorStatus(t *testing.T) {
	tests := []struct {
		err    error
		status int
		detail string
	}{
		{message.ErrNotConnected, 503, "not connected"},
		{fmt.Errorf("publish a: %w", message.ErrConnectionLost), 503, "connection to the broker lost"},
		{fmt.Errorf("publish a: %w", message.ErrTimeout), 504, "no acknowledgement"},
		{errors.New("secret internals"), 500, "log has the cause"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			b := &fakeBroker{connected: true, fail: func(int, message.Message) error { return tt.err }}
			srv := startServer(t, testConfig(), b)
			p := checkProblem(t, do(t, "POST", srv.URL+"/publish", "application/json", `{"topic":"a","message":"x"}`), tt.status)
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("detail %q, want it to contain %q", p.Detail, tt.detail)
			}
		})
	}
}

// Every refusal is a problem; a 405 names in Allow the methods its path
// takes (RFC 9110 section 15.5.6).
func TestRequestErrors(t *testing.T) {
	b := &fakeBroker{connected: true}
	srv := startServer(t, testConfig(), b)
	tests := []struct {
		name, method, path, contentType, body string
		status                                int
		allow                                 string
	}{
		{"text/plain", "POST", "/publish", "text/plain", `{"topic":"a","message":"x"}`, 415, ""},
		{"form", "POST", "/publish", "application/x-www-form-urlencoded", `{"topic":"a","message":"x"}`, 415, ""},
		{"latin-1 JSON", "POST", "/publish", "application/json; charset=iso-8859-1", `{"topic":"a","message":"x"}`, 415, ""},
		{"malformed content type", "POST", "/publish", "application/", `{"topic":"a","message":"x"}`, 415, ""},
		{"batch text/plain", "POST", "/publish/batch", "text/plain", `{}`, 415, ""},
		{"payload too large", "POST", "/publish", "", `{"topic":"a","message":"` + strings.Repeat("x", 65) + `"}`, 413, ""},
		{"malformed", "POST", "/publish", "", `{"topic":`, 400, ""},
		{"bad batch item", "POST", "/publish/batch", "", `{"messages":[{"topic":"#","message":"x"}]}`, 400, ""},
		{"unknown route", "GET", "/nope", "", "", 404, ""},
		{"trailing slash", "POST", "/publish/", "", "", 404, ""},
		{"wrong method", "GET", "/publish", "", "", 405, "POST"},
		{"wrong method on batch", "DELETE", "/publish/batch", "", "", 405, "POST"},
		{"wrong method on the original's path", "PUT", "/mqtt/publish", "", "", 405, "POST"},
		{"wrong method on healthz", "POST", "/healthz", "", "", 405, "GET"},
		{"wrong method on metrics", "POST", "/metrics", "", "", 405, "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, tt.method, srv.URL+tt.path, tt.contentType, tt.body)
			if p := checkProblem(t, a, tt.status); p.Instance != tt.path {
				t.Errorf("instance %q, want %q", p.Instance, tt.path)
			}
			if got := a.header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
		})
	}
	if got := b.count(); got != 0 {
		t.Errorf("published %d messages after bad requests, want 0", got)
	}
}

// A declared body over the limit is refused from the headers alone: the
// server answers although the body never comes.
func TestDeclaredLengthRefusedBeforeReading(t *testing.T) {
	srv := startServer(t, testConfig(), &fakeBroker{connected: true})
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	checkProblem(t, answer{resp.StatusCode, resp.Header, body}, 413)
}

// A body without a declared length is cut off at the limit.
func TestChunkedBodyOverLimit(t *testing.T) {
	cfg := testConfig()
	srv := startServer(t, cfg, &fakeBroker{connected: true})
	big := `{"topic":"a","message":"x","pad":"` + strings.Repeat(" ", int(cfg.MaxBodyBytes())) + `"}`
	req, err := http.NewRequest("POST", srv.URL+"/publish", io.MultiReader(strings.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1 // unknown: sent chunked
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	checkProblem(t, answer{resp.StatusCode, resp.Header, body}, 413)
}

func TestAPIToken(t *testing.T) {
	cfg := testConfig()
	cfg.APIToken = "s3cret"
	b := &fakeBroker{connected: true}
	srv := startServer(t, cfg, b)
	body := `{"topic":"a","message":"x"}`
	tests := []struct {
		name, auth string
		status     int
		challenge  string
	}{
		{"missing", "", 401, `Bearer realm="publisher"`},
		{"wrong", "Bearer nope", 401, `Bearer realm="publisher", error="invalid_token"`},
		{"prefix of the token", "Bearer s3cre", 401, `Bearer realm="publisher", error="invalid_token"`},
		{"basic scheme", "Basic czNjcmV0", 401, `Bearer realm="publisher"`},
		{"right", "Bearer s3cret", 200, ""},
		{"scheme in lower case", "bearer s3cret", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.auth != "" {
				hdr = []string{"Authorization", tt.auth}
			}
			for _, path := range []string{"/publish", "/mqtt/publish", "/publish/batch"} {
				b := body
				if path == "/publish/batch" {
					b = `{"messages":[` + body + `]}`
				}
				a := do(t, "POST", srv.URL+path, "", b, hdr...)
				if tt.status == 200 {
					if a.status != 200 {
						t.Errorf("%s: %d %s, want 200", path, a.status, a.body)
					}
					continue
				}
				checkProblem(t, a, tt.status)
				if got := a.header.Get("WWW-Authenticate"); got != tt.challenge {
					t.Errorf("%s: WWW-Authenticate %q, want %q", path, got, tt.challenge)
				}
			}
		})
	}
	if a := do(t, "GET", srv.URL+"/healthz", "", ""); a.status != 200 {
		t.Errorf("/healthz without a token: %d, want 200", a.status)
	}
	if got := b.count(); got != 6 {
		t.Errorf("published %d messages, want 6 (the authorised ones)", got)
	}
}

func TestCORS(t *testing.T) {
	cfg := testConfig()
	cfg.APIToken = "t"
	cfg.CORSAllowedOrigins = []string{"http://console.test:8081"}
	srv := startServer(t, cfg, &fakeBroker{connected: true})

	pre := do(t, "OPTIONS", srv.URL+"/publish", "", "",
		"Origin", "http://console.test:8081", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "content-type, authorization")
	// What a browser reads of the preflight's answer (Fetch standard, CORS
	// protocol): a 2xx, the origin, and the method and headers it asked for.
	if pre.status/100 != 2 {
		t.Errorf("preflight: %d, want 2xx", pre.status)
	}
	if got := pre.header.Get("Access-Control-Allow-Origin"); got != "http://console.test:8081" {
		t.Errorf("preflight Access-Control-Allow-Origin = %q, want the console's origin", got)
	}
	if got := pre.header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, "POST") {
		t.Errorf("preflight Access-Control-Allow-Methods = %q, want POST among them", got)
	}
	allowed := strings.ToLower(pre.header.Get("Access-Control-Allow-Headers"))
	for _, h := range []string{"content-type", "authorization"} {
		if !strings.Contains(allowed, h) {
			t.Errorf("preflight Access-Control-Allow-Headers = %q, want %s among them", allowed, h)
		}
	}

	a := do(t, "POST", srv.URL+"/publish", "application/json", `{"topic":"a","message":"x"}`,
		"Origin", "http://console.test:8081", "Authorization", "Bearer t")
	if a.status != 200 || a.header.Get("Access-Control-Allow-Origin") != "http://console.test:8081" {
		t.Errorf("cross-origin POST: %d, Allow-Origin %q; want 200 with the origin allowed", a.status, a.header.Get("Access-Control-Allow-Origin"))
	}

	other := do(t, "OPTIONS", srv.URL+"/publish", "", "", "Origin", "http://evil.test", "Access-Control-Request-Method", "POST")
	if got := other.header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("preflight from another origin: Allow-Origin %q, want none", got)
	}
	if got := a.header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "Www-Authenticate") && !strings.Contains(got, "WWW-Authenticate") {
		t.Errorf("cross-origin POST: Access-Control-Expose-Headers %q, want WWW-Authenticate", got)
	}

	// Without CORS_ALLOWED_ORIGINS no origin is allowed, none other than *.
	none := startServer(t, testConfig(), &fakeBroker{connected: true})
	if got := do(t, "OPTIONS", none.URL+"/publish", "", "", "Origin", "http://console.test:8081", "Access-Control-Request-Method", "POST").header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("preflight without CORS_ALLOWED_ORIGINS: Allow-Origin %q, want none", got)
	}
}

func TestReadyz(t *testing.T) {
	b := &fakeBroker{}
	srv := startServer(t, testConfig(), b)
	checkProblem(t, do(t, "GET", srv.URL+"/readyz", "", ""), 503)
	b.mu.Lock()
	b.connected = true
	b.mu.Unlock()
	if a := do(t, "GET", srv.URL+"/readyz", "", ""); a.status != 200 {
		t.Errorf("/readyz while connected: %d, want 200", a.status)
	}
	if a := do(t, "GET", srv.URL+"/healthz", "", ""); a.status != 200 || string(a.body) != "{\"status\":\"ok\"}\n" {
		t.Errorf("/healthz: %d %s, want 200 {\"status\":\"ok\"}", a.status, a.body)
	}
}

func TestBatchPartialFailure(t *testing.T) {
	b := &fakeBroker{connected: true, fail: func(i int, _ message.Message) error {
		if i >= 2 {
			return fmt.Errorf("publish: %w", message.ErrTimeout)
		}
		return nil
	}}
	srv := startServer(t, testConfig(), b)
	a := do(t, "POST", srv.URL+"/publish/batch", "", `{"messages":[{"topic":"a","message":"0"},{"topic":"b","message":"1","qos":0},{"topic":"c","message":"2"}]}`)
	p := checkProblem(t, a, 504)
	if len(p.Results) != 3 {
		t.Fatalf("results %+v, want 3", p.Results)
	}
	for i, r := range p.Results {
		want := i < 2
		if r.Index != i || r.Acknowledged != want {
			t.Errorf("result %d = %+v, want index %d acknowledged %v", i, r, i, want)
		}
	}
	if p.Results[2].Status != 504 || p.Results[2].Error == "" {
		t.Errorf("failed result %+v, want status 504 and an error", p.Results[2])
	}
	if !strings.Contains(p.Detail, "2 of 3 messages acknowledged") {
		t.Errorf("detail %q, want the count acknowledged", p.Detail)
	}
}

func TestBatchSuccess(t *testing.T) {
	b := &fakeBroker{connected: true}
	srv := startServer(t, testConfig(), b)
	a := do(t, "POST", srv.URL+"/publish/batch", "application/json", `{"messages":[{"topic":"a","message":"0"},{"topic":"b","message":"AA==","encoding":"base64","qos":2,"retain":true}]}`)
	if a.status != 200 {
		t.Fatalf("batch: %d %s, want 200", a.status, a.body)
	}
	var got batchResponse
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatal(err)
	}
	want := []batchResult{
		{Index: 0, Topic: "a", QoS: 1, Bytes: 1, Acknowledged: true, Status: 200},
		{Index: 1, Topic: "b", QoS: 2, Retain: true, Bytes: 1, Acknowledged: true, Status: 200},
	}
	if got.Acknowledged != 2 || len(got.Results) != 2 || got.Results[0] != want[0] || got.Results[1] != want[1] {
		t.Errorf("batch answered %+v, want %+v", got, want)
	}
}

func TestMetricsServed(t *testing.T) {
	srv := startServer(t, testConfig(), &fakeBroker{connected: true})
	do(t, "GET", srv.URL+"/healthz", "", "")
	a := do(t, "GET", srv.URL+"/metrics", "", "")
	if a.status != 200 || !strings.Contains(string(a.body), `publisher_http_requests_total{code="200",method="GET",route="/healthz"} 1`) {
		t.Errorf("/metrics: %d, want 200 with the request counter; got\n%s", a.status, a.body)
	}
}

// lockedBuffer is a bytes.Buffer the server's handlers and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The access log keeps INFO for what someone must look at (refused and
// failed requests); answered publishes and probes are DEBUG, counted by the
// metrics either way.
func TestAccessLogLevels(t *testing.T) {
	type line struct {
		Level, Msg, Path string
		Status           int
	}
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		t.Run(level.String(), func(t *testing.T) {
			var out lockedBuffer
			log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: level}))
			h, err := NewServer(log, testConfig(), &fakeBroker{connected: true}, prometheus.NewRegistry())
			if err != nil {
				t.Fatalf("NewServer: %v", err)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			do(t, "POST", srv.URL+"/publish", "application/json", `{"topic":"a","message":"x"}`)
			do(t, "POST", srv.URL+"/publish", "application/json", `{"topic":"a/#","message":"x"}`)
			do(t, "GET", srv.URL+"/healthz", "", "")

			got := map[int]string{} // status -> level of its access line
			for _, s := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				var l line
				if err := json.Unmarshal([]byte(s), &l); err != nil {
					t.Fatalf("log line %q: %v", s, err)
				}
				if l.Msg == "http request" {
					got[l.Status] = l.Level
				}
			}
			want := map[int]string{400: "INFO"}
			if level == slog.LevelDebug {
				want = map[int]string{200: "DEBUG", 400: "INFO"} // the 200s of /publish and /healthz
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("at %s, access lines by status = %v, want %v\n%s", level, got, want, out.String())
			}
		})
	}
}

// Browser requests that publish are refused from origins other than the
// publisher's own and CORS_ALLOWED_ORIGINS, whatever the Content-Type;
// requests without Origin and Sec-Fetch-Site (curl, scripts, devices) are
// not browsers' and pass.
func TestCrossOriginProtection(t *testing.T) {
	const console = "http://console.test:8081"
	tests := []struct {
		name    string
		trusted []string
		token   string
		header  []string // Origin, Sec-Fetch-Site, ...
		status  int
	}{
		{"no browser headers", []string{console}, "", nil, 200},
		{"no browser headers, nothing trusted", nil, "", nil, 200},
		{"same origin", []string{console}, "", []string{"Sec-Fetch-Site", "same-origin"}, 200},
		{"typed into the address bar", nil, "", []string{"Sec-Fetch-Site", "none"}, 200},
		{"trusted origin", []string{console}, "", []string{"Origin", console, "Sec-Fetch-Site", "same-site"}, 200},
		{"trusted origin, old browser", []string{console}, "", []string{"Origin", console}, 200},
		{"another site", []string{console}, "", []string{"Origin", "http://evil.test", "Sec-Fetch-Site", "cross-site"}, 403},
		{"same site, another port", []string{console}, "", []string{"Origin", "http://console.test:9999", "Sec-Fetch-Site", "same-site"}, 403},
		{"another site, nothing trusted", nil, "", []string{"Origin", "http://evil.test", "Sec-Fetch-Site", "cross-site"}, 403},
		{"another site, old browser", []string{console}, "", []string{"Origin", "http://evil.test"}, 403},
		{"opaque origin", []string{console}, "", []string{"Origin", "null", "Sec-Fetch-Site", "cross-site"}, 403},
		{"another site, with the token", []string{console}, "t", []string{"Origin", "http://evil.test", "Sec-Fetch-Site", "cross-site", "Authorization", "Bearer t"}, 403},
		{"any origin trusted", []string{"*"}, "", []string{"Origin", "http://evil.test", "Sec-Fetch-Site", "cross-site"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.CORSAllowedOrigins = tt.trusted
			cfg.APIToken = tt.token
			b := &fakeBroker{connected: true}
			srv := startServer(t, cfg, b)
			header := tt.header
			if tt.token != "" && !slices.Contains(header, "Authorization") {
				header = append(header, "Authorization", "Bearer "+tt.token)
			}
			want := 0
			for _, path := range []string{"/publish", "/mqtt/publish", "/publish/batch"} {
				body := `{"topic":"a","message":"x"}`
				if path == "/publish/batch" {
					body = `{"messages":[` + body + `]}`
				}
				// No Content-Type, as a no-cors fetch with a Blob body sends it.
				a := do(t, "POST", srv.URL+path, "", body, header...)
				if tt.status == 200 {
					want++
					if a.status != 200 {
						t.Errorf("POST %s: %d %s, want 200", path, a.status, a.body)
					}
					continue
				}
				p := checkProblem(t, a, tt.status)
				if !strings.Contains(p.Detail, "CORS_ALLOWED_ORIGINS") {
					t.Errorf("POST %s: detail %q, want it to name CORS_ALLOWED_ORIGINS", path, p.Detail)
				}
			}
			if got := b.count(); got != want {
				t.Errorf("published %d messages, want %d", got, want)
			}
			// Reading is not protected: it changes nothing.
			if a := do(t, "GET", srv.URL+"/readyz", "", "", tt.header...); a.status != 200 {
				t.Errorf("GET /readyz: %d, want 200", a.status)
			}
		})
	}
}

// CORS_ALLOWED_ORIGINS=* without API_TOKEN lets any page publish: said once
// at start, as a warning.
func TestAnyOriginWithoutTokenWarns(t *testing.T) {
	for _, token := range []string{"", "t"} {
		var out lockedBuffer
		cfg := testConfig()
		cfg.CORSAllowedOrigins = []string{"*"}
		cfg.APIToken = token
		if _, err := NewServer(slog.New(slog.NewTextHandler(&out, nil)), cfg, &fakeBroker{}, prometheus.NewRegistry()); err != nil {
			t.Fatalf("NewServer: %v", err)
		}
		warned := strings.Contains(out.String(), "level=WARN") && strings.Contains(out.String(), "any web page")
		if warned != (token == "") {
			t.Errorf("API_TOKEN %q: warned %v, want %v (log %q)", token, warned, token == "", out.String())
		}
	}
}
