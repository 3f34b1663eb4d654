package api

import (
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
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/sqlite"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

func TestParseQuery(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		raw     string
		want    store.Query
		wantErr string // the parameter named in the error
	}{
		{"", store.Query{Filter: "#", Limit: 100}, ""},
		{"topic=a%2F%2B%2Fc&limit=5", store.Query{Filter: "a/+/c", Limit: 5}, ""},
		{"topic=sport%2F%23", store.Query{Filter: "sport/#", Limit: 100}, ""},
		{"since=2026-11-24T10:00:00Z&until=2026-11-24T11:00:00%2B01:00", store.Query{Filter: "#", Limit: 100, Since: t0, Until: t0}, "until"},
		{"since=2026-11-24T10:00:00Z&until=2026-11-24T12:00:00%2B01:00", store.Query{Filter: "#", Limit: 100, Since: t0, Until: t0.Add(time.Hour)}, ""},
		{"since=2026-11-24T10:00:00.5Z", store.Query{Filter: "#", Limit: 100, Since: t0.Add(500 * time.Millisecond)}, ""},
		{"before=41&limit=1000", store.Query{Filter: "#", Limit: 1000, Before: 41}, ""},
		{"limit=1", store.Query{Filter: "#", Limit: 1}, ""},
		{"other=x", store.Query{Filter: "#", Limit: 100}, ""},
		{"topic=", store.Query{}, "topic"},
		{"topic=a%2F%23%2Fb", store.Query{}, "topic"},
		{"topic=a%2Bb", store.Query{}, "topic"},
		{"topic=a&topic=b", store.Query{}, "topic"},
		{"since=yesterday", store.Query{}, "since"},
		{"since=2026-11-24", store.Query{}, "since"},
		{"until=2026-11-24T10:00:00", store.Query{}, "until"},
		{"limit=0", store.Query{}, "limit"},
		{"limit=1001", store.Query{}, "limit"},
		{"limit=-1", store.Query{}, "limit"},
		{"limit=ten", store.Query{}, "limit"},
		{"limit=", store.Query{}, "limit"},
		{"before=0", store.Query{}, "before"},
		{"before=abc", store.Query{}, "before"},
		{"before=99999999999999999999", store.Query{}, "before"},
	}
	for _, tt := range tests {
		v, err := url.ParseQuery(tt.raw)
		if err != nil {
			t.Fatalf("bad test query %q: %v", tt.raw, err)
		}
		got, err := parseQuery(v)
		if tt.wantErr != "" {
			var pe *paramError
			if !errors.As(err, &pe) || pe.Param != tt.wantErr {
				t.Errorf("parseQuery(%q) error = %v, want one about %s", tt.raw, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseQuery(%q) error = %v", tt.raw, err)
			continue
		}
		if got.Filter != tt.want.Filter || got.Limit != tt.want.Limit || got.Before != tt.want.Before ||
			!got.Since.Equal(tt.want.Since) || !got.Until.Equal(tt.want.Until) {
			t.Errorf("parseQuery(%q) = %+v, want %+v", tt.raw, got, tt.want)
		}
	}
}

func TestNewMessage(t *testing.T) {
	at := time.Date(2026, 11, 24, 10, 0, 0, 123456000, time.FixedZone("x", 3600))
	tests := []struct {
		payload       []byte
		want, wantEnc string
	}{
		{[]byte("21.5"), "21.5", "text"},
		{[]byte{}, "", "text"},
		{[]byte{0, 1, 0xff}, "AAH/", "base64"},
		{[]byte("é"[:1]), "ww==", "base64"},
	}
	for _, tt := range tests {
		got := NewMessage(store.Message{ID: 42, Topic: "t", Payload: tt.payload, QoS: 1, ReceivedAt: at})
		if got.Payload != tt.want || got.Encoding != tt.wantEnc {
			t.Errorf("payload %q: got %q %s, want %q %s", tt.payload, got.Payload, got.Encoding, tt.want, tt.wantEnc)
		}
		if want := "2026-11-24T09:00:00.123456Z"; got.ReceivedAt != want {
			t.Errorf("received_at = %q, want %q", got.ReceivedAt, want)
		}
	}
}

// newTestServer runs the real handler on 127.0.0.1 over a real SQLite file.
func newTestServer(t *testing.T, ready ...Check) (*httptest.Server, store.Store) {
	t.Helper()
	return newServerWith(t, Options{}, ready...)
}

// newServerWith is newTestServer with options.
func newServerWith(t *testing.T, opt Options, ready ...Check) (*httptest.Server, store.Store) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httptest.NewServer(NewServer(log, st, ready, prometheus.NewRegistry(), stream.NewHub(0), opt))
	t.Cleanup(srv.Close)
	return srv, st
}

func get(t *testing.T, u string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", u, err)
	}
	return resp, b
}

func TestListMessages(t *testing.T) {
	srv, st := newTestServer(t)
	at := time.Date(2026, 11, 24, 10, 0, 0, 123456000, time.UTC)
	var msgs []store.Message
	for i := range 5 {
		msgs = append(msgs, store.Message{Topic: "living/room1/temperature", Payload: []byte("21.5"), QoS: 1,
			ReceivedAt: at.Add(time.Duration(i) * time.Second), ClientID: "s", PacketID: uint16(i + 1)})
	}
	msgs = append(msgs, store.Message{Topic: "bin", Payload: []byte{0xff}, ReceivedAt: at, ClientID: "s"})
	if err := st.Insert(context.Background(), msgs); err != nil {
		t.Fatalf("insert: %v", err)
	}

	resp, body := get(t, srv.URL+"/messages?topic=living/%2B/temperature&limit=2")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	wantFirst := `{"messages":[{"id":5,"topic":"living/room1/temperature","payload":"21.5","encoding":"text","qos":1,` +
		`"retained":false,"duplicate":false,"received_at":"2026-11-24T10:00:04.123456Z"},` +
		`{"id":4,"topic":"living/room1/temperature","payload":"21.5","encoding":"text","qos":1,` +
		`"retained":false,"duplicate":false,"received_at":"2026-11-24T10:00:03.123456Z"}],"next":"3"}`
	if got := strings.TrimSpace(string(body)); got != wantFirst {
		t.Errorf("first page:\ngot  %s\nwant %s", got, wantFirst)
	}

	var ids []int64
	next := ""
	for range 10 {
		u := srv.URL + "/messages?topic=living/%23&limit=2"
		if next != "" {
			u += "&before=" + next
		}
		_, body := get(t, u)
		var p struct {
			Messages []Message `json:"messages"`
			Next     *string   `json:"next"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		for _, m := range p.Messages {
			ids = append(ids, m.ID)
		}
		if p.Next == nil {
			break
		}
		next = *p.Next
	}
	if got, want := fmt.Sprint(ids), "[5 4 3 2 1]"; got != want {
		t.Errorf("paged ids %v, want %v", got, want)
	}

	_, body = get(t, srv.URL+"/messages?topic=bin")
	if !strings.Contains(string(body), `"payload":"/w==","encoding":"base64"`) || !strings.Contains(string(body), `"next":null`) {
		t.Errorf("binary message: %s", body)
	}
	_, body = get(t, srv.URL+"/messages?topic=nothing")
	if got := strings.TrimSpace(string(body)); got != `{"messages":[],"next":null}` {
		t.Errorf("empty result: %s", got)
	}
}

func TestBadRequestsAreProblems(t *testing.T) {
	srv, _ := newTestServer(t)
	for _, q := range []string{"topic=a%2F%23%2Fb", "limit=0", "limit=5000", "since=now", "before=x", "until=2026-01-01T00:00:00Z&since=2026-02-01T00:00:00Z"} {
		resp, body := get(t, srv.URL+"/messages?"+q)
		var p problem
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("%s: body %s: %v", q, body, err)
		}
		if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/problem+json" ||
			p.Status != 400 || p.Title == "" || p.Detail == "" {
			t.Errorf("%s: status %d type %q problem %+v", q, resp.StatusCode, resp.Header.Get("Content-Type"), p)
		}
	}
	resp, _ := get(t, srv.URL+"/nothing")
	if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("unknown path: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestHealthAndReadiness(t *testing.T) {
	var notReady error = errors.New("not connected to the broker")
	srv, _ := newTestServer(t, Check{Name: "mqtt", Func: func(context.Context) error { return notReady }})
	if resp, _ := get(t, srv.URL+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("healthz = %d, want 200", resp.StatusCode)
	}
	resp, body := get(t, srv.URL+"/readyz")
	if resp.StatusCode != 503 || !strings.Contains(string(body), "mqtt: not connected") {
		t.Errorf("readyz while not connected = %d %s, want 503 naming the check", resp.StatusCode, body)
	}
	notReady = nil
	if resp, _ := get(t, srv.URL+"/readyz"); resp.StatusCode != 200 {
		t.Errorf("readyz when connected = %d, want 200", resp.StatusCode)
	}
	if resp, body := get(t, srv.URL+"/metrics"); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("metrics = %d %q %.100s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}
