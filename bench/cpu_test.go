package main

import (
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{"plain", "1234 (publisher) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0", 3 * time.Second, false},
		{"name with spaces and parens", "7 (a b) c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0", 30 * time.Millisecond, false},
		{"truncated", "7 (x) R 1 2", 0, true},
		{"no name", "garbage", 0, true},
	}
	for _, tt := range tests {
		got, err := parseStatCPU(tt.stat)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%s: parseStatCPU = %v, %v; want %v, error %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCPUUsePer(t *testing.T) {
	c := newCPUUse()
	c.names = []string{"publisher", "mosquitto"}
	c.used = map[string]time.Duration{"publisher": 2 * time.Second, "mosquitto": time.Second}
	got := c.per(10000, "request")
	want := "CPU µs per request: publisher 200, mosquitto 100; total 300"
	if got != want {
		t.Errorf("per = %q, want %q", got, want)
	}
	if got := c.per(0, "request"); got != "nothing done" {
		t.Errorf("per(0) = %q, want %q", got, "nothing done")
	}
}
