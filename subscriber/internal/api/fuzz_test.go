package api

import (
	"net/url"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"", "topic=%23", "topic=a/%2B/c&limit=10&before=41",
		"since=2026-11-24T10:00:00Z&until=2026-11-24T11:00:00.5%2B01:00",
		"limit=1001", "before=-1", "topic=a/%23/b", "topic=%00", "limit=1&limit=2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseQuery(v)
		if err != nil {
			if _, ok := err.(*paramError); !ok {
				t.Fatalf("parseQuery(%q) returned %T, want *paramError", raw, err)
			}
			return
		}
		if q.Limit < 1 || q.Limit > MaxLimit {
			t.Fatalf("parseQuery(%q): limit %d out of range", raw, q.Limit)
		}
		if q.Before < 0 {
			t.Fatalf("parseQuery(%q): before %d", raw, q.Before)
		}
		if err := topic.ValidateFilter(q.Filter); err != nil {
			t.Fatalf("parseQuery(%q): accepted filter %q: %v", raw, q.Filter, err)
		}
		if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
			t.Fatalf("parseQuery(%q): until %v not after since %v", raw, q.Until, q.Since)
		}
	})
}
