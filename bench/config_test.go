package main

import (
	"io"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantKind string
		wantHTTP time.Duration
		wantIngest,
		wantRows int
	}{
		{"defaults are the issue's", []string{"-repo", "/x"}, kindFull, 10 * time.Second, 200_000, 1_000_000},
		{"quick scales down", []string{"-repo", "/x", "-quick"}, kindQuick, 3 * time.Second, 20_000, 100_000},
		{"an explicit flag wins over quick", []string{"-repo", "/x", "-quick", "-ingest", "5000"}, kindQuick, 3 * time.Second, 5000, 100_000},
		{"only some scenarios", []string{"-repo", "/x", "-only", "http,query"}, kindPartial, 10 * time.Second, 200_000, 1_000_000},
		{"changed counts are not the issue's run", []string{"-repo", "/x", "-rows", "5000"}, kindPartial, 10 * time.Second, 200_000, 5000},
		{"where results go changes nothing measured", []string{"-repo", "/x", "-results", "/tmp/r", "-keep"}, kindFull, 10 * time.Second, 200_000, 1_000_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, io.Discard)
			if err != nil {
				t.Fatalf("parseConfig(%q): %v", tt.args, err)
			}
			if got := c.Kind(); got != tt.wantKind {
				t.Errorf("Kind() = %q, want %q", got, tt.wantKind)
			}
			if c.HTTPDuration != tt.wantHTTP || c.Ingest != tt.wantIngest || c.Rows != tt.wantRows {
				t.Errorf("http %s, ingest %d, rows %d; want %s, %d, %d",
					c.HTTPDuration, c.Ingest, c.Rows, tt.wantHTTP, tt.wantIngest, tt.wantRows)
			}
		})
	}
}

func TestParseConfigRefuses(t *testing.T) {
	for _, args := range [][]string{
		{"-repo", "/x", "-only", "nope"},
		{"-repo", "/x", "-ingest", "10", "-max-queued", "5"},
		{"-repo", "/x", "-batch-size", "1001"},
		{"-repo", "/x", "extra"},
		{"-repo", "/x", "-env", "NOEQUALS"},
	} {
		if _, err := parseConfig(args, io.Discard); err == nil {
			t.Errorf("parseConfig(%q) succeeded, want an error", args)
		}
	}
}

func TestListeningAddr(t *testing.T) {
	tests := []struct {
		log  string
		want string
	}{
		{`{"time":"x","level":"INFO","msg":"http server listening","addr":"127.0.0.1:4242"}` + "\n", "127.0.0.1:4242"},
		{"not json\n" + `{"msg":"connecting"}` + "\n" + `{"msg":"http server listening","addr":"127.0.0.1:1"}`, "127.0.0.1:1"},
		{`{"msg":"http server listening"}`, ""},
		{"time=x level=INFO msg=\"http server listening\" addr=127.0.0.1:1\n", ""},
	}
	for _, tt := range tests {
		if got := listeningAddr([]byte(tt.log)); got != tt.want {
			t.Errorf("listeningAddr(%q) = %q, want %q", tt.log, got, tt.want)
		}
	}
}
