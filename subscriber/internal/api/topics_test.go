package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/sqlite"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

func TestParseTopics(t *testing.T) {
	tests := []struct {
		raw       string
		want      store.TopicQuery
		wantError string
	}{
		{"", store.TopicQuery{Filter: "#", Limit: DefaultTopics}, ""},
		{"topic=living%2F%23&limit=10&after=living%2Froom1", store.TopicQuery{Filter: "living/#", Limit: 10, After: "living/room1"}, ""},
		{"limit=10000", store.TopicQuery{Filter: "#", Limit: MaxTopics}, ""},
		{"topic=a%2B", store.TopicQuery{}, "topic"},
		{"limit=0", store.TopicQuery{}, "limit"},
		{"limit=10001", store.TopicQuery{}, "limit"},
		{"limit=x", store.TopicQuery{}, "limit"},
		{"after=", store.TopicQuery{}, "after"},
		{"after=%FF", store.TopicQuery{}, "after"},
		{"after=a&after=b", store.TopicQuery{}, "after"},
	}
	for _, tt := range tests {
		v, err := url.ParseQuery(tt.raw)
		if err != nil {
			t.Fatalf("bad test query %q: %v", tt.raw, err)
		}
		got, err := parseTopics(v)
		if tt.wantError != "" {
			var pe *paramError
			if !errors.As(err, &pe) || pe.Param != tt.wantError {
				t.Errorf("parseTopics(%q) error = %v, want one about %s", tt.raw, err, tt.wantError)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseTopics(%q) = %+v, %v, want %+v", tt.raw, got, err, tt.want)
		}
	}
}

type topicsPage struct {
	Topics []struct {
		Topic   string             `json:"topic"`
		Count   int64              `json:"count"`
		FirstAt string             `json:"first_at"`
		LastAt  string             `json:"last_at"`
		Last    Message            `json:"last"`
		Values  map[string]float64 `json:"values"`
	} `json:"topics"`
	Next *string `json:"next"`
}

func TestTopicsEndpoint(t *testing.T) {
	srv, st := newTestServer(t)
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	var msgs []store.Message
	add := func(topic, payload string, at time.Duration) {
		msgs = append(msgs, store.Message{Topic: topic, Payload: []byte(payload), QoS: 1, ReceivedAt: t0.Add(at), ClientID: "s"})
	}
	add("living/room1/temperature", "21", 0)
	add("living/room1/temperature", "21.5", time.Second)
	add("living/room2/temperature", "19", 0)
	add("devices/7", `{"temp": 1e21, "env": {"hum": 1e-7}}`, 0)
	add("devices/7", `offline`, time.Minute)
	add("bin", "\xff", 0)
	if err := st.Insert(context.Background(), msgs); err != nil {
		t.Fatalf("insert: %v", err)
	}
	resp, body := get(t, srv.URL+"/topics")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	want := `{"topics":[` +
		`{"topic":"bin","count":1,"first_at":"2026-11-24T10:00:00.000000Z","last_at":"2026-11-24T10:00:00.000000Z",` +
		`"last":{"id":6,"topic":"bin","payload":"/w==","encoding":"base64","qos":1,"retained":false,"duplicate":false,"received_at":"2026-11-24T10:00:00.000000Z"},"values":{}},` +
		`{"topic":"devices/7","count":2,"first_at":"2026-11-24T10:00:00.000000Z","last_at":"2026-11-24T10:01:00.000000Z",` +
		`"last":{"id":5,"topic":"devices/7","payload":"offline","encoding":"text","qos":1,"retained":false,"duplicate":false,"received_at":"2026-11-24T10:01:00.000000Z"},` +
		`"values":{"env.hum":1e-7,"temp":1e+21}},` +
		`{"topic":"living/room1/temperature","count":2,"first_at":"2026-11-24T10:00:00.000000Z","last_at":"2026-11-24T10:00:01.000000Z",` +
		`"last":{"id":2,"topic":"living/room1/temperature","payload":"21.5","encoding":"text","qos":1,"retained":false,"duplicate":false,"received_at":"2026-11-24T10:00:01.000000Z"},"values":{"value":21.5}},` +
		`{"topic":"living/room2/temperature","count":1,"first_at":"2026-11-24T10:00:00.000000Z","last_at":"2026-11-24T10:00:00.000000Z",` +
		`"last":{"id":3,"topic":"living/room2/temperature","payload":"19","encoding":"text","qos":1,"retained":false,"duplicate":false,"received_at":"2026-11-24T10:00:00.000000Z"},"values":{"value":19}}` +
		`],"next":null}`
	if got := strings.TrimSpace(string(body)); got != want {
		t.Errorf("topics:\ngot  %s\nwant %s", got, want)
	}
	// The hand-written JSON is what encoding/json reads and writes.
	var p topicsPage
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decode: %v", err)
	}
	again, err := json.Marshal(map[string]any{"v": p.Topics[1].Values})
	if err != nil || string(again) != `{"v":{"env.hum":1e-7,"temp":1e+21}}` {
		t.Errorf("encoding/json writes the values as %s, %v", again, err)
	}

	// Pages: next is the last topic of a full page.
	var names []string
	after := ""
	for range 10 {
		u := srv.URL + "/topics?limit=3"
		if after != "" {
			u += "&after=" + url.QueryEscape(after)
		}
		_, body := get(t, u)
		var p topicsPage
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		for _, tp := range p.Topics {
			names = append(names, tp.Topic)
		}
		if p.Next == nil {
			break
		}
		after = *p.Next
	}
	if got := strings.Join(names, " "); got != "bin devices/7 living/room1/temperature living/room2/temperature" {
		t.Errorf("paged through %s", got)
	}
	_, body = get(t, srv.URL+"/topics?topic=living/%2B/temperature&limit=1")
	if err := json.Unmarshal(body, &p); err != nil || len(p.Topics) != 1 || p.Next == nil || *p.Next != "living/room1/temperature" {
		t.Errorf("a filter, limit 1: %s", body)
	}
	for _, q := range []string{"limit=0", "limit=10001", "topic=%23%2Fa", "after="} {
		resp, body := get(t, srv.URL+"/topics?"+q)
		if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: status %d %s, want a 400 problem", q, resp.StatusCode, body)
		}
	}
}

// A page of topics ends at the byte budget of their newest payloads, and
// next says when more follow, also when the budget ends the last page.
func TestTopicsByteBudget(t *testing.T) {
	srv, st := newTestServer(t)
	big := bytes.Repeat([]byte("x"), readlimit.PageBytes/2+1) // two pass the budget
	for i := range 5 {
		m := store.Message{Topic: fmt.Sprintf("big/%d", i), Payload: big, ReceivedAt: time.Now(), ClientID: "s"}
		if err := st.Insert(context.Background(), []store.Message{m}); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}
	var sizes []int
	after := ""
	for range 10 {
		u := srv.URL + "/topics"
		if after != "" {
			u += "?after=" + url.QueryEscape(after)
		}
		_, body := get(t, u)
		var p topicsPage
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatalf("decode: %v", err)
		}
		sizes = append(sizes, len(p.Topics))
		if p.Next == nil {
			break
		}
		after = *p.Next
	}
	if fmt.Sprint(sizes) != "[2 2 1]" {
		t.Errorf("pages of %v topics, want [2 2 1]", sizes)
	}
}

// BenchmarkTopicsEndpoint measures GET /topics?limit=10000 over 10,000
// topics, a reading of two numbers each.
func BenchmarkTopicsEndpoint(b *testing.B) {
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatalf("open store: %v", err)
	}
	defer st.Close()
	var msgs []store.Message
	for i := range 10_000 {
		msgs = append(msgs, store.Message{Topic: fmt.Sprintf("devices/d%05d", i), Payload: fmt.Appendf(nil, `{"temp":%d.5,"hum":%d}`, i%30, i%50),
			QoS: 1, ReceivedAt: time.Now(), ClientID: "s"})
		if len(msgs) == 500 {
			if err := st.Insert(context.Background(), msgs); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	h := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), st, nil, prometheus.NewRegistry(), stream.NewHub(0), Options{})
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/topics?limit=10000", nil))
		if w.Code != 200 {
			b.Fatalf("status %d", w.Code)
		}
	}
	// CPU time, which a loaded machine changes less than the wall clock.
	b.ReportMetric(float64(cpuTime()-cpu)/1e6/float64(b.N), "cpu-ms/op")
}

// cpuTime is the CPU time of the process so far, in nanoseconds.
func cpuTime() int64 {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return 0
	}
	return r.Utime.Nano() + r.Stime.Nano()
}
