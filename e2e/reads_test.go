package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// bigPayload is the i-th payload of the read tests: 256 KiB, the
// publisher's largest, text for even i and binary for odd i, each telling
// its index.
func bigPayload(i int) []byte {
	p := make([]byte, 256<<10)
	if i%2 == 0 {
		s := fmt.Sprintf("%07d ", i)
		for j := range p {
			p[j] = s[j%len(s)]
		}
		return p
	}
	r := rand.New(rand.NewPCG(uint64(i), 7))
	for j := range p {
		p[j] = byte(r.Uint32())
	}
	p[0] = 0xff // never UTF-8
	return p
}

// TestSubscriberReadMemoryBounded stores a thousand payloads of 256 KiB,
// then reads them all four times at once with limit=1000 while a stream
// replays them too: the subscriber's peak RSS stays under 200 MB, every
// page stops at the byte budget (16 such rows), and each walk returns every
// row exactly once, byte for byte.
func TestSubscriberReadMemoryBounded(t *testing.T) {
	const n, pageRows = 1000, 16 // readlimit.PageBytes / 256 KiB
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, map[string]string{"MQTT_TOPICS": "e2e/big/#", "MQTT_QOS": "1", "LOG_LEVEL": "info"})
	sub.WaitReady(t, 15*time.Second)
	pub := subscriberPublisher(t, b)
	start := time.Now()
	for i := range n {
		pub(fmt.Sprintf("e2e/big/%d", i), 1, bigPayload(i))
	}
	if !harness.Eventually(60*time.Second, func() bool {
		return metric(t, sub, "subscriber_messages_stored_total") >= n
	}) {
		t.Fatalf("stored %v of %d within 60s", metric(t, sub, "subscriber_messages_stored_total"), n)
	}
	t.Logf("stored %d messages of 256 KiB in %v; peak RSS while storing %d MB", n, time.Since(start).Round(time.Millisecond), sub.PeakRSS(t)>>20)

	// A fresh process: its peak is the reads', not the storing's.
	if code := sub.Stop(); code != 0 {
		t.Fatalf("stop exited %d", code)
	}
	sub.Restart()
	sub.WaitReady(t, 15*time.Second)
	idle := sub.PeakRSS(t)

	var wg sync.WaitGroup
	walks := make([][]int64, 4)
	for w := range walks {
		wg.Go(func() { walks[w] = walkBig(t, sub, n, pageRows) })
	}
	var replayed []int64
	wg.Go(func() {
		s := openStream(t, sub, "topic="+url.QueryEscape("e2e/big/#")+"&after=0")
		if s.resp.StatusCode != http.StatusOK {
			t.Errorf("stream replay: status %d", s.resp.StatusCode)
			return
		}
		for range n {
			m := s.next(t, 60*time.Second)
			checkBig(t, m)
			replayed = append(replayed, m.ID)
		}
	})
	start = time.Now()
	wg.Wait()
	took := time.Since(start).Round(time.Millisecond)
	peak := sub.PeakRSS(t)
	t.Logf("4 walks of GET /messages?limit=1000 and a replay of %d messages of 256 KiB in %v: peak RSS %d MB (%d MB idle)", n, took, peak>>20, idle>>20)
	if peak >= 200<<20 {
		t.Errorf("peak RSS %d MB, want under 200 MB", peak>>20)
	}
	for w, ids := range walks {
		if len(ids) != n {
			t.Errorf("walk %d: %d rows, want %d", w, len(ids), n)
		}
	}
	for i := 1; i < len(replayed); i++ {
		if replayed[i] <= replayed[i-1] {
			t.Fatalf("replay: id %d after %d, want increasing ids", replayed[i], replayed[i-1])
		}
	}
	if len(walks[0]) == n && len(replayed) == n {
		for i, id := range walks[0] {
			if replayed[n-1-i] != id {
				t.Fatalf("the replay (oldest first) and the walk (newest first) differ at %d: %d and %d", i, replayed[n-1-i], id)
			}
		}
	}
}

// walkBig follows next through every page of e2e/big/# with limit=1000 and
// returns the ids, newest first. Each page but the last holds pageRows rows;
// no id comes twice and every payload is the one published.
func walkBig(t *testing.T, sub *harness.Service, n, pageRows int) []int64 {
	var ids []int64
	seen := map[int64]bool{}
	q := url.Values{"topic": {"e2e/big/#"}, "limit": {"1000"}}
	for pageNo := 0; ; pageNo++ {
		if pageNo > n {
			t.Errorf("paging does not end")
			return ids
		}
		r := harness.Get(t, sub.URL()+"/messages?"+q.Encode())
		if r.Status != http.StatusOK {
			t.Errorf("GET /messages?%s: status %d %.300s", q.Encode(), r.Status, r.Body)
			return ids
		}
		var p page
		if err := json.Unmarshal(r.Body, &p); err != nil {
			t.Errorf("page %d: %v", pageNo, err)
			return ids
		}
		if p.Next != nil && len(p.Messages) != pageRows {
			t.Errorf("page %d has %d rows, want %d (the byte budget)", pageNo, len(p.Messages), pageRows)
		}
		for _, m := range p.Messages {
			if seen[m.ID] {
				t.Errorf("id %d comes twice", m.ID)
			}
			if len(ids) > 0 && m.ID >= ids[len(ids)-1] {
				t.Errorf("id %d after %d, want newest first", m.ID, ids[len(ids)-1])
			}
			seen[m.ID] = true
			ids = append(ids, m.ID)
			checkBig(t, m)
		}
		if p.Next == nil {
			return ids
		}
		q.Set("before", *p.Next)
	}
}

// checkBig checks that m carries the payload published on its topic.
func checkBig(t *testing.T, m stored) {
	i, err := strconv.Atoi(strings.TrimPrefix(m.Topic, "e2e/big/"))
	if err != nil {
		t.Errorf("unexpected topic %s", m.Topic)
		return
	}
	want := "text"
	if i%2 == 1 {
		want = "base64"
	}
	if got := m.bytes(t); m.Encoding != want || !bytes.Equal(got, bigPayload(i)) {
		t.Errorf("%s (id %d): encoding %s, %d payload bytes; want %s and the published payload", m.Topic, m.ID, m.Encoding, len(got), want)
	}
}

// response is the status, headers and (unless it is an open event
// stream) body of one GET.
type response struct {
	status int
	header http.Header
	body   []byte
}

// getOnce sends one GET with header pairs and reads the body unless the
// answer is an event stream, which it closes at once.
func getOnce(t *testing.T, u string, header ...string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode, header: resp.Header}
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		if r.body, err = io.ReadAll(resp.Body); err != nil {
			t.Fatalf("read %s: %v", u, err)
		}
	}
	return r
}

// TestSubscriberAPIToken sends each bad credential to every protected
// endpoint of a subscriber with API_TOKEN set, the stream included: each
// is a 401 problem detail with a Bearer challenge. The right token opens
// them; the probes, the metrics and the console's files need none.
func TestSubscriberAPIToken(t *testing.T) {
	const token = "e2e-read-token"
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, map[string]string{"API_TOKEN": token})
	sub.WaitReady(t, 15*time.Second)
	subscriberPublisher(t, b)("e2e/token/a", 1, []byte("21.5"))

	protected := []string{
		"/messages",
		"/messages?topic=" + url.QueryEscape("e2e/token/#") + "&limit=5",
		"/messages/stream",
		"/messages/stream?topic=" + url.QueryEscape("e2e/token/+") + "&after=0",
	}
	bad := []struct {
		name   string
		query  string   // added to the URL
		header []string // pairs
	}{
		{"no header", "", nil},
		{"basic scheme", "", []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+token))}},
		{"token scheme", "", []string{"Authorization", "Token " + token}},
		{"no scheme", "", []string{"Authorization", token}},
		{"empty token", "", []string{"Authorization", "Bearer "}},
		{"scheme alone", "", []string{"Authorization", "Bearer"}},
		{"wrong token", "", []string{"Authorization", "Bearer wrong-token"}},
		{"token in another case", "", []string{"Authorization", "Bearer " + strings.ToUpper(token)}},
		{"token with more after it", "", []string{"Authorization", "Bearer " + token + "x"}},
		{"a prefix of the token", "", []string{"Authorization", "Bearer " + token[:len(token)-1]}},
		{"token in the query", "access_token=" + token, nil},
		{"token in another header", "", []string{"X-API-Token", token}},
		{"token in a cookie", "", []string{"Cookie", "access_token=" + token}},
		{"token as the Last-Event-ID", "", []string{"Last-Event-ID", token}},
	}
	for _, path := range protected {
		for _, tt := range bad {
			u := sub.URL() + path
			switch {
			case tt.query == "":
			case strings.Contains(u, "?"):
				u += "&" + tt.query
			default:
				u += "?" + tt.query
			}
			r := getOnce(t, u, tt.header...)
			var p struct {
				Title  string `json:"title"`
				Status int    `json:"status"`
				Detail string `json:"detail"`
			}
			if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer ") ||
				r.header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(r.body, &p) != nil ||
				p.Status != 401 || p.Title == "" || p.Detail == "" {
				t.Errorf("%s, GET %s: status %d WWW-Authenticate %q type %q body %s; want a 401 problem detail with a Bearer challenge",
					tt.name, path, r.status, r.header.Get("WWW-Authenticate"), r.header.Get("Content-Type"), r.body)
			}
			if bytes.Contains(r.body, []byte(token)) {
				t.Errorf("%s, GET %s: the answer shows the token: %s", tt.name, path, r.body)
			}
		}
		r := getOnce(t, sub.URL()+path, "Authorization", "Bearer "+token)
		if r.status != http.StatusOK {
			t.Errorf("GET %s with the token: status %d %s, want 200", path, r.status, r.body)
		}
	}
	var r response
	if !harness.Eventually(10*time.Second, func() bool {
		r = getOnce(t, sub.URL()+"/messages?topic=e2e/token/a", "Authorization", "bearer "+token)
		return r.status == 200 && bytes.Contains(r.body, []byte(`"payload":"21.5"`))
	}) {
		t.Errorf("GET /messages with the token: %d %s, want the stored message", r.status, r.body)
	}

	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/", "/console/console.js", "/console/console.css", "/console/config.json"} {
		for _, header := range [][]string{nil, {"Authorization", "Bearer wrong-token"}} {
			if r := getOnce(t, sub.URL()+path, header...); r.status != http.StatusOK {
				t.Errorf("GET %s with %q: status %d, want 200 (open)", path, header, r.status)
			}
		}
	}
	if r := getOnce(t, sub.URL()+"/console/config.json"); !bytes.Contains(r.body, []byte(`"token_required":true`)) {
		t.Errorf("console config %s, want token_required true", r.body)
	}
	// A 401 is not an internal error: nothing logged as one.
	for _, l := range sub.Logs() {
		if l["level"] == "ERROR" {
			t.Errorf("error logged: %v", l)
		}
	}
}

// Both services take API_TOKEN by one rule: the same bad values stop
// both at start in the same words (without showing the value), and the
// same credentials get the same answers.
func TestAPITokenSameInBothServices(t *testing.T) {
	db := "sqlite:" + t.TempDir() + "/m.db"
	for _, value := range []string{" s3cr3t", "s3cr3t ", "s3\tcr3t", "s3\x01cr3t", "s3\x7fcr3t", "s3crét"} {
		reasons := map[string]string{}
		for _, svc := range []string{"publisher", "subscriber"} {
			bin := harness.Publisher(t)
			if svc == "subscriber" {
				bin = harness.Subscriber(t)
			}
			env := map[string]string{"API_TOKEN": value, "MQTT_BROKER": "tcp://127.0.0.1:1", "DATABASE_URL": db, "HTTP_ADDR": "127.0.0.1:0"}
			code, _, stderr := harness.Run(t, bin, env)
			line := strings.TrimSpace(stderr)
			_, reason, found := strings.Cut(line, "API_TOKEN: ")
			if code != 2 || strings.Contains(line, "\n") || !found {
				t.Errorf("%s with API_TOKEN=%q: exit %d, stderr %q; want 2 and one line naming API_TOKEN", svc, value, code, stderr)
			}
			if strings.Contains(line, "s3") {
				t.Errorf("%s with API_TOKEN=%q: the line shows the value: %q", svc, value, line)
			}
			reasons[svc] = reason
		}
		if reasons["publisher"] != reasons["subscriber"] {
			t.Errorf("API_TOKEN=%q: publisher says %q, subscriber %q; want the same", value, reasons["publisher"], reasons["subscriber"])
		}
	}

	const token = "e2e-both-token"
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, map[string]string{"API_TOKEN": token})
	pub := startPublisher(t, b, map[string]string{"API_TOKEN": token})
	sub.WaitReady(t, 15*time.Second)
	pub.WaitReady(t, 15*time.Second)
	for _, auth := range []string{"", "Basic " + token, token, "Bearer ", "Bearer wrong", "Bearer  " + token, "bearer " + token, "Bearer " + token} {
		var header []string
		if auth != "" {
			header = []string{"Authorization", auth}
		}
		p := harness.Do(t, http.MethodPost, pub.URL()+"/publish", "application/json", []byte(`{"topic":"e2e/both","message":"x"}`), header...)
		s := getOnce(t, sub.URL()+"/messages", header...)
		var pp, sp struct {
			Detail string `json:"detail"`
		}
		json.Unmarshal(p.Body, &pp)
		json.Unmarshal(s.body, &sp)
		realm := func(h http.Header) string {
			return strings.NewReplacer(`"publisher"`, `"<service>"`, `"subscriber"`, `"<service>"`).Replace(h.Get("WWW-Authenticate"))
		}
		if p.Status != s.status || realm(p.Header) != realm(s.header) || pp.Detail != sp.Detail && p.Status == 401 {
			t.Errorf("Authorization %q: publisher %d %q %q, subscriber %d %q %q; want the same",
				auth, p.Status, p.Header.Get("WWW-Authenticate"), pp.Detail, s.status, s.header.Get("WWW-Authenticate"), sp.Detail)
		}
	}
}
