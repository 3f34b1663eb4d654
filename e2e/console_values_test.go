package e2e

import (
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// readingSel selects the latest-readings row of topic.
func readingSel(topic string) string {
	return "#readings tbody tr[data-topic=" + strconv.Quote(topic) + "]"
}

// lineSel selects the chart's line of topic.
func lineSel(topic string) string {
	return "#values-chart path.line[data-topic=" + strconv.Quote(topic) + "]"
}

// The console's values view in a real browser against the real services:
// three rooms' temperatures draw three lines from GET /series, the table of
// latest readings comes from GET /topics, a new reading reaches both live,
// a new topic adds a line, the download link exports the readings, and the
// view fits a phone.
func TestConsoleValues(t *testing.T) {
	ctx := browser(t)
	var errs browserErrors
	errs.listen(t, ctx)

	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, map[string]string{"MQTT_QOS": "1"})
	sub.WaitReady(t, 10*time.Second)
	pub := subscriberPublisher(t, b)
	rooms := []string{"room1", "room2", "room3"}
	for i := range 5 {
		for r, room := range rooms {
			pub("living/"+room+"/temperature", 1, fmt.Appendf(nil, "%d.%d", 19+r, i))
		}
	}
	pub("living/room1/humidity", 1, []byte(`{"rh": 40}`)) // outside the filter
	waitStored(t, sub, "living/#", 16, 10*time.Second)

	inBrowser(t, ctx, 20*time.Second, "open the values of the rooms",
		chromedp.Navigate(sub.URL()+"/?values="+strings.ReplaceAll("living/+/temperature", "+", "%2B")),
		chromedp.WaitVisible("#stream-state.ok"),
		discard(chromedp.Poll[bool](`document.querySelectorAll('#values-chart path.line').length === 3`)),
		chromedp.WaitVisible(readingSel("living/room3/temperature")),
	)
	t.Run("three lines and three rows", func(t *testing.T) {
		for r, room := range rooms {
			topic := "living/" + room + "/temperature"
			points := evaluate[string](t, ctx, `document.querySelector(`+strconv.Quote(lineSel(topic))+`).dataset.points`)
			d := evaluate[string](t, ctx, `document.querySelector(`+strconv.Quote(lineSel(topic))+`).getAttribute("d")`)
			if points == "" || points == "0" || !strings.HasPrefix(d, "M") {
				t.Errorf("%s: line of %s points, d %q", topic, points, d)
			}
			cells := evaluate[[]string](t, ctx, `Array.from(document.querySelector(`+strconv.Quote(readingSel(topic))+`).cells, c => c.textContent)`)
			if want := fmt.Sprintf("value %d.4", 19+r); len(cells) != 4 || cells[0] != topic || cells[1] != want || cells[3] != "5" {
				t.Errorf("row %q, want [%s %q <time> 5]", cells, topic, want)
			}
		}
		if shown := evaluate[bool](t, ctx, `!!document.querySelector(`+strconv.Quote(readingSel("living/room1/humidity"))+`)`); shown {
			t.Error("living/room1/humidity is in the table under living/+/temperature")
		}
		if field := evaluate[string](t, ctx, `document.querySelector('#values-field').value`); field != "value" {
			t.Errorf("field %q, want value", field)
		}
		legend := evaluate[string](t, ctx, `document.querySelector('#values-legend').textContent`)
		if !strings.Contains(legend, "living/room2/temperature") || strings.Count(legend, "living/") != 3 {
			t.Errorf("legend %q, want the three rooms", legend)
		}
	})

	t.Run("a new reading appears live", func(t *testing.T) {
		pub("living/room2/temperature", 1, []byte("30.5"))
		inBrowser(t, ctx, 5*time.Second, "wait for the reading",
			discard(chromedp.Poll[bool](`(() => {
				const v = document.querySelector(`+strconv.Quote(readingSel("living/room2/temperature")+` b[data-field="value"]`)+`);
				const l = document.querySelector(`+strconv.Quote(lineSel("living/room2/temperature"))+`);
				return v && v.textContent === "30.5" && l && l.dataset.last === "30.5";
			})()`)))
		cells := evaluate[[]string](t, ctx, `Array.from(document.querySelector(`+strconv.Quote(readingSel("living/room2/temperature"))+`).cells, c => c.textContent)`)
		if len(cells) != 4 || cells[3] != "6" {
			t.Errorf("row %q, want 6 messages", cells)
		}
		if got := evaluate[string](t, ctx, `document.querySelector('#values-legend li[data-topic="living/room2/temperature"] .reading').textContent`); got != "30.5" {
			t.Errorf("legend reading %q, want 30.5", got)
		}
	})

	t.Run("a new topic adds a line", func(t *testing.T) {
		pub("living/room4/temperature", 1, []byte(`17.25`))
		inBrowser(t, ctx, 5*time.Second, "wait for the fourth line",
			chromedp.WaitVisible(readingSel("living/room4/temperature")),
			discard(chromedp.Poll[bool](`document.querySelectorAll('#values-chart path.line').length === 4`)))
		// Rows stay in name order.
		order := evaluate[[]string](t, ctx, `Array.from(document.querySelectorAll('#readings tbody tr'), r => r.dataset.topic)`)
		if strings.Join(order, " ") != "living/room1/temperature living/room2/temperature living/room3/temperature living/room4/temperature" {
			t.Errorf("rows %q, want name order", order)
		}
	})

	t.Run("another field and range", func(t *testing.T) {
		inBrowser(t, ctx, 10*time.Second, "show the humidity of the last hour",
			chromedp.SetValue("#values-filter", "living/#"),
			chromedp.SetValue("#values-range", "3600"),
			chromedp.Click("#values-form button[type=submit]"),
			chromedp.WaitVisible(readingSel("living/room1/humidity")),
			discard(chromedp.Poll[bool](`document.querySelectorAll('#values-field option').length === 2`)),
		)
		inBrowser(t, ctx, 10*time.Second, "pick the field rh",
			chromedp.SetValue("#values-field", "rh"),
			chromedp.Evaluate[chromedp.Void](`document.querySelector('#values-field').dispatchEvent(new Event('change'))`),
			discard(chromedp.Poll[bool](`document.querySelectorAll('#values-chart path.line').length === 1 && !!document.querySelector(`+strconv.Quote(lineSel("living/room1/humidity"))+`)`)),
		)
		if got := evaluate[string](t, ctx, `location.search`); !strings.Contains(got, "values=living%2F%23") {
			t.Errorf("location.search %q, want it to carry the values filter", got)
		}
	})

	t.Run("download link", func(t *testing.T) {
		href := evaluate[string](t, ctx, `document.querySelector('#values-csv').href`)
		if !strings.Contains(href, "format=csv") || !strings.Contains(href, "topic=living%2F%23") || !strings.Contains(href, "since=") {
			t.Fatalf("CSV link %q", href)
		}
		r := harness.Get(t, href)
		records, err := csv.NewReader(strings.NewReader(string(r.Body))).ReadAll()
		if r.Status != 200 || err != nil || len(records) != 1+18 || records[0][2] != "payload" {
			t.Errorf("GET %s: status %d, %d records, %v; want a header and 18 rows", href, r.Status, len(records), err)
		}
	})

	t.Run("phone width", func(t *testing.T) {
		inBrowser(t, ctx, 10*time.Second, "narrow the viewport", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 390, Height: 844, DeviceScaleFactor: 2, Mobile: true})
			return err
		}), chromedp.Sleep(500*time.Millisecond))
		overflow := evaluate[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth`)
		chart := evaluate[int](t, ctx, `Math.round(document.querySelector('#values-chart').getBoundingClientRect().width)`)
		lines := evaluate[int](t, ctx, `document.querySelectorAll('#values-chart path.line').length`)
		inBrowser(t, ctx, 10*time.Second, "restore the viewport", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.ClearDeviceMetricsOverride, cdp.Empty{})
			return err
		}))
		if overflow || chart < 300 || chart > 390 || lines != 1 {
			t.Errorf("at 390 px: overflow %v, chart %d px wide, %d lines; want no overflow, the chart across the screen, its line drawn", overflow, chart, lines)
		}
	})

	if e := errs.all(); len(e) > 0 {
		t.Errorf("the page reported %d errors:\n%s", len(e), strings.Join(e, "\n"))
	}
}

// TestConsoleValuesScreenshot draws the values view over a day of readings
// and takes its picture: three lines, a live reading on one. The PNG goes
// to VALUES_SCREENSHOT when it is set, for the README
// (VALUES_SCREENSHOT=$PWD/../docs/values.png), else into the test's
// temporary directory. A day cannot be published in a test (the subscriber stamps arrivals with
// its clock), so the readings are written into a PostgreSQL store as an
// earlier version would have left them, and the subscriber extracts their
// values when it starts, as it does after an upgrade.
func TestConsoleValuesScreenshot(t *testing.T) {
	path := os.Getenv("VALUES_SCREENSHOT")
	if path == "" {
		path = filepath.Join(t.TempDir(), "values.png")
	}
	ctx := browser(t)
	b := harness.StartBroker(t)
	db := harness.Postgres(t)
	sub := startSubscriber(t, b, map[string]string{"DATABASE_URL": db, "MQTT_QOS": "1"})
	sub.WaitReady(t, 15*time.Second)
	if code := sub.Stop(); code != 0 {
		t.Fatalf("stop exited %d", code)
	}
	seedDay(t, db)
	sub.Restart()
	sub.WaitReady(t, 15*time.Second)
	if !harness.Eventually(60*time.Second, func() bool { return metric(t, sub, "subscriber_values_backfill_remaining") == 0 }) {
		t.Fatal("the values of the seeded rows were not extracted within 60s")
	}
	pub := subscriberPublisher(t, b)
	inBrowser(t, ctx, 20*time.Second, "open the values",
		chromedp.Navigate(sub.URL()+"/?values=living%2F%2B%2Ftemperature"),
		discard(chromedp.Poll[bool](`document.querySelectorAll('#values-chart path.line').length === 3`)),
	)
	pub("living/kitchen/temperature", 1, []byte("22.9"))
	inBrowser(t, ctx, 5*time.Second, "wait for the live reading",
		discard(chromedp.Poll[bool](`document.querySelector(`+strconv.Quote(lineSel("living/kitchen/temperature"))+`).dataset.last === "22.9"`)),
		chromedp.Sleep(1500*time.Millisecond), // the row's highlight fades
	)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.Screenshot("#values-panel"))
	if err != nil {
		t.Fatalf("take the screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	t.Logf("screenshot saved to %s", path)
}

// seedDay writes a day of readings of three rooms (every 2 minutes, a
// temperature with the day's swing) and a humidity into the PostgreSQL
// store at url, with their topics' counts, and hands them to the backfill.
func seedDay(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	now := time.Now()
	var rows [][]any
	rooms := []struct {
		name        string
		base, swing float64
	}{{"kitchen", 21.5, 1.8}, {"bedroom", 18.5, 1.2}, {"office", 20, 2.5}}
	for i := 0; i < 24*30; i++ {
		at := now.Add(-24 * time.Hour).Add(time.Duration(i) * 2 * time.Minute)
		hour := float64(at.Hour()) + float64(at.Minute())/60
		for k, r := range rooms {
			v := r.base + r.swing*math.Sin((hour-9-float64(k))*math.Pi/12) + 0.2*math.Sin(float64(i)/(5+2*float64(k)))
			rows = append(rows, []any{"living/" + r.name + "/temperature", []byte(strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)), at})
		}
		rows = append(rows, []any{"living/kitchen/humidity", fmt.Appendf(nil, `{"rh": %d}`, 45+i%7), at})
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"messages"}, []string{"topic", "payload", "received_at", "qos", "retained", "duplicate", "client_id", "packet_id"},
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			return append(rows[i], int16(1), false, false, "seed", int32(0)), nil
		})); err != nil {
		t.Fatalf("copy readings: %v", err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO topics (name, count, first_id, first_at, last_id, last_at)
		SELECT topic, count(*), min(id), min(received_at), max(id), max(received_at) FROM messages GROUP BY topic
		ON CONFLICT (name) DO UPDATE SET count = excluded.count, first_id = excluded.first_id, first_at = excluded.first_at,
		last_id = excluded.last_id, last_at = excluded.last_at`); err != nil {
		t.Fatalf("count topics: %v", err)
	}
	if _, err := conn.Exec(ctx, `UPDATE values_backfill SET next_id = 0, last_id = (SELECT max(id) FROM messages)`); err != nil {
		t.Fatalf("hand the rows to the backfill: %v", err)
	}
}
