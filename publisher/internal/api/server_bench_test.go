package api

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/config"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// nopBroker acknowledges everything at once: the benchmarks below measure
// the HTTP side of a publish, not MQTT.
type nopBroker struct{}

func (nopBroker) Publish(context.Context, message.Message) error { return nil }
func (nopBroker) PublishAll(_ context.Context, msgs []message.Message) []error {
	return make([]error, len(msgs))
}
func (nopBroker) Connected() bool { return true }

// discardWriter is the cheapest http.ResponseWriter that still keeps headers.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }

// benchHandler runs the whole handler path (middleware, routing, decoding,
// answer) of POST path with the production logger at INFO, as the service
// runs by default, writing JSON lines to nowhere.
func benchHandler(b *testing.B, path string, bodies [][]byte) {
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := config.Config{Common: service.Common{QoS: 1}, MaxMessageBytes: 262144, MaxBatchBytes: 16 << 20}
	h, err := NewServer(log, cfg, nopBroker{}, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		body := bodies[i%len(bodies)]
		i++
		r, err := http.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = "127.0.0.1:40000"
		w := &discardWriter{h: make(http.Header)}
		h.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			b.Fatalf("status %d, want 200", w.status)
		}
	}
}

// The bodies are those of the bench harness: a topic out of 100 and a
// short reading.
func BenchmarkHandlerPublish(b *testing.B) {
	bodies := make([][]byte, 100)
	for i := range bodies {
		bodies[i] = []byte(`{"topic":"bench/http/` + strconv.Itoa(i) + `","message":"seq=` + strconv.Itoa(i) + ` value=21.5","qos":0}`)
	}
	benchHandler(b, "/publish", bodies)
}

func BenchmarkHandlerPublishBatch(b *testing.B) {
	items := make([]string, 100)
	for i := range items {
		items[i] = `{"topic":"bench/batch/` + strconv.Itoa(i) + `","message":"seq=` + strconv.Itoa(i) + ` value=21.5","qos":1}`
	}
	benchHandler(b, "/publish/batch", [][]byte{[]byte(`{"messages":[` + strings.Join(items, ",") + `]}`)})
}
