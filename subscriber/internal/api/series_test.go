package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/values"
)

func TestParseSeries(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 7, 30, 0, time.UTC)
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		raw       string
		want      store.SeriesQuery // MaxSeries is checked apart
		wantError string            // the parameter named in the error
	}{
		{"", store.SeriesQuery{Filter: "#", Since: now.Add(-24 * time.Hour), Until: now, Step: 5 * time.Minute}, ""},
		{"topic=living%2F%2B%2Ftemperature&field=value", store.SeriesQuery{Filter: "living/+/temperature", Field: "value", Since: now.Add(-24 * time.Hour), Until: now, Step: 5 * time.Minute}, ""},
		{"field=env.hum", store.SeriesQuery{Filter: "#", Field: "env.hum", Since: now.Add(-24 * time.Hour), Until: now, Step: 5 * time.Minute}, ""},
		{"since=2026-11-24T09:07:30Z", store.SeriesQuery{Filter: "#", Since: now.Add(-time.Hour), Until: now, Step: 15 * time.Second}, ""},
		{"until=2026-11-24T00:00:00Z", store.SeriesQuery{Filter: "#", Since: t0.Add(-24 * time.Hour), Until: t0, Step: 5 * time.Minute}, ""},
		{"since=2026-11-17T00:00:00Z&until=2026-11-24T00:00:00Z", store.SeriesQuery{Filter: "#", Since: t0.Add(-7 * 24 * time.Hour), Until: t0, Step: time.Hour}, ""},
		{"since=2026-11-24T00:00:00Z&until=2026-11-24T00:00:01Z", store.SeriesQuery{Filter: "#", Since: t0, Until: t0.Add(time.Second), Step: time.Second}, ""},
		{"since=2016-11-24T00:00:00Z&until=2026-11-24T00:00:00Z", store.SeriesQuery{Filter: "#", Since: t0.AddDate(-10, 0, 0), Until: t0, Step: 14 * 24 * time.Hour}, ""},
		{"since=1926-11-24T00:00:00Z&until=2026-11-24T00:00:00Z", store.SeriesQuery{Filter: "#", Since: t0.AddDate(-100, 0, 0), Until: t0, Step: MaxStep}, ""},
		{"step=30s", store.SeriesQuery{Filter: "#", Since: now.Add(-24 * time.Hour), Until: now, Step: 30 * time.Second}, ""},
		{"step=1m", store.SeriesQuery{Filter: "#", Since: now.Add(-24 * time.Hour), Until: now, Step: time.Minute}, ""},
		{"step=90s", store.SeriesQuery{Filter: "#", Since: now.Add(-24 * time.Hour), Until: now, Step: 90 * time.Second}, ""},
		{"step=1h30m", store.SeriesQuery{Filter: "#", Since: now.Add(-24 * time.Hour), Until: now, Step: 90 * time.Minute}, ""},
		{"step=1d", store.SeriesQuery{Filter: "#", Since: now.Add(-24 * time.Hour), Until: now, Step: 24 * time.Hour}, ""},
		{"step=31d", store.SeriesQuery{Filter: "#", Since: now.Add(-24 * time.Hour), Until: now, Step: MaxStep}, ""},
		{"step=1s&since=2026-11-24T00:00:00Z&until=2026-11-25T03:46:40Z", store.SeriesQuery{Filter: "#", Since: t0, Until: t0.Add(MaxPoints * time.Second), Step: time.Second}, ""},

		{"topic=", store.SeriesQuery{}, "topic"},
		{"topic=a%2F%23%2Fb", store.SeriesQuery{}, "topic"},
		{"topic=a&topic=b", store.SeriesQuery{}, "topic"},
		{"field=", store.SeriesQuery{}, "field"},
		{"field=a%00b", store.SeriesQuery{}, "field"},
		{"field=a%0Ab", store.SeriesQuery{}, "field"},
		{"field=%FF", store.SeriesQuery{}, "field"},
		{"field=" + strings.Repeat("f", values.MaxFieldBytes+1), store.SeriesQuery{}, "field"},
		{"field=a&field=b", store.SeriesQuery{}, "field"},
		{"since=yesterday", store.SeriesQuery{}, "since"},
		{"until=2026-11-24", store.SeriesQuery{}, "until"},
		{"since=2026-11-24T10:00:00Z&until=2026-11-24T10:00:00Z", store.SeriesQuery{}, "until"},
		{"since=2026-11-25T00:00:00Z", store.SeriesQuery{}, "since"},
		{"step=", store.SeriesQuery{}, "step"},
		{"step=0", store.SeriesQuery{}, "step"},
		{"step=0s", store.SeriesQuery{}, "step"},
		{"step=-1m", store.SeriesQuery{}, "step"},
		{"step=500ms", store.SeriesQuery{}, "step"},
		{"step=1.5s", store.SeriesQuery{}, "step"},
		{"step=32d", store.SeriesQuery{}, "step"},
		{"step=0d", store.SeriesQuery{}, "step"},
		{"step=1w", store.SeriesQuery{}, "step"},
		{"step=ten", store.SeriesQuery{}, "step"},
		{"step=1m&step=2m", store.SeriesQuery{}, "step"},
		{"step=1s&since=2026-11-24T00:00:00Z&until=2026-11-25T03:46:41Z", store.SeriesQuery{}, "step"},
		{"step=1s&since=2026-11-17T00:00:00Z", store.SeriesQuery{}, "step"},
	}
	for _, tt := range tests {
		v, err := url.ParseQuery(tt.raw)
		if err != nil {
			t.Fatalf("bad test query %q: %v", tt.raw, err)
		}
		got, err := parseSeries(v, now)
		if tt.wantError != "" {
			var pe *paramError
			if !errors.As(err, &pe) || pe.Param != tt.wantError {
				t.Errorf("parseSeries(%q) error = %v, want one about %s", tt.raw, err, tt.wantError)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseSeries(%q) error = %v", tt.raw, err)
			continue
		}
		w := tt.want
		if got.Filter != w.Filter || got.Field != w.Field || !got.Since.Equal(w.Since) || !got.Until.Equal(w.Until) || got.Step != w.Step {
			t.Errorf("parseSeries(%q) = %+v, want %+v", tt.raw, got.SeriesQuery, w)
		}
		if got.buckets*int64(got.MaxSeries) > MaxPoints || got.MaxSeries < 1 || got.MaxSeries > MaxSeries {
			t.Errorf("parseSeries(%q): %d buckets, MaxSeries %d: over %d points", tt.raw, got.buckets, got.MaxSeries, MaxPoints)
		}
	}
}

func TestFormatStep(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Second: "1s", 90 * time.Second: "90s", time.Minute: "1m", 90 * time.Minute: "90m",
		time.Hour: "1h", 36 * time.Hour: "36h", 24 * time.Hour: "1d", 7 * 24 * time.Hour: "7d",
	} {
		got := formatStep(d)
		if got != want {
			t.Errorf("formatStep(%v) = %q, want %q", d, got, want)
		}
		if back, err := parseStep(got); err != nil || back != d {
			t.Errorf("parseStep(%q) = %v, %v, want %v", got, back, err, d)
		}
	}
}

func FuzzParseSeries(f *testing.F) {
	for _, s := range []string{
		"", "topic=living/%2B/temperature&field=value&step=1m", "step=1d&since=2026-11-20T00:00:00Z",
		"step=1s&since=2020-01-01T00:00:00Z", "field=%00", "step=9223372036854775807ns", "step=99999999999d",
		"since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59Z",
	} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseSeries(v, now)
		if err != nil {
			if _, ok := err.(*paramError); !ok {
				t.Fatalf("parseSeries(%q) returned %T, want *paramError", raw, err)
			}
			return
		}
		if q.Step < MinStep || q.Step > MaxStep || q.Step%time.Second != 0 {
			t.Fatalf("parseSeries(%q): step %v", raw, q.Step)
		}
		if !q.Until.After(q.Since) || q.buckets < 1 || q.buckets*int64(q.MaxSeries) > MaxPoints || q.MaxSeries < 1 {
			t.Fatalf("parseSeries(%q): %v to %v, %d buckets, %d series", raw, q.Since, q.Until, q.buckets, q.MaxSeries)
		}
	})
}

type seriesPage struct {
	Topic  string  `json:"topic"`
	Field  *string `json:"field"`
	Since  string  `json:"since"`
	Until  string  `json:"until"`
	Step   string  `json:"step"`
	Series []struct {
		Topic  string `json:"topic"`
		Field  string `json:"field"`
		Points []struct {
			T     string  `json:"t"`
			Count int64   `json:"count"`
			Avg   float64 `json:"avg"`
			Min   float64 `json:"min"`
			Max   float64 `json:"max"`
			Last  float64 `json:"last"`
		} `json:"points"`
	} `json:"series"`
}

func TestSeriesEndpoint(t *testing.T) {
	srv, st := newTestServer(t)
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	var msgs []store.Message
	for i := range 6 {
		for r, room := range []string{"room1", "room2", "room3"} {
			msgs = append(msgs, store.Message{Topic: "living/" + room + "/temperature", Payload: fmt.Appendf(nil, "%d.5", 20+r+i%2),
				QoS: 1, ReceivedAt: t0.Add(time.Duration(i) * 30 * time.Second), ClientID: "s"})
		}
		msgs = append(msgs, store.Message{Topic: "devices/7", Payload: fmt.Appendf(nil, `{"temp": %d, "env": {"hum": 40}}`, i),
			QoS: 1, ReceivedAt: t0.Add(time.Duration(i) * 30 * time.Second), ClientID: "s"})
	}
	if err := st.Insert(context.Background(), msgs); err != nil {
		t.Fatalf("insert: %v", err)
	}
	resp, body := get(t, srv.URL+"/series?topic=living/%2B/temperature&since=2026-11-24T10:00:00Z&until=2026-11-24T10:03:00Z&step=1m")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var p seriesPage
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if p.Topic != "living/+/temperature" || p.Field != nil || p.Step != "1m" || p.Since != "2026-11-24T10:00:00.000000Z" || p.Until != "2026-11-24T10:03:00.000000Z" {
		t.Errorf("header fields %+v", p)
	}
	if len(p.Series) != 3 || p.Series[0].Topic != "living/room1/temperature" || p.Series[2].Topic != "living/room3/temperature" {
		t.Fatalf("series %s", body)
	}
	s := p.Series[1]
	if s.Field != "value" || len(s.Points) != 3 {
		t.Fatalf("room2: %+v", s)
	}
	pt := s.Points[0]
	if pt.T != "2026-11-24T10:00:00Z" || pt.Count != 2 || pt.Avg != 22 || pt.Min != 21.5 || pt.Max != 22.5 || pt.Last != 22.5 {
		t.Errorf("room2's first point %+v, want 2 readings 21.5 then 22.5 at 10:00", pt)
	}
	want := `{"t":"2026-11-24T10:00:00Z","count":2,"avg":22,"min":21.5,"max":22.5,"last":22.5}`
	if !strings.Contains(string(body), want) {
		t.Errorf("body %s\nwant it to hold %s", body, want)
	}

	_, body = get(t, srv.URL+"/series?topic=devices/%2B&field=env.hum&since=2026-11-24T10:00:00Z&until=2026-11-24T11:00:00Z&step=1h")
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if p.Field == nil || *p.Field != "env.hum" || len(p.Series) != 1 || p.Series[0].Points[0].Count != 6 || p.Series[0].Points[0].Avg != 40 {
		t.Errorf("a nested field: %s", body)
	}
	_, body = get(t, srv.URL+"/series?topic=nothing/%23&since=2026-11-24T10:00:00Z")
	if !strings.Contains(string(body), `"series":[]`) {
		t.Errorf("no series: %s", body)
	}

	for _, q := range []string{
		"topic=a%2F%23%2Fb", "step=0", "step=1w", "field=", "since=now", "until=2026-01-01T00:00:00Z&since=2026-02-01T00:00:00Z",
		"step=1s&since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
		// 4 series of 86400 points are more than MaxPoints.
		"topic=%23&step=1s&since=2026-11-24T00:00:00Z&until=2026-11-25T00:00:00Z",
	} {
		resp, body := get(t, srv.URL+"/series?"+q)
		var pr problem
		if err := json.Unmarshal(body, &pr); err != nil || resp.StatusCode != 400 ||
			resp.Header.Get("Content-Type") != "application/problem+json" || pr.Status != 400 || pr.Detail == "" {
			t.Errorf("%s: status %d, %s, want a 400 problem", q, resp.StatusCode, body)
		}
	}
}
