package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	hundred := make(Latencies, 100)
	for i := range hundred {
		// Reversed, so that Percentile has to sort.
		hundred[i] = time.Duration(100-i) * time.Millisecond
	}
	tests := []struct {
		name string
		in   Latencies
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one sample p50", Latencies{7}, 0.5, 7},
		{"one sample p99", Latencies{7}, 0.99, 7},
		{"two samples p50 is the lower", Latencies{2, 1}, 0.5, 1},
		{"two samples p99 is the upper", Latencies{2, 1}, 0.99, 2},
		{"hundred p50", hundred, 0.50, 50 * time.Millisecond},
		{"hundred p99", hundred, 0.99, 99 * time.Millisecond},
		{"hundred p100", hundred, 1, 100 * time.Millisecond},
		{"q zero is the minimum", Latencies{3, 1, 2}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append(Latencies(nil), tt.in...)
			if got := in.Percentile(tt.q); got != tt.want {
				t.Errorf("Percentile(%v) of %v = %v, want %v", tt.q, tt.in, got, tt.want)
			}
		})
	}
}

func TestRate(t *testing.T) {
	tests := []struct {
		n    int
		d    time.Duration
		want float64
	}{
		{1000, time.Second, 1000},
		{1000, 500 * time.Millisecond, 2000},
		{5, 0, 0},
	}
	for _, tt := range tests {
		if got := rate(tt.n, tt.d); got != tt.want {
			t.Errorf("rate(%d, %v) = %v, want %v", tt.n, tt.d, got, tt.want)
		}
	}
}
