package api

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

func TestNegotiate(t *testing.T) {
	tests := []struct {
		accept, query, want string
		wantErr             bool
	}{
		{"", "", formatJSON, false},
		{"*/*", "", formatJSON, false},
		{"text/html,application/xhtml+xml,*/*;q=0.8", "", formatJSON, false},
		{"text/csv", "", formatCSV, false},
		{"text/csv; charset=utf-8", "", formatCSV, false},
		{"application/x-ndjson", "", formatNDJSON, false},
		{"application/ndjson", "", formatNDJSON, false},
		{"application/json, text/csv", "", formatJSON, false},
		{"text/csv, application/json", "", formatCSV, false},
		{"application/json;q=0.5, text/csv;q=0.9", "", formatCSV, false},
		{"text/csv;q=0", "", formatJSON, false},
		{"TEXT/CSV", "", formatCSV, false},
		{"text/csv;q=2", "", formatJSON, false},
		{"", "format=csv", formatCSV, false},
		{"text/csv", "format=ndjson", formatNDJSON, false},
		{"text/csv", "format=json", formatJSON, false},
		{"", "format=xml", "", true},
		{"", "format=csv&format=csv", "", true},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/messages?"+tt.query, nil)
		if tt.accept != "" {
			r.Header.Set("Accept", tt.accept)
		}
		got, err := negotiate(r, r.URL.Query())
		if (err != nil) != tt.wantErr || !tt.wantErr && got != tt.want {
			t.Errorf("Accept %q, %q: got %q, %v, want %q (error %v)", tt.accept, tt.query, got, err, tt.want, tt.wantErr)
		}
	}
}

// exportRows stores n messages on two topics, with payloads of every kind
// a CSV reader could trip on.
func exportRows(t *testing.T, st store.Store, n int) []store.Message {
	t.Helper()
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 123456000, time.UTC)
	payloads := [][]byte{
		[]byte("21.5"), []byte(`{"temp": 22.4, "note": "a, \"quoted\" one"}`), []byte("two\nlines"),
		[]byte("carriage\r\nreturn"), {0xff, 0x00, 0x10}, {}, []byte(" leading space"), []byte("=1+1"), []byte("é"),
	}
	var msgs []store.Message
	for i := range n {
		msgs = append(msgs, store.Message{Topic: []string{"a/1", "a/2", "b"}[i%3], Payload: payloads[i%len(payloads)],
			QoS: byte(i % 3), Retained: i%5 == 0, Duplicate: i%7 == 0, ReceivedAt: t0.Add(time.Duration(i) * time.Millisecond), ClientID: "s"})
	}
	for start := 0; start < n; start += 500 {
		if err := st.Insert(context.Background(), msgs[start:min(start+500, n)]); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}
	return msgs
}

func fetch(t *testing.T, u, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", u, err)
	}
	return resp, body
}

func TestExportCSV(t *testing.T) {
	srv, st := newTestServer(t)
	msgs := exportRows(t, st, 2*exportBatch+17) // crosses batches
	resp, body := fetch(t, srv.URL+"/messages?topic=a/%2B", "text/csv")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8; header=present" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), "messages.csv") {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	records, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil {
		t.Fatalf("parse the CSV: %v", err)
	}
	if strings.Join(records[0], ",") != "id,topic,payload,encoding,qos,retained,duplicate,received_at" {
		t.Errorf("header %q", records[0])
	}
	var want []store.Message
	for _, m := range msgs {
		if m.Topic != "b" {
			want = append(want, m)
		}
	}
	rows := records[1:]
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(rows), len(want))
	}
	for i, r := range rows {
		m := want[i] // oldest first
		payload := []byte(r[2])
		if r[3] == "base64" {
			if payload, err = base64.StdEncoding.DecodeString(r[2]); err != nil {
				t.Fatalf("row %d: payload %q: %v", i, r[2], err)
			}
		} else if r[3] != "text" {
			t.Fatalf("row %d: encoding %q", i, r[3])
		}
		at, err := time.Parse(time.RFC3339Nano, r[7])
		if r[0] != strconv.FormatInt(m.ID, 10) || r[1] != m.Topic || string(payload) != string(m.Payload) ||
			r[4] != strconv.Itoa(int(m.QoS)) || r[5] != strconv.FormatBool(m.Retained) || r[6] != strconv.FormatBool(m.Duplicate) ||
			err != nil || !at.Equal(m.ReceivedAt) {
			t.Fatalf("row %d: %q, want message %d %s %q qos %d retained %v duplicate %v at %v", i, r, m.ID, m.Topic, m.Payload,
				m.QoS, m.Retained, m.Duplicate, m.ReceivedAt)
		}
	}

	// With since and until, and as a link would ask (format=csv).
	resp, body = fetch(t, srv.URL+"/messages?topic=b&since=2026-11-24T10:00:00.5Z&until=2026-11-24T10:00:01Z&format=csv", "")
	records, err = csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if resp.StatusCode != 200 || err != nil {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	n := 0
	for _, m := range msgs {
		if m.Topic == "b" && !m.ReceivedAt.Before(time.Date(2026, 11, 24, 10, 0, 0, 500000000, time.UTC)) &&
			m.ReceivedAt.Before(time.Date(2026, 11, 24, 10, 0, 1, 0, time.UTC)) {
			n++
		}
	}
	if len(records)-1 != n || n == 0 {
		t.Errorf("since and until: %d rows, want %d", len(records)-1, n)
	}

	// Nothing matches: the header alone.
	_, body = fetch(t, srv.URL+"/messages?topic=nothing", "text/csv")
	if string(body) != "id,topic,payload,encoding,qos,retained,duplicate,received_at\r\n" {
		t.Errorf("empty export %q", body)
	}
}

func TestExportNDJSON(t *testing.T) {
	srv, st := newTestServer(t)
	msgs := exportRows(t, st, exportBatch+3)
	resp, body := fetch(t, srv.URL+"/messages", "application/x-ndjson")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	i := 0
	for ; sc.Scan(); i++ {
		var got Message
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
			t.Fatalf("line %d %q: %v", i, sc.Text(), err)
		}
		want := NewMessage(msgs[i])
		if got != want {
			t.Fatalf("line %d: %+v, want %+v", i, got, want)
		}
	}
	if i != len(msgs) {
		t.Errorf("%d lines, want %d", i, len(msgs))
	}
}

func TestExportRefusesPaging(t *testing.T) {
	srv, _ := newTestServer(t)
	for _, q := range []string{"limit=10", "before=5", "format=xml", "topic=%23%2Fa"} {
		resp, body := fetch(t, srv.URL+"/messages?"+q, "text/csv")
		if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: status %d %s, want a 400 problem", q, resp.StatusCode, body)
		}
	}
	// The JSON pages keep taking them.
	if resp, body := fetch(t, srv.URL+"/messages?limit=10&before=5", "application/json"); resp.StatusCode != 200 {
		t.Errorf("JSON page: status %d %s", resp.StatusCode, body)
	}
}

// Rows stored while an export runs are left for the next one: it ends.
func TestExportEndsAtTheNewestRowWhenItStarted(t *testing.T) {
	srv, st := newTestServer(t)
	exportRows(t, st, exportBatch+1)
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/messages?format=ndjson", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The first batch is read before the answer starts; store more now.
	exportRows(t, st, 10)
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(body), "\n"); n != exportBatch+1 {
		t.Errorf("%d rows, want the %d stored before the export began", n, exportBatch+1)
	}
}
