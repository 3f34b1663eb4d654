package main

import (
	"math"
	"testing"
)

func TestMetricSum(t *testing.T) {
	const text = `# HELP subscriber_messages_stored_total Messages committed to the store.
# TYPE subscriber_messages_stored_total counter
subscriber_messages_stored_total{qos="0"} 5
subscriber_messages_stored_total{qos="1",topic="a{b}"} 1.2e+06
subscriber_messages_stored_total_extra 7
other_total 9
`
	tests := []struct {
		name   string
		text   string
		metric string
		want   float64
		wantOK bool
	}{
		{"labelled series add up", text, "subscriber_messages_stored_total", 1200005, true},
		{"longer name is another metric", text, "subscriber_messages_stored", 0, false},
		{"unlabelled", "other_total 9\n", "other_total", 9, true},
		{"one series by its labels", "h_bucket{le=\"0.004\"} 3\nh_bucket{le=\"0.008\"} 5\n", `h_bucket{le="0.008"}`, 5, true},
		{"absent", text, "missing_total", 0, false},
	}
	for _, tt := range tests {
		got, ok := metricSum([]byte(tt.text), tt.metric)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: metricSum(%q) = %v, %v; want %v, %v", tt.name, tt.metric, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestSeqOf(t *testing.T) {
	_, m := sample("bench/e2e", 1234)
	tests := []struct {
		in     string
		want   int
		wantOK bool
	}{
		{m, 1234, true},
		{"seq=7", 7, true},
		{"value=21.5", 0, false},
		{"seq=x value=1", 0, false},
	}
	for _, tt := range tests {
		got, ok := seqOf(tt.in)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("seqOf(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestCommitStatsSince(t *testing.T) {
	tests := []struct {
		name          string
		before, after commitStats
		want          string
	}{
		{"none", commitStats{}, commitStats{}, "no commits"},
		{"delta",
			commitStats{commits: 10, seconds: 1, messages: 100, slow: 1, buckets: []bucket{{0.004, 9}, {0.008, 9}, {0.016, 10}, {math.Inf(1), 10}}},
			commitStats{commits: 20, seconds: 1.05, messages: 1100, slow: 3, buckets: []bucket{{0.004, 15}, {0.008, 17}, {0.016, 19}, {math.Inf(1), 20}}},
			"10 commits, 100.0 messages and 5.00 ms each on average, 2 over 0.008 s, the longest under +Inf s (subscriber's own histograms)"},
		{"all fast",
			commitStats{},
			commitStats{commits: 4, seconds: 0.004, messages: 4, buckets: []bucket{{0.0005, 1}, {0.001, 4}, {0.002, 4}, {math.Inf(1), 4}}},
			"4 commits, 1.0 messages and 1.00 ms each on average, 0 over 0.008 s, the longest under 0.001 s (subscriber's own histograms)"},
	}
	for _, tt := range tests {
		if got := tt.after.since(tt.before); got != tt.want {
			t.Errorf("%s: since = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	text := `# TYPE h histogram
h_bucket{le="0.001"} 3
h_bucket{le="0.002"} 5
h_bucket{le="+Inf"} 6
h_sum 0.01
h_count 6
`
	got := histogramBuckets([]byte(text), "h")
	want := []bucket{{0.001, 3}, {0.002, 5}, {math.Inf(1), 6}}
	if len(got) != len(want) {
		t.Fatalf("histogramBuckets = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("bucket %d = %v, want %v", i, got[i], want[i])
		}
	}
}
