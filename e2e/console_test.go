package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// browserErrors collects what the page reports as errors: uncaught
// exceptions, console.error and console.warn calls, and the browser's own
// error entries (failed loads, policy violations).
type browserErrors struct {
	mu   sync.Mutex
	list []string
}

func (b *browserErrors) add(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.list = append(b.list, s)
}

func (b *browserErrors) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.list...)
}

func (b *browserErrors) listen(t *testing.T, ctx context.Context) {
	t.Helper()
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			b.add(fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, msg))
		case *runtime.EventConsoleAPICalled:
			switch ev.Type {
			case runtime.ConsoleAPICalledTypeError, runtime.ConsoleAPICalledTypeWarning, runtime.ConsoleAPICalledTypeAssert:
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				b.add(fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				b.add(fmt.Sprintf("browser %s error: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
			}
		}
	})
	if err != nil {
		t.Fatalf("listen to the page: %v", err)
	}
}

// browser starts a headless Chromium with a profile of its own and returns
// a tab's context. Without Chromium the test fails in CI and is skipped
// elsewhere.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		harness.Missing(t, "chromium not found in PATH (apt-get install chromium)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// Start the browser now, without a deadline (it would end the
	// browser), so that a broken install fails here.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return ctx
}

// inBrowser runs steps with a deadline, failing the test with what.
func inBrowser(t *testing.T, ctx context.Context, d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// evaluate returns the value of a JavaScript expression in the page.
func evaluate[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// discard drops the value of an action, so that it can be a step.
func discard[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, t)
		return chromedp.Void{}, err
	}
}

// rowSel selects the table rows of topic.
func rowSel(topic string) string {
	return "#messages tbody tr[data-topic=" + strconv.Quote(topic) + "]"
}

// tableRow reads the cells of the newest table row of topic.
func tableRow(t *testing.T, ctx context.Context, topic string) []string {
	t.Helper()
	return evaluate[[]string](t, ctx, `Array.from(document.querySelector(`+strconv.Quote(rowSel(topic))+`).cells, c => c.textContent)`)
}

// shown reports whether the table has a row of topic.
func shown(t *testing.T, ctx context.Context, topic string) bool {
	t.Helper()
	return evaluate[bool](t, ctx, `!!document.querySelector(`+strconv.Quote(rowSel(topic))+`)`)
}

// The console in a real browser against the real services: published
// messages appear in the table, the filter hides other topics, the publish
// form publishes through the publisher, and the page has no errors.
func TestConsoleInBrowser(t *testing.T) {
	ctx := browser(t)
	var errs browserErrors
	errs.listen(t, ctx)

	b := harness.StartBroker(t)
	// The subscriber's address is chosen first: the publisher must allow
	// it as an origin, and the subscriber must know the publisher's URL.
	subAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	pub := startPublisher(t, b, map[string]string{"CORS_ALLOWED_ORIGINS": "http://" + subAddr})
	sub := startSubscriber(t, b, map[string]string{"HTTP_ADDR": subAddr, "PUBLISHER_URL": pub.URL()})
	sub.WaitReady(t, 10*time.Second)
	pub.WaitReady(t, 10*time.Second)

	inBrowser(t, ctx, 15*time.Second, "open the console",
		chromedp.Navigate(sub.URL()+"/"),
		chromedp.WaitVisible("#stream-state.ok"),
		chromedp.WaitVisible("#broker-state.ok"),
		chromedp.WaitVisible("#publish-form"),
	)

	t.Run("published message appears within two seconds", func(t *testing.T) {
		publish(t, pub, `{"topic":"console/room1/temperature","message":"21.5","qos":1}`)
		inBrowser(t, ctx, 2*time.Second, "wait for the row", chromedp.WaitVisible(rowSel("console/room1/temperature")))
		cells := tableRow(t, ctx, "console/room1/temperature")
		if len(cells) != 6 || cells[1] != "console/room1/temperature" || cells[2] != "1" || cells[3] != "" || cells[4] != "" || cells[5] != "21.5" {
			t.Errorf("row %q, want [<time> console/room1/temperature 1 '' '' 21.5]", cells)
		}

		publish(t, pub, `{"topic":"console/room1/raw","message":"AP8Q","encoding":"base64"}`)
		inBrowser(t, ctx, 2*time.Second, "wait for the binary row", chromedp.WaitVisible(rowSel("console/room1/raw")))
		cells = tableRow(t, ctx, "console/room1/raw")
		if len(cells) != 6 || cells[5] != "hex00 ff 10" {
			t.Errorf("row %q, want the payload as hex 00 ff 10", cells)
		}
	})

	t.Run("filter hides other topics", func(t *testing.T) {
		inBrowser(t, ctx, 10*time.Second, "apply the filter",
			chromedp.SetValue("#filter", "console/+/temperature"),
			chromedp.Click("#filter-form button[type=submit]"),
			// The table starts again from the stored messages that match.
			chromedp.WaitNotPresent(rowSel("console/room1/raw")),
			chromedp.WaitVisible(rowSel("console/room1/temperature")),
			chromedp.WaitVisible("#stream-state.ok"),
		)
		publish(t, pub, `{"topic":"console/room2/humidity","message":"40"}`)
		publish(t, pub, `{"topic":"console/room2/temperature","message":"19"}`)
		inBrowser(t, ctx, 5*time.Second, "wait for the matching row", chromedp.WaitVisible(rowSel("console/room2/temperature")))
		if shown(t, ctx, "console/room2/humidity") {
			t.Errorf("console/room2/humidity is in the table under the filter console/+/temperature")
		}
		if got := evaluate[string](t, ctx, `location.search`); !strings.Contains(got, "topic=console%2F%2B%2Ftemperature") {
			t.Errorf("location.search %q, want it to carry the filter", got)
		}
	})

	t.Run("publish form", func(t *testing.T) {
		inBrowser(t, ctx, 10*time.Second, "publish with the form",
			chromedp.SetValue("#pub-topic", "console/form/temperature"),
			chromedp.SetValue("#pub-message", "from the form"),
			chromedp.SetValue("#pub-qos", "2"),
			chromedp.Click("#publish-form button[type=submit]"),
			chromedp.WaitVisible("#publish-result.ok"),
			chromedp.WaitVisible(rowSel("console/form/temperature")),
		)
		if got := evaluate[string](t, ctx, `document.querySelector('#publish-result').textContent`); !strings.Contains(got, "published to console/form/temperature") {
			t.Errorf("result %q, want it to say where it published", got)
		}
		cells := tableRow(t, ctx, "console/form/temperature")
		if len(cells) != 6 || cells[2] != "2" || cells[5] != "from the form" {
			t.Errorf("row %q, want QoS 2 and the payload from the form", cells)
		}
		rows := waitStored(t, sub, "console/form/temperature", 1, 10*time.Second)
		if rows[0].Payload != "from the form" || rows[0].QoS != 2 {
			t.Errorf("stored %+v, want the form's message at QoS 2", rows[0])
		}
	})

	t.Run("chart legend", func(t *testing.T) {
		inBrowser(t, ctx, 5*time.Second, "wait for the legend",
			discard(chromedp.Poll[bool](`document.querySelector('#legend').textContent.includes('console/form/temperature')`)))
		legend := evaluate[string](t, ctx, `document.querySelector('#legend').textContent`)
		if !strings.Contains(legend, "console/room2/temperature") || strings.Contains(legend, "humidity") {
			t.Errorf("legend %q, want the topics under the filter", legend)
		}
	})

	t.Run("phone width", func(t *testing.T) {
		inBrowser(t, ctx, 10*time.Second, "narrow the viewport", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 390, Height: 844, DeviceScaleFactor: 2, Mobile: true})
			return err
		}), chromedp.Sleep(300*time.Millisecond)) // one layout and chart redraw
		overflow := evaluate[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth`)
		width := evaluate[int](t, ctx, `window.innerWidth`)
		inBrowser(t, ctx, 10*time.Second, "restore the viewport", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.ClearDeviceMetricsOverride, cdp.Empty{})
			return err
		}))
		if width != 390 || overflow {
			t.Errorf("at width %d (want 390) the page overflows: %v", width, overflow)
		}
	})

	if path := os.Getenv("CONSOLE_SCREENSHOT"); path != "" {
		screenshot(t, ctx, pub, path)
	}

	if e := errs.all(); len(e) > 0 {
		t.Errorf("the page reported %d errors:\n%s", len(e), strings.Join(e, "\n"))
	}
}

// With API_TOKEN set the console asks for the token before it reads
// anything, asks again when the subscriber refuses it, then shows the
// stored messages and the live ones. The token stays in the tab's
// sessionStorage (a reload keeps it) and out of every URL; the stream
// resumes by itself after the subscriber restarts; "Forget token" asks
// again.
func TestConsoleAsksForToken(t *testing.T) {
	ctx := browser(t)
	var errs browserErrors
	errs.listen(t, ctx)

	const token = "e2e-console-token"
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, map[string]string{"API_TOKEN": token})
	sub.WaitReady(t, 10*time.Second)
	pub := subscriberPublisher(t, b)
	pub("console/token/stored", 1, []byte("stored before the page"))
	pub("console/token/temperature", 1, []byte("21.5"))
	if !harness.Eventually(10*time.Second, func() bool {
		r := harness.Get(t, sub.URL()+"/messages?topic=console/token/stored", "Authorization", "Bearer "+token)
		return r.Status == 200 && strings.Contains(string(r.Body), "stored before the page")
	}) {
		t.Fatal("the first message was not stored")
	}

	inBrowser(t, ctx, 15*time.Second, "open the console",
		chromedp.Navigate(sub.URL()+"/"),
		chromedp.WaitVisible("#token-panel"),
		chromedp.WaitVisible("#broker-state.ok"), // /readyz needs no token
	)
	if got := evaluate[string](t, ctx, `document.querySelector('#stream-state').textContent`); !strings.Contains(got, "token") {
		t.Errorf("stream state %q, want it to say that the token is needed", got)
	}
	if shown(t, ctx, "console/token/stored") {
		t.Error("a message is shown before the token was given")
	}

	inBrowser(t, ctx, 10*time.Second, "give a wrong token",
		chromedp.SetValue("#token", "wrong-token"),
		chromedp.Click("#token-form button[type=submit]"),
		chromedp.WaitVisible("#token-error"),
		chromedp.WaitVisible("#token-panel"),
	)
	if got := evaluate[string](t, ctx, `document.querySelector('#token-error').textContent`); !strings.Contains(got, "refused") {
		t.Errorf("token error %q, want it to say the token was refused", got)
	}

	inBrowser(t, ctx, 10*time.Second, "give the token",
		chromedp.SetValue("#token", token),
		chromedp.Click("#token-form button[type=submit]"),
		chromedp.WaitNotVisible("#token-panel"),
		chromedp.WaitVisible(rowSel("console/token/stored")),
		chromedp.WaitVisible("#stream-state.ok"),
	)
	pub("console/token/live", 1, []byte("live after the token"))
	inBrowser(t, ctx, 5*time.Second, "wait for the live row", chromedp.WaitVisible(rowSel("console/token/live")))
	if cells := tableRow(t, ctx, "console/token/live"); len(cells) != 6 || cells[5] != "live after the token" {
		t.Errorf("row %q, want the live payload", cells)
	}
	// The values view reads with the token too: GET /topics, GET /series
	// and its own stream.
	inBrowser(t, ctx, 10*time.Second, "wait for the readings",
		chromedp.WaitVisible(readingSel("console/token/temperature")),
		discard(chromedp.Poll[bool](`!!document.querySelector(`+strconv.Quote(lineSel("console/token/temperature"))+`)`)))
	pub("console/token/temperature", 1, []byte("22.5"))
	inBrowser(t, ctx, 5*time.Second, "wait for the live reading",
		discard(chromedp.Poll[bool](`document.querySelector(`+strconv.Quote(lineSel("console/token/temperature"))+`).dataset.last === "22.5"`)))

	if got := evaluate[string](t, ctx, `sessionStorage.getItem("mqtt-console-api-token") || ""`); got != token {
		t.Errorf("sessionStorage holds %q, want the token", got)
	}
	urls := evaluate[[]string](t, ctx, `[location.href].concat(performance.getEntriesByType("resource").map(e => e.name))`)
	for _, u := range urls {
		if strings.Contains(u, token) {
			t.Errorf("the token is in the URL %s", u)
		}
	}

	inBrowser(t, ctx, 15*time.Second, "reload the page",
		chromedp.Reload(),
		chromedp.WaitVisible(rowSel("console/token/live")),
		chromedp.WaitVisible("#stream-state.ok"),
	)
	if evaluate[bool](t, ctx, `!document.querySelector('#token-panel').hidden`) {
		t.Error("the console asks for the token again after a reload in the same tab")
	}

	// The console resumes the stream itself (no EventSource to do it).
	if code := sub.Stop(); code != 0 {
		t.Fatalf("stop exited %d", code)
	}
	sub.Restart()
	sub.WaitReady(t, 15*time.Second)
	pub = subscriberPublisher(t, b)
	pub("console/token/resumed", 1, []byte("after a restart"))
	inBrowser(t, ctx, 20*time.Second, "wait for the row after the restart",
		chromedp.WaitVisible(rowSel("console/token/resumed")),
		chromedp.WaitVisible("#stream-state.ok"),
	)

	inBrowser(t, ctx, 10*time.Second, "forget the token",
		chromedp.Click("#token-forget"),
		chromedp.WaitVisible("#token-panel"),
	)
	if got := evaluate[string](t, ctx, `sessionStorage.getItem("mqtt-console-api-token") || ""`); got != "" {
		t.Errorf("sessionStorage holds %q after Forget token, want nothing", got)
	}

	var unexpected []string
	for _, e := range errs.all() {
		// The refused token, and the subscriber while it restarted.
		if strings.Contains(e, "status of 401") || strings.Contains(e, "ERR_CONNECTION_REFUSED") || strings.Contains(e, "Failed to fetch") {
			t.Logf("expected: %s", e)
			continue
		}
		unexpected = append(unexpected, e)
	}
	if len(unexpected) > 0 {
		t.Errorf("the page reported %d errors:\n%s", len(unexpected), strings.Join(unexpected, "\n"))
	}
}

// screenshot fills the chart with a little traffic and saves the page as a
// PNG (for the README: CONSOLE_SCREENSHOT=$PWD/../docs/console.png).
func screenshot(t *testing.T, ctx context.Context, pub *harness.Service, path string) {
	t.Helper()
	inBrowser(t, ctx, 10*time.Second, "show every topic",
		chromedp.SetValue("#filter", "#"),
		chromedp.Click("#filter-form button[type=submit]"),
		chromedp.WaitVisible("#stream-state.ok"),
	)
	// A minute of traffic at rates that rise and fall, topic by topic.
	topics := []string{"living/room1/temperature", "living/room1/humidity", "kitchen/power", "garden/soil/moisture"}
	for second := range 60 {
		var items []string
		for k, topic := range topics {
			rate := 2 + (len(topics)-k)*(1+(second/10+k)%3)
			for range rate {
				items = append(items, fmt.Sprintf(`{"topic":%q,"message":"%d.%d"}`, topic, 18+k, second%10))
			}
		}
		r := harness.PostJSON(t, pub.URL()+"/publish/batch", `{"messages":[`+strings.Join(items, ",")+`]}`)
		if r.Status != 200 {
			t.Fatalf("batch publish: status %d %s", r.Status, r.Body)
		}
		time.Sleep(time.Second)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	time.Sleep(1500 * time.Millisecond) // the chart redraws every second
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("take the screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatalf("screenshot dir: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	t.Logf("screenshot saved to %s", path)
}
