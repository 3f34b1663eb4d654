package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// Black-box tests of the publisher: the real binary against a real Mosquitto,
// observed through its HTTP answers, its process and an MQTT watcher.

// pubProblem is an RFC 9457 body as the publisher writes it.
type pubProblem struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Status  int    `json:"status"`
	Detail  string `json:"detail"`
	Index   *int   `json:"index"`
	Results []struct {
		Index        int    `json:"index"`
		Topic        string `json:"topic"`
		Acknowledged bool   `json:"acknowledged"`
		Status       int    `json:"status"`
		Error        string `json:"error"`
	} `json:"results"`
}

// checkPubProblem asserts that r is a problem-details answer with status.
func checkPubProblem(tb testing.TB, what string, r harness.Response, status int) pubProblem {
	tb.Helper()
	if r.Status != status {
		tb.Errorf("%s: status %d, want %d; body %.300s", what, r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		tb.Errorf("%s: Content-Type %q, want application/problem+json", what, ct)
	}
	var p pubProblem
	if err := json.Unmarshal(r.Body, &p); err != nil {
		tb.Errorf("%s: body is not JSON: %v: %.300s", what, err, r.Body)
		return p
	}
	if p.Status != status || p.Title == "" || p.Detail == "" {
		tb.Errorf("%s: problem %+v, want status %d with a title and a detail", what, p, status)
	}
	return p
}

// pubStatusTopic is the status topic of a publisher with this client id.
func pubStatusTopic(id string) string { return "clients/" + id + "/status" }

// rawHTTP sends a request written by hand, for what net/http's client
// refuses to send (a declared length with no body behind it).
func rawHTTP(tb testing.TB, addr, request string) harness.Response {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.WriteString(conn, request); err != nil {
		tb.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		tb.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body: %v", err)
	}
	return harness.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// waitPayload waits until w has received at least n messages on topic and
// the n-th is payload.
func waitPayload(tb testing.TB, w *harness.Watcher, topic string, n int, payload string, d time.Duration) harness.Message {
	tb.Helper()
	var got []harness.Message
	if !harness.Eventually(d, func() bool {
		got = got[:0]
		for _, m := range w.Messages() {
			if m.Topic == topic {
				got = append(got, m)
			}
		}
		return len(got) >= n && string(got[n-1].Payload) == payload
	}) {
		var ps []string
		for _, m := range got {
			ps = append(ps, string(m.Payload))
		}
		tb.Fatalf("%s: messages %q within %v, want message %d to be %q", topic, ps, d, n, payload)
	}
	return got[n-1]
}

func TestPublisherQoS(t *testing.T) {
	b := harness.StartBroker(t)
	w := harness.Watch(t, b.URL(), "pt/qos/#")
	pub := startPublisher(t, b, nil)
	pub.WaitReady(t, 10*time.Second)

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(255 - i)
	}
	for qos := 0; qos <= 2; qos++ {
		for _, path := range []string{"/publish", "/mqtt/publish"} {
			t.Run(fmt.Sprintf("qos%d%s", qos, strings.ReplaceAll(path, "/", "_")), func(t *testing.T) {
				text := fmt.Sprintf("pt/qos/%d%s/text", qos, path)
				bin := fmt.Sprintf("pt/qos/%d%s/binary", qos, path)
				payloads := map[string][]byte{text: []byte("21.5 °C\n\"quoted\""), bin: binary}
				bodies := map[string]string{
					text: mustJSON(t, map[string]any{"topic": text, "message": string(payloads[text]), "qos": qos}),
					bin:  mustJSON(t, map[string]any{"topic": bin, "message": base64.StdEncoding.EncodeToString(binary), "encoding": "base64", "qos": qos}),
				}
				for _, topic := range []string{text, bin} {
					r := harness.PostJSON(t, pub.URL()+path, bodies[topic])
					if r.Status != 200 || r.Header.Get("Content-Type") != "application/json" {
						t.Fatalf("POST %s %s: %d %s %s, want 200 application/json", path, topic, r.Status, r.Header.Get("Content-Type"), r.Body)
					}
					var got map[string]any
					if err := json.Unmarshal(r.Body, &got); err != nil {
						t.Fatal(err)
					}
					want := map[string]any{"topic": topic, "qos": float64(qos), "retain": false, "bytes": float64(len(payloads[topic]))}
					for k, v := range want {
						if got[k] != v {
							t.Errorf("answer %s = %v, want %v (answer %s)", k, got[k], v, r.Body)
						}
					}
					m := w.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == topic })
					if !bytes.Equal(m.Payload, payloads[topic]) || int(m.QoS) != qos || m.Retained {
						t.Errorf("watcher got %s qos %d retained %v payload %x; want qos %d, not retained, payload %x", topic, m.QoS, m.Retained, m.Payload, qos, payloads[topic])
					}
				}
			})
		}
	}

	metrics := harness.Get(t, pub.URL()+"/metrics")
	for _, want := range []string{
		`publisher_mqtt_publishes_total{qos="0",result="ok"} 4`,
		`publisher_mqtt_publishes_total{qos="2",result="ok"} 4`,
		`publisher_mqtt_connected 1`,
		`publisher_mqtt_ack_seconds_count{qos="1"}`,
	} {
		if !strings.Contains(string(metrics.Body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestPublisherRetain(t *testing.T) {
	b := harness.StartBroker(t)
	pub := startPublisher(t, b, nil)
	pub.WaitReady(t, 10*time.Second)
	publish(t, pub, `{"topic":"pt/retain/kept","message":"on","qos":1,"retain":true}`)
	publish(t, pub, `{"topic":"pt/retain/not","message":"off","qos":1}`)

	// Subscribing afterwards: only the retained one is there, flagged so.
	w := harness.Watch(t, b.URL(), "pt/retain/#")
	m := w.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == "pt/retain/kept" })
	if string(m.Payload) != "on" || !m.Retained {
		t.Errorf("late watcher got %q retained %v, want \"on\" retained", m.Payload, m.Retained)
	}
	publish(t, pub, `{"topic":"pt/retain/barrier","message":"b","qos":1}`)
	w.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == "pt/retain/barrier" })
	for _, m := range w.Messages() {
		if m.Topic == "pt/retain/not" {
			t.Errorf("late watcher got the non-retained message %q", m.Payload)
		}
	}
}

func TestPublisherBatch(t *testing.T) {
	b := harness.StartBroker(t)
	w := harness.Watch(t, b.URL(), "pt/batch/#")
	pub := startPublisher(t, b, nil)
	pub.WaitReady(t, 10*time.Second)

	const n = 200
	var items []map[string]any
	for i := range n {
		items = append(items, map[string]any{"topic": fmt.Sprintf("pt/batch/%d", i%7), "message": fmt.Sprint(i), "qos": 1})
	}
	r := harness.PostJSON(t, pub.URL()+"/publish/batch", mustJSON(t, map[string]any{"messages": items}))
	if r.Status != 200 {
		t.Fatalf("batch: %d %.500s, want 200", r.Status, r.Body)
	}
	var got struct {
		Acknowledged int `json:"acknowledged"`
		Results      []struct {
			Index        int    `json:"index"`
			Topic        string `json:"topic"`
			QoS          int    `json:"qos"`
			Bytes        int    `json:"bytes"`
			Acknowledged bool   `json:"acknowledged"`
		} `json:"results"`
	}
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Acknowledged != n || len(got.Results) != n {
		t.Fatalf("batch answered %d acknowledged, %d results; want %d", got.Acknowledged, len(got.Results), n)
	}
	for i, res := range got.Results {
		if res.Index != i || res.Topic != items[i]["topic"] || !res.Acknowledged || res.QoS != 1 || res.Bytes != len(fmt.Sprint(i)) {
			t.Errorf("result %d = %+v, want index %d topic %s acknowledged", i, res, i, items[i]["topic"])
		}
	}

	if !harness.Eventually(10*time.Second, func() bool { return len(w.Messages()) >= n }) {
		t.Fatalf("watcher got %d messages, want %d", len(w.Messages()), n)
	}
	for i, m := range w.Messages() {
		if i >= n {
			t.Errorf("extra message %s %q", m.Topic, m.Payload)
			continue
		}
		if string(m.Payload) != fmt.Sprint(i) || m.Topic != items[i]["topic"] {
			t.Fatalf("message %d is %s %q, want %s %q: the batch arrived out of order", i, m.Topic, m.Payload, items[i]["topic"], fmt.Sprint(i))
		}
	}

	// Mixed QoS in one batch: all acknowledged and all delivered (the
	// broker forwards a QoS 2 message on PUBREL, so the order across QoS
	// levels is the broker's).
	mixed := `{"messages":[{"topic":"pt/batch/mixed","message":"q0","qos":0},{"topic":"pt/batch/mixed","message":"q1","qos":1},{"topic":"pt/batch/mixed","message":"q2","qos":2,"retain":true}]}`
	if r := harness.PostJSON(t, pub.URL()+"/publish/batch", mixed); r.Status != 200 {
		t.Fatalf("mixed batch: %d %s", r.Status, r.Body)
	}
	for _, p := range []string{"q0", "q1", "q2"} {
		w.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == "pt/batch/mixed" && string(m.Payload) == p })
	}
}

// The broker is down at start: not ready and 503 at once; it comes up: the
// publisher connects by itself; it restarts: the publisher recovers.
func TestPublisherBrokerDownAtStart(t *testing.T) {
	b := harness.StartBroker(t)
	b.Stop()
	pub := startPublisher(t, b, nil)

	if got := pub.Status("/healthz"); got != 200 {
		t.Errorf("/healthz while the broker is down = %d, want 200", got)
	}
	checkPubProblem(t, "/readyz while the broker is down", harness.Get(t, pub.URL()+"/readyz"), 503)
	refusedAtOnce := func(what string) {
		t.Helper()
		for _, path := range []string{"/publish", "/publish/batch"} {
			body := `{"topic":"pt/down","message":"x","qos":2}`
			if path == "/publish/batch" {
				body = `{"messages":[` + body + `,` + body + `]}`
			}
			start := time.Now()
			r := harness.PostJSON(t, pub.URL()+path, body)
			took := time.Since(start)
			t.Logf("%s: POST %s answered %d in %v", what, path, r.Status, took)
			checkPubProblem(t, what+": POST "+path, r, 503)
			if took > time.Second {
				t.Errorf("%s: POST %s took %v, want an answer at once (well under 100ms)", what, path, took)
			}
		}
	}
	refusedAtOnce("broker down at start")

	b.Start()
	pub.WaitReady(t, 15*time.Second)
	w := harness.Watch(t, b.URL(), "pt/down/#")
	publish(t, pub, `{"topic":"pt/down/after-start","message":"up","qos":1}`)
	w.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == "pt/down/after-start" })

	b.Stop()
	if !harness.Eventually(5*time.Second, func() bool { return pub.Status("/readyz") == 503 }) {
		t.Fatalf("/readyz still %d after the broker stopped, want 503", pub.Status("/readyz"))
	}
	refusedAtOnce("broker stopped")
	b.Start()
	pub.WaitReady(t, 20*time.Second)
	w2 := harness.Watch(t, b.URL(), "pt/down/#")
	publish(t, pub, `{"topic":"pt/down/after-restart","message":"again","qos":2}`)
	w2.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == "pt/down/after-restart" })
}

// A paused broker keeps the connection open but acknowledges nothing: the
// publisher answers 504 after PUBLISH_TIMEOUT, and carries on once the
// broker does.
func TestPublisherBrokerPaused(t *testing.T) {
	b := harness.StartBroker(t)
	pub := startPublisher(t, b, map[string]string{"PUBLISH_TIMEOUT": "500ms"})
	pub.WaitReady(t, 10*time.Second)

	b.Pause()
	for _, qos := range []int{1, 2} {
		start := time.Now()
		r := harness.PostJSON(t, pub.URL()+"/publish", fmt.Sprintf(`{"topic":"pt/paused/%d","message":"x","qos":%d}`, qos, qos))
		took := time.Since(start)
		t.Logf("QoS %d publish to a paused broker answered %d in %v", qos, r.Status, took)
		checkPubProblem(t, fmt.Sprintf("QoS %d publish to a paused broker", qos), r, 504)
		if took > 5*time.Second {
			t.Errorf("QoS %d publish took %v, want about PUBLISH_TIMEOUT (500ms)", qos, took)
		}
	}
	r := harness.PostJSON(t, pub.URL()+"/publish/batch", `{"messages":[{"topic":"pt/paused/b","message":"1"},{"topic":"pt/paused/b","message":"2"}]}`)
	p := checkPubProblem(t, "batch to a paused broker", r, 504)
	if len(p.Results) != 2 || p.Results[0].Acknowledged || p.Results[1].Acknowledged || p.Results[0].Status != 504 {
		t.Errorf("batch results %+v, want two unacknowledged items with status 504", p.Results)
	}
	b.Resume()

	w := harness.Watch(t, b.URL(), "pt/paused/#")
	publish(t, pub, `{"topic":"pt/paused/after","message":"ok","qos":2}`)
	w.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == "pt/paused/after" })
}

// Every bad request gets its exact status as problem details, and none of
// them publishes anything.
func TestPublisherBadRequests(t *testing.T) {
	b := harness.StartBroker(t)
	const token = "e2e-token"
	id := clientID(t, "pub")
	pub := startPublisher(t, b, map[string]string{"MQTT_CLIENT_ID": id, "API_TOKEN": token, "MAX_MESSAGE_BYTES": "1024"})
	pub.WaitReady(t, 10*time.Second)
	w := harness.Watch(t, b.URL(), "#")

	auth := []string{"Authorization", "Bearer " + token}
	batchOf := func(n int) string {
		return `{"messages":[` + strings.TrimSuffix(strings.Repeat(`{"topic":"pt/bad/batch","message":"x"},`, n), ",") + `]}`
	}
	over := strings.Repeat("x", 1025)
	tests := []struct {
		name        string
		path        string
		contentType string // "-" for none
		body        string
		header      []string // nil: the right token
		status      int
		index       int // for batch items: the index the problem must name; -1 none
	}{
		{name: "malformed JSON", body: `{"topic":"pt/bad","message":}`, status: 400},
		{name: "not JSON at all", body: `topic=pt/bad&message=x`, status: 400},
		{name: "truncated JSON", body: `{"topic":"pt/bad","message":"x"`, status: 400},
		{name: "truncated in a string", body: `{"topic":"pt/b`, status: 400},
		{name: "empty body", body: ``, status: 400},
		{name: "JSON array", body: `[{"topic":"pt/bad","message":"x"}]`, status: 400},
		{name: "JSON null", body: `null`, status: 400},
		{name: "trailing garbage", body: `{"topic":"pt/bad","message":"x"} trailing`, status: 400},
		{name: "two objects", body: `{"topic":"pt/bad","message":"x"}{"topic":"pt/bad","message":"y"}`, status: 400},
		{name: "unknown field", body: `{"topic":"pt/bad","message":"x","priority":1}`, status: 400},
		{name: "duplicate field", body: `{"topic":"pt/bad","message":"x","topic":"pt/other"}`, status: 400},
		{name: "missing topic", body: `{"message":"x"}`, status: 400},
		{name: "missing message", body: `{"topic":"pt/bad"}`, status: 400},
		{name: "topic a number", body: `{"topic":42,"message":"x"}`, status: 400},
		{name: "message a number", body: `{"topic":"pt/bad","message":21.5}`, status: 400},
		{name: "retain a string", body: `{"topic":"pt/bad","message":"x","retain":"yes"}`, status: 400},
		{name: "qos a string", body: `{"topic":"pt/bad","message":"x","qos":"1"}`, status: 400},
		{name: "qos 3", body: `{"topic":"pt/bad","message":"x","qos":3}`, status: 400},
		{name: "qos -1", body: `{"topic":"pt/bad","message":"x","qos":-1}`, status: 400},
		{name: "qos 1.5", body: `{"topic":"pt/bad","message":"x","qos":1.5}`, status: 400},
		{name: "empty topic", body: `{"topic":"","message":"x"}`, status: 400},
		{name: "topic with +", body: `{"topic":"pt/+/bad","message":"x"}`, status: 400},
		{name: "topic with #", body: `{"topic":"pt/bad/#","message":"x"}`, status: 400},
		{name: "topic only #", body: `{"topic":"#","message":"x"}`, status: 400},
		{name: "topic starting with $", body: `{"topic":"$SYS/bad","message":"x"}`, status: 400},
		{name: "topic with U+0000", body: `{"topic":"pt/bad\u0000","message":"x"}`, status: 400},
		{name: "topic longer than 65535 bytes", body: `{"topic":"` + strings.Repeat("a", 65536) + `","message":"x"}`, status: 400},
		{name: "topic with raw invalid UTF-8", body: "{\"topic\":\"pt/bad\xff\xfe\",\"message\":\"x\"}", status: 400},
		{name: "topic with an escaped lone surrogate", body: `{"topic":"pt/bad\udc00","message":"x"}`, status: 400},
		{name: "topic with a control character", body: `{"topic":"pt/bad\u0007","message":"x"}`, status: 400},
		{name: "bad base64", body: `{"topic":"pt/bad","message":"not base64!","encoding":"base64"}`, status: 400},
		{name: "url-safe base64", body: `{"topic":"pt/bad","message":"-_-_","encoding":"base64"}`, status: 400},
		{name: "unknown encoding", body: `{"topic":"pt/bad","message":"x","encoding":"hex"}`, status: 400},
		{name: "text/plain", contentType: "text/plain", body: `{"topic":"pt/bad","message":"x"}`, status: 415},
		{name: "form content type", contentType: "application/x-www-form-urlencoded", body: `{"topic":"pt/bad","message":"x"}`, status: 415},
		{name: "missing token", body: `{"topic":"pt/bad","message":"x"}`, header: []string{}, status: 401},
		{name: "wrong token", body: `{"topic":"pt/bad","message":"x"}`, header: []string{"Authorization", "Bearer nope"}, status: 401},
		{name: "basic auth", body: `{"topic":"pt/bad","message":"x"}`, header: []string{"Authorization", "Basic ZTJlOmUyZS10b2tlbg=="}, status: 401},
		{name: "batch without token", path: "/publish/batch", body: batchOf(1), header: []string{}, status: 401},
		{name: "payload over MAX_MESSAGE_BYTES", body: `{"topic":"pt/bad","message":"` + over + `"}`, status: 413},
		{name: "base64 payload over MAX_MESSAGE_BYTES", body: `{"topic":"pt/bad","encoding":"base64","message":"` + base64.StdEncoding.EncodeToString([]byte(over)) + `"}`, status: 413},
		{name: "huge JSON body", body: `{"topic":"pt/bad","message":"x","pad":"` + strings.Repeat(" ", 2<<20) + `"}`, status: 413},
		{name: "huge nested JSON", body: `{"topic":"pt/bad","message":"x","pad":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`, status: 400},
		{name: "batch with 0 items", path: "/publish/batch", body: `{"messages":[]}`, status: 400},
		{name: "batch with 1001 items", path: "/publish/batch", body: batchOf(1001), status: 400},
		{name: "batch with a bad item", path: "/publish/batch", body: `{"messages":[{"topic":"pt/bad/ok","message":"0"},{"topic":"pt/bad/ok","message":"1"},{"topic":"pt/bad/ok","message":"2"},{"topic":"pt/bad/+","message":"3"},{"topic":"pt/bad/ok","message":"4"}]}`, status: 400, index: 3},
		{name: "batch with an oversized item", path: "/publish/batch", body: `{"messages":[{"topic":"pt/bad/ok","message":"0"},{"topic":"pt/bad/ok","message":"` + over + `"}]}`, status: 413, index: 1},
		{name: "batch with malformed item", path: "/publish/batch", body: `{"messages":[{"topic":"pt/bad/ok","message":"0"},{"topic":"pt/bad/ok","qos":"x","message":"1"}]}`, status: 400, index: 1},
		{name: "GET on publish", path: "/publish", contentType: "GET", status: 405},
	}
	if len(tests) < 30 {
		t.Fatalf("only %d bad requests", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if path == "" {
				path = "/publish"
			}
			method, ct := http.MethodPost, "application/json"
			switch tt.contentType {
			case "GET":
				method, ct = http.MethodGet, ""
			case "":
			default:
				ct = tt.contentType
			}
			header := tt.header
			if header == nil {
				header = auth
			}
			r := harness.Do(t, method, pub.URL()+path, ct, []byte(tt.body), header...)
			p := checkPubProblem(t, tt.name, r, tt.status)
			if tt.status == 401 && r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			if tt.index > 0 || (tt.path == "/publish/batch" && tt.status == 413) {
				if p.Index == nil || *p.Index != tt.index || !strings.Contains(p.Detail, fmt.Sprintf("messages[%d]", tt.index)) {
					t.Errorf("problem index %v, detail %q; want index %d named", p.Index, p.Detail, tt.index)
				}
			}
		})
	}

	t.Run("declared length over the limit", func(t *testing.T) {
		// The body never comes: only refusing from the headers answers.
		r := rawHTTP(t, pub.Addr(), "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
			"Authorization: Bearer "+token+"\r\nContent-Length: 1073741824\r\n\r\n{\"topic\":")
		checkPubProblem(t, "declared 1 GiB body", r, 413)
	})
	t.Run("no content type is JSON", func(t *testing.T) {
		r := harness.Do(t, http.MethodPost, pub.URL()+"/publish", "", []byte(`{"topic":"pt/bad/+","message":"x"}`), auth...)
		checkPubProblem(t, "no Content-Type, bad topic", r, 400)
	})

	// The barrier: a good publish after all the bad ones. When it has
	// arrived, everything published before it has too.
	if r := publishWithToken(t, pub, `{"topic":"pt/barrier","message":"done","qos":2}`, token); r.Status != 200 {
		t.Fatalf("barrier publish: %d %s, want 200", r.Status, r.Body)
	}
	w.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == "pt/barrier" })
	for _, m := range w.Messages() {
		if m.Topic == pubStatusTopic(id) || m.Topic == "pt/barrier" {
			continue
		}
		t.Errorf("a bad request was published: %s %.60q", m.Topic, m.Payload)
	}
}

func publishWithToken(tb testing.TB, pub *harness.Service, body, token string) harness.Response {
	tb.Helper()
	return harness.Do(tb, http.MethodPost, pub.URL()+"/publish", "application/json", []byte(body), "Authorization", "Bearer "+token)
}

func TestPublisherAPIToken(t *testing.T) {
	b := harness.StartBroker(t)
	pub := startPublisher(t, b, map[string]string{"API_TOKEN": "right"})
	pub.WaitReady(t, 10*time.Second)
	w := harness.Watch(t, b.URL(), "pt/token/#")

	checkPubProblem(t, "wrong token", publishWithToken(t, pub, `{"topic":"pt/token/refused","message":"x"}`, "wrong"), 401)
	checkPubProblem(t, "no token", harness.PostJSON(t, pub.URL()+"/publish", `{"topic":"pt/token/refused","message":"x"}`), 401)
	if r := publishWithToken(t, pub, `{"topic":"pt/token/accepted","message":"x"}`, "right"); r.Status != 200 {
		t.Fatalf("right token: %d %s, want 200", r.Status, r.Body)
	}
	w.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == "pt/token/accepted" })
	for _, m := range w.Messages() {
		if m.Topic == "pt/token/refused" {
			t.Errorf("a refused publish arrived")
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if got := pub.Status(path); got != 200 {
			t.Errorf("GET %s without a token = %d, want 200", path, got)
		}
	}
}

// Last will: killed, the status topic turns offline (retained); started,
// online; stopped gracefully, offline again.
func TestPublisherLastWill(t *testing.T) {
	b := harness.StartBroker(t)
	id := clientID(t, "pub")
	topic := pubStatusTopic(id)
	w := harness.Watch(t, b.URL(), topic)
	pub := startPublisher(t, b, map[string]string{"MQTT_CLIENT_ID": id})
	pub.WaitReady(t, 10*time.Second)

	retained := func(want string) {
		t.Helper()
		late := harness.Watch(t, b.URL(), topic)
		m := late.WaitFor(t, 5*time.Second, func(m harness.Message) bool { return m.Topic == topic })
		if string(m.Payload) != want || !m.Retained {
			t.Errorf("retained status %q (retained %v), want %q retained", m.Payload, m.Retained, want)
		}
	}

	waitPayload(t, w, topic, 1, "online", 5*time.Second)
	retained("online")

	pub.Kill()
	m := waitPayload(t, w, topic, 2, "offline", 10*time.Second)
	if m.QoS != 1 {
		t.Errorf("will delivered at QoS %d, want 1", m.QoS)
	}
	retained("offline")

	pub.Restart()
	pub.WaitReady(t, 10*time.Second)
	waitPayload(t, w, topic, 3, "online", 5*time.Second)
	retained("online")

	if code := pub.Stop(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	waitPayload(t, w, topic, 4, "offline", 5*time.Second)
	retained("offline")
}

func TestPublisherInvalidConfig(t *testing.T) {
	bin := harness.Publisher(t)
	tests := []struct{ name, value string }{
		{"MQTT_QOS", "3"},
		{"MQTT_MAX_INFLIGHT", "0"},
		{"MQTT_MAX_INFLIGHT", "65536"},
		{"PUBLISH_TIMEOUT", "abc"},
		{"MQTT_BROKER", "http://localhost:1883"},
		{"MAX_MESSAGE_BYTES", "-1"},
		{"LOG_LEVEL", "loud"},
		{"HTTP_ADDR", "nowhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"HTTP_ADDR": "127.0.0.1:0"}
			env[tt.name] = tt.value
			code, stdout, stderr := harness.Run(t, bin, env)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != 2 {
				t.Errorf("%s=%s: exit code %d, want 2 (stderr %q)", tt.name, tt.value, code, stderr)
			}
			if len(lines) != 1 || !strings.Contains(lines[0], tt.name) {
				t.Errorf("%s=%s: stderr %q, want one line naming %s", tt.name, tt.value, stderr, tt.name)
			}
			if stdout != "" {
				t.Errorf("%s=%s: stdout %q, want nothing", tt.name, tt.value, stdout)
			}
		})
	}
}

func TestPublisherHealthcheckCommand(t *testing.T) {
	b := harness.StartBroker(t)
	pub := startPublisher(t, b, nil)
	bin := harness.Publisher(t)
	if code, _, stderr := harness.Run(t, bin, map[string]string{"HTTP_ADDR": pub.Addr()}, "healthcheck"); code != 0 {
		t.Errorf("healthcheck against a running publisher: exit %d (%s), want 0", code, stderr)
	}
	pub.Stop()
	if code, _, _ := harness.Run(t, bin, map[string]string{"HTTP_ADDR": pub.Addr()}, "healthcheck"); code != 1 {
		t.Errorf("healthcheck against a stopped publisher: exit %d, want 1", code)
	}
}

// The connection drops while a publish waits for its acknowledgement: the
// answer is 503 at once, not 504 after PUBLISH_TIMEOUT.
func TestPublisherConnectionLostMidPublish(t *testing.T) {
	b := harness.StartBroker(t)
	pub := startPublisher(t, b, map[string]string{"PUBLISH_TIMEOUT": "20s"})
	pub.WaitReady(t, 10*time.Second)

	b.Pause()
	answer := make(chan harness.Response, 1)
	start := time.Now()
	go func() {
		answer <- harness.PostJSON(t, pub.URL()+"/publish", `{"topic":"pt/lost","message":"x","qos":1}`)
	}()
	time.Sleep(300 * time.Millisecond) // the publish is on the wire, unacknowledged
	b.Kill()                           // the kernel closes the paused broker's sockets
	r := <-answer
	took := time.Since(start)
	t.Logf("publish whose connection dropped answered %d after %v", r.Status, took)
	checkPubProblem(t, "publish whose connection dropped", r, 503)
	if took > 10*time.Second {
		t.Errorf("answer took %v, want it when the connection dropped, not at PUBLISH_TIMEOUT", took)
	}
}

// SIGTERM while a publish waits: the request still gets its answer, then
// the process exits 0.
func TestPublisherShutdownFinishesInFlight(t *testing.T) {
	b := harness.StartBroker(t)
	pub := startPublisher(t, b, map[string]string{"PUBLISH_TIMEOUT": "1500ms", "SHUTDOWN_TIMEOUT": "5s"})
	pub.WaitReady(t, 10*time.Second)

	b.Pause()
	answer := make(chan harness.Response, 1)
	go func() {
		answer <- harness.PostJSON(t, pub.URL()+"/publish", `{"topic":"pt/inflight","message":"x","qos":1}`)
	}()
	time.Sleep(300 * time.Millisecond)
	stopped := make(chan int, 1)
	go func() { stopped <- pub.Stop() }()
	r := <-answer
	checkPubProblem(t, "publish in flight at SIGTERM (broker paused)", r, 504)
	if code := <-stopped; code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	b.Resume()
}

// The broker is killed again and again under concurrent publishes: a publish
// whose connection fails (a write on a connection that is gone, the
// connection lost before the acknowledgement) answers 503, never 500.
func TestPublisherBrokerKilledUnderLoad(t *testing.T) {
	b := harness.StartBroker(t)
	pub := startPublisher(t, b, map[string]string{"LOG_LEVEL": "info"})
	pub.WaitReady(t, 10*time.Second)

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	t.Cleanup(client.CloseIdleConnections)
	var mu sync.Mutex
	statuses := map[int]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf(`{"topic":"pt/killed/%d","message":"%d","qos":%d}`, w, i, i%3)
				status := 0
				resp, err := client.Post(pub.URL()+"/publish", "application/json", strings.NewReader(body))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				mu.Lock()
				statuses[status]++
				mu.Unlock()
				if status != http.StatusOK {
					time.Sleep(5 * time.Millisecond) // 503 comes at once; don't spin
				}
			}
		}()
	}
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		b.Kill()
		time.Sleep(100 * time.Millisecond)
		b.Start()
	}
	pub.WaitReady(t, 15*time.Second)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()

	t.Logf("answers by status: %v", statuses)
	for status, n := range statuses {
		if status != 200 && status != 503 && status != 504 {
			t.Errorf("%d answers with status %d; want only 200, 503 and 504", n, status)
		}
	}
	if statuses[503] == 0 || statuses[200] == 0 {
		t.Errorf("answers %v: want publishes through and refused", statuses)
	}
	for _, l := range pub.Logs() {
		if l["msg"] == "request failed" && l["status"] == float64(500) {
			t.Errorf("publisher log: %v", l)
			break
		}
	}
}
