package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
)

func TestRunConfigError(t *testing.T) {
	tests := []struct{ name, value, wantVar string }{
		{"MQTT_QOS", "3", "MQTT_QOS"},
		{"PUBLISH_TIMEOUT", "abc", "PUBLISH_TIMEOUT"},
		{"MQTT_BROKER", "http://x", "MQTT_BROKER"},
		{"LOG_FORMAT", "yaml", "LOG_FORMAT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tt.name, tt.value)
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{"publisher"}, &stdout, &stderr)
			var ce *service.Error
			if !errors.As(err, &ce) || ce.Var != tt.wantVar {
				t.Fatalf("run with %s=%s = %v, want a config error naming %s", tt.name, tt.value, err, tt.wantVar)
			}
			if !strings.Contains(err.Error(), tt.wantVar) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line naming %s", err, tt.wantVar)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer that run's logger and the test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The whole service in-process, with no broker to talk to: it serves,
// reports not ready, answers a publish with 503 at once, passes its own
// health check and stops when its context ends.
func TestRunWithoutBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close() // nothing listens here now: the broker is "down"
	t.Setenv("MQTT_BROKER", "tcp://"+deadAddr)
	t.Setenv("HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("LOG_FORMAT", "json")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"publisher"}, &stdout, &stderr) }()

	addr := waitListening(t, &stdout)

	get := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("/healthz"); got != 200 {
		t.Errorf("/healthz = %d, want 200", got)
	}
	if got := get("/readyz"); got != 503 {
		t.Errorf("/readyz = %d, want 503 without a broker", got)
	}
	resp, err := http.Post("http://"+addr+"/publish", "application/json", strings.NewReader(`{"topic":"a","message":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("publish without a broker = %d, want 503", resp.StatusCode)
	}
	t.Setenv("HTTP_ADDR", addr) // for the healthcheck command
	if err := run(t.Context(), []string{"publisher", "healthcheck"}, io.Discard, io.Discard); err != nil {
		t.Errorf("healthcheck of %s = %v, want nil", addr, err)
	}
	if err := run(t.Context(), []string{"publisher", "healthcheck", "ready"}, io.Discard, io.Discard); err == nil {
		t.Errorf("healthcheck ready of %s without a broker = nil, want an error", addr)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s of cancel")
	}
	if err := run(t.Context(), []string{"publisher", "healthcheck"}, io.Discard, io.Discard); err == nil {
		t.Errorf("healthcheck after stop = nil, want an error")
	}
}

// waitListening returns the addr of run's "http server listening" line.
func waitListening(t *testing.T, stdout *syncBuffer) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(stdout.String(), "\n") {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "http server listening" && l.Addr != "" {
				return l.Addr
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no \"http server listening\" line in\n%s", stdout.String())
	return ""
}

// Tools find the port in the listening line, so it is there whatever
// LOG_LEVEL hides; the rest of the level's filtering stays.
func TestRunListeningLineAtEveryLevel(t *testing.T) {
	for _, level := range []string{"debug", "info", "warn", "error"} {
		t.Run(level, func(t *testing.T) {
			t.Setenv("MQTT_BROKER", "tcp://127.0.0.1:1") // nothing listens there
			t.Setenv("HTTP_ADDR", "127.0.0.1:0")
			t.Setenv("LOG_FORMAT", "json")
			t.Setenv("LOG_LEVEL", level)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var stdout, stderr syncBuffer
			done := make(chan error, 1)
			go func() { done <- run(ctx, []string{"publisher"}, &stdout, &stderr) }()

			addr := waitListening(t, &stdout)
			if _, _, err := net.SplitHostPort(addr); err != nil {
				t.Errorf("listening addr %q: %v", addr, err)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run returned %v after cancel, want nil", err)
			}
			gotInfo := strings.Contains(stdout.String(), `"msg":"mqtt connecting"`)
			if wantInfo := level == "debug" || level == "info"; gotInfo != wantInfo {
				t.Errorf("LOG_LEVEL=%s: other INFO lines logged = %v, want %v", level, gotInfo, wantInfo)
			}
		})
	}
}

// PPROF_ADDR serves the profiles on a listener of its own, never on the
// API's port.
func TestRunPprof(t *testing.T) {
	t.Setenv("MQTT_BROKER", "tcp://127.0.0.1:1") // nothing listens there
	t.Setenv("HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("PPROF_ADDR", "127.0.0.1:0")
	t.Setenv("LOG_FORMAT", "json")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"publisher"}, &stdout, &stderr) }()
	api := waitListening(t, &stdout)

	var pprofAddr string
	for _, line := range strings.Split(stdout.String(), "\n") {
		var l struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "pprof listening" {
			pprofAddr = l.Addr
		}
	}
	if pprofAddr == "" {
		t.Fatalf("no \"pprof listening\" line in\n%s", stdout.String())
	}
	tests := []struct {
		url  string
		want int
	}{
		{"http://" + pprofAddr + "/debug/pprof/cmdline", http.StatusOK},
		{"http://" + pprofAddr + "/debug/pprof/heap", http.StatusOK},
		{"http://" + api + "/debug/pprof/cmdline", http.StatusNotFound},
	}
	for _, tt := range tests {
		resp, err := http.Get(tt.url)
		if err != nil {
			t.Fatalf("GET %s: %v", tt.url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET %s = %d, want %d", tt.url, resp.StatusCode, tt.want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run returned %v after cancel, want nil", err)
	}
}
