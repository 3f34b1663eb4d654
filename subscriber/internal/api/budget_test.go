package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// A page ends at readlimit.PageBytes of payload, with the row that reaches
// it; next continues right after it and is null on the last page, also
// when the budget ends a page exactly at the last row.
func TestListMessagesByteBudget(t *testing.T) {
	srv, st := newTestServer(t)
	at := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	quarter := readlimit.PageBytes/4 + 1 // four of them pass the budget
	insert := func(topic string, n, size int) {
		t.Helper()
		for i := range n {
			m := store.Message{Topic: topic, Payload: bytes.Repeat([]byte{byte('a' + i%26)}, size), QoS: 1, ReceivedAt: at, ClientID: "s"}
			if err := st.Insert(context.Background(), []store.Message{m}); err != nil {
				t.Fatalf("insert: %v", err)
			}
		}
	}
	insert("big/ten", 10, quarter)
	insert("big/eight", 8, quarter)
	insert("huge", 2, readlimit.PageBytes+1)
	insert("big/small", 5, 10)

	tests := []struct {
		filter string
		limit  int
		want   []int // rows of each page
	}{
		{"big/ten", 1000, []int{4, 4, 2}},
		{"big/eight", 1000, []int{4, 4}},
		{"big/eight", 3, []int{3, 3, 2}},
		{"huge", 1000, []int{1, 1}},
		{"big/small", 1000, []int{5}},
		{"big/#", 1000, []int{5 + 4, 4, 4, 4, 2}}, // the small rows are the newest
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s limit %d", tt.filter, tt.limit), func(t *testing.T) {
			var sizes []int
			seen := map[int64]bool{}
			var last int64
			q := url.Values{"topic": {tt.filter}, "limit": {fmt.Sprint(tt.limit)}}
			for page := 0; ; page++ {
				if page > 20 {
					t.Fatal("paging does not end")
				}
				resp, body := get(t, srv.URL+"/messages?"+q.Encode())
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %.300s", resp.StatusCode, body)
				}
				var p struct {
					Messages []Message `json:"messages"`
					Next     *string   `json:"next"`
				}
				if err := json.Unmarshal(body, &p); err != nil {
					t.Fatalf("decode: %v", err)
				}
				sizes = append(sizes, len(p.Messages))
				for _, m := range p.Messages {
					if seen[m.ID] || last != 0 && m.ID >= last {
						t.Errorf("id %d after %d: a repeat or out of order", m.ID, last)
					}
					seen[m.ID], last = true, m.ID
				}
				if p.Next == nil {
					break
				}
				q.Set("before", *p.Next)
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tt.want) {
				t.Errorf("page sizes %v, want %v", sizes, tt.want)
			}
		})
	}
}

// With every turn of the gate taken, a read waits the gate's wait and is
// then refused with 503 and Retry-After; a live-only stream reads nothing
// and is not refused.
func TestBusyReadsAreRefused(t *testing.T) {
	gate := readlimit.New(1, 50*time.Millisecond)
	srv, _ := newServerWith(t, Options{Gate: gate})
	release, err := gate.Acquire(context.Background())
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	for _, path := range []string{"/messages", "/messages/stream?after=0"} {
		resp, body := get(t, srv.URL+path)
		var p problem
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" ||
			resp.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(body, &p) != nil || p.Status != 503 || p.Detail == "" {
			t.Errorf("%s with the gate full: status %d Retry-After %q type %q body %s; want a 503 problem with Retry-After 2",
				path, resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"), body)
		}
	}
	if got := gate.Rejected(); got != 2 {
		t.Errorf("Rejected() = %d, want 2", got)
	}
	live := openStatus(t, srv.URL+"/messages/stream")
	if live != 200 {
		t.Errorf("live-only stream with the gate full: status %d, want 200", live)
	}
	release()
	if resp, body := get(t, srv.URL+"/messages"); resp.StatusCode != 200 {
		t.Errorf("after the turn came back: status %d %s, want 200", resp.StatusCode, body)
	}
	if got := gate.InUse(); got != 0 {
		t.Errorf("InUse() after the reads = %d, want 0", got)
	}
}
