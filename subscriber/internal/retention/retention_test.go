package retention

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/metrics"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/sqlite"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

func TestSweepDeletesOnlyOldRowsInBatches(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer st.Close()
	now := time.Now()
	var msgs []store.Message
	for i := range 2*Batch + 10 {
		msgs = append(msgs, store.Message{Topic: "old", Payload: []byte("x"), ReceivedAt: now.Add(-2 * time.Hour), ClientID: "c", PacketID: uint16(i)})
	}
	for range 5 {
		msgs = append(msgs, store.Message{Topic: "new", Payload: []byte("y"), ReceivedAt: now, ClientID: "c"})
	}
	if err := st.Insert(ctx, msgs); err != nil {
		t.Fatalf("insert: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if n := Sweep(ctx, log, st, now.Add(-time.Hour), metrics.New(prometheus.NewRegistry())); n != 2*Batch+10 {
		t.Errorf("deleted %d, want %d", n, 2*Batch+10)
	}
	left, err := st.List(ctx, store.Query{Filter: "#", Limit: 100})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(left) != 5 || left[0].Topic != "new" {
		t.Errorf("left %d rows, want the 5 new ones", len(left))
	}
}

func TestInterval(t *testing.T) {
	tests := []struct{ age, want time.Duration }{
		{2 * time.Second, time.Second},
		{5 * time.Minute, 30 * time.Second},
		{168 * time.Hour, time.Minute},
	}
	for _, tt := range tests {
		if got := Interval(tt.age); got != tt.want {
			t.Errorf("Interval(%v) = %v, want %v", tt.age, got, tt.want)
		}
	}
}
