package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/api"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/backfill"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/config"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/ingest"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/logbuf"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/metrics"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/postgres"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/retention"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/sqlite"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

// run is the whole service; it returns when ctx is cancelled and everything
// has shut down. Configuration comes from the environment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 1 {
		return service.Command(ctx, args[1:], ":8081")
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	// Arrival lines are held back and written out at each commit, before
	// the acknowledgements; every other line goes out at once, after them.
	out := logbuf.New(stdout)
	log := cfg.Logger(out)

	st, err := openStore(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer closeStore(log, st)

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	hub := newHub(reg)
	committed, follow, err := feedHub(ctx, log, st, hub)
	if err != nil {
		return err
	}
	ing := ingest.New(log, ingest.Config{
		Brokers: cfg.Brokers, ClientID: cfg.ClientID, Username: cfg.Username, Password: cfg.Password,
		TLS: cfg.TLS, QoS: byte(cfg.QoS), Filters: cfg.Topics, ShareGroup: cfg.ShareGroup,
		StatusTopic: cfg.StatusTopic, LogPayloadBytes: cfg.LogPayloadBytes,
		Arrivals: cfg.Logger(out.Held()), FlushArrivals: out.Flush,
		Committed: committed,
	}, st, m)

	reads := newReadGate(reg)
	fill := newBackfill(log, st, reg)
	handler := api.NewServer(log, st, []api.Check{
		{Name: "mqtt", Func: func(context.Context) error { return ing.Ready() }},
		{Name: "store", Func: st.Ping},
	}, reg, hub, api.Options{PublisherURL: cfg.PublisherURL, APIToken: cfg.APIToken, Gate: reads})
	srv := api.Server(handler, log)
	// Open event streams end at shutdown instead of holding it up.
	srv.RegisterOnShutdown(hub.Close)

	// Ingest outlives HTTP: at a signal HTTP stops first, then ingest
	// commits what is queued before it disconnects.
	tasks := []service.Task{ing.Run, follow, func(ctx context.Context) error { fill.Run(ctx); return nil }}
	if cfg.Retention > 0 {
		tasks = append(tasks, func(ctx context.Context) error { retention.Run(ctx, log, st, cfg.Retention, m); return nil })
	}
	return service.Serve(ctx, stdout, log, cfg.Common, srv, tasks...)
}

// newHub is the fan-out of stored arrivals to the streams, with its metrics.
func newHub(reg prometheus.Registerer) *stream.Hub {
	hub := stream.NewHub(stream.DefaultBuffer)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "subscriber_stream_clients", Help: "Open GET /messages/stream connections."},
			func() float64 { return float64(hub.Clients()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "subscriber_stream_dropped_total", Help: "Stream clients ended for falling too far behind."},
			func() float64 { return float64(hub.Dropped()) }),
	)
	return hub
}

// feedHub decides who feeds the hub, in id order, with rows readers of the
// store can already see. SQLite has one writer: this process's, which
// hands over each commit (committed). A PostgreSQL store may have several
// (a share group), so a follower of the table (follow) feeds the hub with
// every member's rows, this one's included, and the writer hands over
// nothing.
func feedHub(ctx context.Context, log *slog.Logger, st store.Store, hub *stream.Hub) (committed func([]store.Message), follow service.Task, err error) {
	pg, ok := st.(*postgres.Store)
	if !ok {
		return hub.Publish, func(context.Context) error { return nil }, nil
	}
	// Read before HTTP serves: a stream that subscribes and then replays
	// from the store must find every later row on the hub.
	after, err := pg.LastID(ctx)
	if err != nil {
		return nil, nil, err
	}
	return nil, func(ctx context.Context) error {
		pg.Follow(ctx, log, after, hub.Publish, func() bool { return hub.Clients() > 0 })
		return nil
	}, nil
}

// newBackfill extracts, beside ingest, the values of messages stored
// before the store kept values, with its metrics.
func newBackfill(log *slog.Logger, st store.Store, reg prometheus.Registerer) *backfill.Backfill {
	fill := backfill.New(log, st)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "subscriber_values_backfill_remaining", Help: "Messages stored before values were kept whose values are still to be extracted (-1 until the first batch)."},
			func() float64 { return float64(fill.Left()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "subscriber_values_backfilled_total", Help: "Messages stored before values were kept whose values have been extracted."},
			func() float64 { return float64(fill.Read()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "subscriber_values_backfill_errors_total", Help: "Failed batches of the extraction of earlier messages' values (each is retried)."},
			func() float64 { return float64(fill.Errors()) }),
	)
	return fill
}

// newReadGate bounds the reads of stored messages running at once, with
// its metrics.
func newReadGate(reg prometheus.Registerer) *readlimit.Gate {
	reads := readlimit.New(readlimit.Concurrent, readlimit.Wait)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "subscriber_reads_in_flight", Help: "Reads of stored messages (pages of GET /messages, stream replay batches) running now."},
			func() float64 { return float64(reads.InUse()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "subscriber_reads_rejected_total", Help: "Reads of stored messages refused with 503 after waiting for a turn."},
			func() float64 { return float64(reads.Rejected()) }),
	)
	return reads
}

func closeStore(log *slog.Logger, st store.Store) {
	if err := st.Close(); err != nil {
		log.Error("close store", "err", err)
	}
	log.Info("store closed")
}

func openStore(ctx context.Context, db config.Database) (store.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch db.Driver {
	case "postgres":
		s, err := postgres.Open(ctx, db.URL)
		if err != nil {
			return nil, fmt.Errorf("open postgresql store: %w", err)
		}
		return s, nil
	default:
		s, err := sqlite.Open(ctx, db.Path)
		if err != nil {
			return nil, fmt.Errorf("open sqlite store: %w", err)
		}
		return s, nil
	}
}
