package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// openAPIDoc is the part of an OpenAPI document that TestOpenAPIAnswersAsRun
// holds the services to: per path and method, the statuses it documents and
// whether it asks for the bearer token.
type openAPIDoc struct {
	Paths map[string]map[string]struct {
		Security  []map[string][]string `yaml:"security"`
		Responses map[string]any        `yaml:"responses"`
	} `yaml:"paths"`
}

func (d openAPIDoc) statuses(path, method string) []string {
	var codes []string
	for code := range d.Paths[path][method].Responses {
		codes = append(codes, code)
	}
	slices.Sort(codes)
	return codes
}

func (d openAPIDoc) needsToken(path, method string) bool {
	for _, s := range d.Paths[path][method].Security {
		if _, ok := s["bearer"]; ok {
			return true
		}
	}
	return false
}

// TestOpenAPIAnswersAsRun sends every operation of docs/openapi/ to the
// running services, bare (no parameters; a publish of `{}`), with and
// without API_TOKEN, and checks that the answer's status is one the
// operation documents and that a refusal is a problem detail; and that an
// unknown path is a 404 and another method a 405, both problem details, as
// the documents say of every path.
func TestOpenAPIAnswersAsRun(t *testing.T) {
	root := harness.RepoRoot(t)
	docs := map[string]openAPIDoc{}
	for _, name := range []string{"publisher", "subscriber"} {
		data, err := os.ReadFile(filepath.Join(root, "docs", "openapi", name+".yaml"))
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var doc openAPIDoc
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Fatalf("parse %s.yaml: %v", name, err)
		}
		docs[name] = doc
	}

	for _, token := range []string{"", "s3cret"} {
		name := "open"
		if token != "" {
			name = "API_TOKEN"
		}
		t.Run(name, func(t *testing.T) {
			b := harness.StartBroker(t)
			env := map[string]string{"API_TOKEN": token}
			sub := startSubscriber(t, b, env)
			pub := startPublisher(t, b, env)
			sub.WaitReady(t, 15*time.Second)
			pub.WaitReady(t, 15*time.Second)
			for svc, base := range map[string]string{"publisher": pub.URL(), "subscriber": sub.URL()} {
				doc := docs[svc]
				for path, ops := range doc.Paths {
					all405 := true
					for method := range ops {
						want := doc.statuses(path, method)
						all405 = all405 && slices.Contains(want, "405")
						got := answer(t, strings.ToUpper(method), base+path)
						if !slices.Contains(want, strconv.Itoa(got.Status)) {
							t.Errorf("%s %s %s: %d, documented %v", svc, strings.ToUpper(method), path, got.Status, want)
						}
						if token != "" && doc.needsToken(path, method) && got.Status != http.StatusUnauthorized {
							t.Errorf("%s %s %s without the token: %d, want 401", svc, strings.ToUpper(method), path, got.Status)
						}
						checkProblem(t, svc+" "+strings.ToUpper(method)+" "+path, got)
					}
					// No path takes DELETE: where it is refused, every
					// operation of the path documents the 405.
					got := answer(t, http.MethodDelete, base+path)
					if refused := got.Status == http.StatusMethodNotAllowed; refused != all405 {
						t.Errorf("%s DELETE %s: %d, and its operations document 405: %v", svc, path, got.Status, all405)
					}
					checkProblem(t, svc+" DELETE "+path, got)
				}
				got := answer(t, http.MethodGet, base+"/no/such/path")
				if got.Status != http.StatusNotFound {
					t.Errorf("%s GET /no/such/path: %d, want 404", svc, got.Status)
				}
				checkProblem(t, svc+" GET /no/such/path", got)
			}
		})
	}
}

// answer sends a bare request; a publish gets `{}`. An event stream is
// read no further than its headers.
func answer(tb testing.TB, method, url string) harness.Response {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		tb.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	got := harness.Response{Status: resp.StatusCode, Header: resp.Header}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		if got.Body, err = io.ReadAll(resp.Body); err != nil {
			tb.Fatalf("read %s %s: %v", method, url, err)
		}
	}
	return got
}

// checkProblem checks that an answer of 400 or more is RFC 9457 problem
// details with the status and its phrase.
func checkProblem(tb testing.TB, req string, got harness.Response) {
	tb.Helper()
	if got.Status < 400 {
		return
	}
	if ct := got.Header.Get("Content-Type"); ct != "application/problem+json" {
		tb.Errorf("%s: %d with Content-Type %q, want application/problem+json", req, got.Status, ct)
		return
	}
	var p struct {
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(got.Body, &p); err != nil {
		tb.Errorf("%s: problem %q: %v", req, got.Body, err)
		return
	}
	if p.Status != got.Status || p.Title != http.StatusText(got.Status) || p.Detail == "" {
		tb.Errorf("%s: problem %s, want status %d, title %q and a detail", req, got.Body, got.Status, http.StatusText(got.Status))
	}
}
