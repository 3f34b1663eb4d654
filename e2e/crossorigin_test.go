package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// A web page the user happens to open, on an origin the publisher does not
// trust, posts to the publisher as a cross-site request forgery would: with
// mode no-cors and a body without Content-Type (which the publisher reads
// as JSON), a request the browser sends without asking the publisher first.
// With API_TOKEN empty nothing else stands in its way. The publisher must
// refuse it with 403 and publish nothing; the browser is real (headless
// Chromium), so are the headers it sends (Origin, Sec-Fetch-Site).
func TestPublisherRefusesCrossOriginBrowserPublish(t *testing.T) {
	ctx := browser(t)
	var errs browserErrors
	errs.listen(t, ctx)

	b := harness.StartBroker(t)
	w := harness.Watch(t, b.URL(), "csrf/#")
	// The console's origin is trusted; the pages below are not.
	console := "http://127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	pub := startPublisher(t, b, map[string]string{"CORS_ALLOWED_ORIGINS": console})
	pub.WaitReady(t, 10*time.Second)

	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html><title>some other site</title><p>nothing to see</p>"))
	}))
	t.Cleanup(page.Close)

	tests := []struct {
		name, origin string
	}{
		// Another port of the same host: the same site to a browser
		// (Sec-Fetch-Site: same-site), but another origin.
		{"same site, other origin", page.URL},
		// Another host name for the same machine: another site.
		{"other site", strings.Replace(page.URL, "127.0.0.1", "localhost", 1)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(pub.Logs())
			inBrowser(t, ctx, 10*time.Second, "open the page", chromedp.Navigate(tt.origin+"/"))
			topic := "csrf/forged/" + strconv.Itoa(i)
			script := `(async () => {
				const body = new Blob([JSON.stringify({topic: ` + strconv.Quote(topic) + `, message: "forged", qos: 1})]);
				try {
					const r = await fetch(` + strconv.Quote(pub.URL()+"/publish") + `, {method: "POST", mode: "no-cors", body: body});
					return "sent, response " + r.type;
				} catch (e) {
					return "failed: " + e;
				}
			})()`
			got := evaluateAwait[string](t, ctx, script)
			t.Logf("the page's fetch: %s", got)
			// The answer is opaque to the page; the publisher's log says
			// what it answered.
			var answers []any
			harness.Eventually(5*time.Second, func() bool {
				answers = answers[:0]
				for _, l := range pub.Logs()[before:] {
					if l["msg"] == "http request" && l["path"] == "/publish" {
						answers = append(answers, l["status"])
					}
				}
				return len(answers) > 0
			})
			if len(answers) != 1 || answers[0] != float64(http.StatusForbidden) {
				t.Errorf("the publisher answered the page's request from %s with %v, want one 403", tt.origin, answers)
			}
		})
	}

	// Requests without Origin (scripts, devices) still publish; the barrier
	// also proves that anything published before it would have arrived.
	publish(t, pub, `{"topic":"csrf/barrier","message":"done","qos":1}`)
	w.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == "csrf/barrier" })
	for _, m := range w.Messages() {
		if strings.HasPrefix(m.Topic, "csrf/forged/") {
			t.Errorf("a cross-origin request was published: %s %q", m.Topic, m.Payload)
		}
	}
	metrics := string(harness.Get(t, pub.URL()+"/metrics").Body)
	if want := `publisher_http_requests_total{code="403",method="POST",route="/publish"} 2`; !strings.Contains(metrics, want) {
		t.Errorf("/metrics lacks %s", want)
	}
	// The page's own errors are the refused fetch's; nothing else may fail.
	for _, e := range errs.all() {
		if !strings.Contains(e, "/publish") {
			t.Errorf("the page reported: %s", e)
		}
	}
}

// evaluateAwait returns the value of a JavaScript expression that is a
// promise, once it settles.
func evaluateAwait[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}
