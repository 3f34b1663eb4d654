package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	tests := []struct {
		name string
		fig  Figure
		want string
	}{
		{"ratio met", measured("a", "req/s", 70, ptr(100), Target{atLeastRatio, 0.7}), resultPass},
		{"ratio missed", measured("a", "req/s", 69, ptr(100), Target{atLeastRatio, 0.7}), resultFail},
		{"ratio without baseline", measured("a", "req/s", 69, nil, Target{atLeastRatio, 0.7}), resultError},
		{"ratio with zero baseline", measured("a", "req/s", 69, ptr(0), Target{atLeastRatio, 0.7}), resultError},
		{"under limit", measured("p99", "ms", 9.9, nil, Target{below, 10}), resultPass},
		{"at limit is a miss", measured("p99", "ms", 10, nil, Target{below, 10}), resultFail},
		{"no target informs", measured("p50", "ms", 3, nil, Target{}), resultInfo},
		{"not measured", failed("p50", "ms", Target{below, 5}, errors.New("boom")), resultError},
	}
	for _, tt := range tests {
		if got := tt.fig.Result; got != tt.want {
			t.Errorf("%s: result = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestTable(t *testing.T) {
	figs := []Figure{
		measured("HTTP publish QoS 0", "req/s", 12345.6, ptr(20000), Target{atLeastRatio, 0.7}),
		measured("end to end p99", "ms", 4.321, nil, Target{below, 10}),
		failed("ingest", "msg/s", Target{atLeastRatio, 0.7}, errors.New("no subscriber")),
	}
	got := Table(figs)
	want := strings.Join([]string{
		"| figure             | value        | baseline     | ratio | target      | result |",
		"| ------------------ | ------------ | ------------ | ----- | ----------- | ------ |",
		"| HTTP publish QoS 0 | 12,346 req/s | 20,000 req/s | 0.617 | ratio ≥ 0.7 | FAIL   |",
		"| end to end p99     | 4.32 ms      | —            | —     | < 10 ms     | pass   |",
		"| ingest             | —            | —            | —     | ratio ≥ 0.7 | error  |",
	}, "\n") + "\n"
	if got != want {
		t.Errorf("Table() =\n%s\nwant\n%s", got, want)
	}
}

func TestThousands(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"}, {999, "999"}, {1000, "1,000"}, {1234567, "1,234,567"}, {-1000, "-1,000"},
	}
	for _, tt := range tests {
		if got := thousands(tt.in); got != tt.want {
			t.Errorf("thousands(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestReportWrite(t *testing.T) {
	dir := t.TempDir()
	r := Report{Date: "2026-11-24", Started: time.Date(2026, 11, 24, 22, 56, 31, 0, time.UTC), Kind: kindFull,
		Figures: []Figure{measured("x", "ms", 1, nil, Target{})}}
	paths, err := r.Write(dir)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	var got []string
	for _, p := range paths {
		got = append(got, filepath.Base(p))
	}
	if want := []string{"2026-11-24-2256.json", "latest.json"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("wrote %v, want %v", got, want)
	}
	b, err := os.ReadFile(filepath.Join(dir, "latest.json"))
	if err != nil {
		t.Fatalf("read latest.json: %v", err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("decode latest.json: %v", err)
	}
	if len(back.Figures) != 1 || back.Figures[0].Name != "x" {
		t.Errorf("latest.json figures = %+v, want one named x", back.Figures)
	}

	r.Kind = kindQuick
	paths, err = r.Write(dir)
	if err != nil {
		t.Fatalf("Write quick: %v", err)
	}
	if len(paths) != 1 || filepath.Base(paths[0]) != "quick.json" {
		t.Errorf("quick run wrote %v, want only quick.json", paths)
	}
}
