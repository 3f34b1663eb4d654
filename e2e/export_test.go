package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// exportPayload is the payload of message i of the export test: mostly a
// JSON reading that tells i, some with the characters CSV quotes, some
// binary.
func exportPayload(i int) []byte {
	switch {
	case i%1000 == 7:
		return []byte{0xff, 0xfe, byte(i), byte(i >> 8), byte(i >> 16)}
	case i%100 == 3:
		return fmt.Appendf(nil, "n=%d, \"quoted\"\nand a second line", i)
	}
	return fmt.Appendf(nil, `{"n":%d,"temp":21.5}`, i)
}

// publishMany publishes n QoS 1 messages (topic(i), payload(i)), in order,
// a window of 500 at a time, and waits for every PUBACK.
func publishMany(t *testing.T, b *harness.Broker, n int, topic func(int) string, payload func(int) []byte) {
	t.Helper()
	c := harness.Client(t, b.URL(), clientID(t, "bulk"), true)
	const window = 500
	toks := make([]mqtt.Token, 0, window)
	for from := 0; from < n; from += window {
		toks = toks[:0]
		for i := from; i < min(from+window, n); i++ {
			toks = append(toks, c.Publish(topic(i), 1, false, payload(i)))
		}
		for _, tk := range toks {
			if !tk.WaitTimeout(60*time.Second) || tk.Error() != nil {
				t.Fatalf("publish: %v", tk.Error())
			}
		}
	}
}

// A million stored messages exported as CSV and as NDJSON: every row comes
// once, oldest first, the CSV parses with encoding/csv back to the rows,
// and the subscriber's peak RSS stays under 100 MB while it streams them.
func TestExportMillionRows(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("stores a million messages")
	}
	const n = 1_000_000
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, map[string]string{"MQTT_TOPICS": "e2e/export/#", "MQTT_QOS": "1", "LOG_LEVEL": "warn"})
	sub.WaitReady(t, 15*time.Second)
	topic := func(i int) string { return "e2e/export/" + strconv.Itoa(i%10) }
	start := time.Now()
	publishMany(t, b, n, topic, exportPayload)
	if !harness.Eventually(5*time.Minute, func() bool { return metric(t, sub, "subscriber_messages_stored_total") >= n }) {
		t.Fatalf("stored %v of %d within 5 minutes", metric(t, sub, "subscriber_messages_stored_total"), n)
	}
	t.Logf("published and stored %d messages in %v", n, time.Since(start).Round(time.Millisecond))

	// A fresh process: its peak is the exports', not the storing's.
	if code := sub.Stop(); code != 0 {
		t.Fatalf("stop exited %d", code)
	}
	sub.Restart()
	sub.WaitReady(t, 15*time.Second)
	idle := sub.PeakRSS(t)

	// check reads each exported row in turn: row k must be message k.
	check := func(format string, next func() (id int64, topic string, payload []byte, err error)) {
		t.Helper()
		last := int64(0)
		for k := 0; ; k++ {
			id, tp, payload, err := next()
			if errors.Is(err, io.EOF) {
				if k != n {
					t.Errorf("%s: %d rows, want %d", format, k, n)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: row %d: %v", format, k, err)
			}
			if id <= last || tp != topic(k) || string(payload) != string(exportPayload(k)) {
				t.Fatalf("%s: row %d is id %d (after %d) on %s with %q, want %s with %q", format, k, id, last, tp, payload, topic(k), exportPayload(k))
			}
			last = id
		}
	}
	get := func(accept string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, sub.URL()+"/messages?topic=e2e/export/%23", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET /messages as %s: %v", accept, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") == "application/json" {
			t.Fatalf("GET /messages as %s: status %d, %s", accept, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return resp
	}

	start = time.Now()
	resp := get("text/csv")
	r := csv.NewReader(bufio.NewReaderSize(resp.Body, 1<<20))
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil || fmt.Sprint(header) != "[id topic payload encoding qos retained duplicate received_at]" {
		t.Fatalf("CSV header %q, %v", header, err)
	}
	check("CSV", func() (int64, string, []byte, error) {
		rec, err := r.Read()
		if err != nil {
			return 0, "", nil, err
		}
		id, err := strconv.ParseInt(rec[0], 10, 64)
		if err != nil {
			return 0, "", nil, err
		}
		payload := []byte(rec[2])
		if rec[3] == "base64" {
			if payload, err = base64.StdEncoding.DecodeString(rec[2]); err != nil {
				return 0, "", nil, err
			}
		}
		if rec[4] != "1" || rec[5] != "false" || rec[6] != "false" {
			return 0, "", nil, fmt.Errorf("columns %q", rec)
		}
		if _, err := time.Parse(time.RFC3339Nano, rec[7]); err != nil {
			return 0, "", nil, err
		}
		return id, rec[1], payload, nil
	})
	csvTook := time.Since(start)

	start = time.Now()
	resp = get("application/x-ndjson")
	dec := json.NewDecoder(bufio.NewReaderSize(resp.Body, 1<<20))
	check("NDJSON", func() (int64, string, []byte, error) {
		var m stored
		if err := dec.Decode(&m); err != nil {
			return 0, "", nil, err
		}
		payload := []byte(m.Payload)
		if m.Encoding == "base64" {
			var err error
			if payload, err = base64.StdEncoding.DecodeString(m.Payload); err != nil {
				return 0, "", nil, err
			}
		}
		return m.ID, m.Topic, payload, nil
	})
	ndjsonTook := time.Since(start)

	peak := sub.PeakRSS(t)
	t.Logf("exported %d rows as CSV in %v (%.0f rows/s) and as NDJSON in %v (%.0f rows/s); subscriber peak RSS %d MB (%d MB idle)",
		n, csvTook.Round(time.Millisecond), n/csvTook.Seconds(), ndjsonTook.Round(time.Millisecond), n/ndjsonTook.Seconds(), peak>>20, idle>>20)
	if peak >= 100<<20 {
		t.Errorf("peak RSS %d MB while exporting, want under 100 MB", peak>>20)
	}
}
