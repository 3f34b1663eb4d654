package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/api"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/backfill"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/config"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/ingest"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/metrics"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/postgres"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/retention"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/sqlite"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

// usageError is a bad command line: exit status 2, like a config error.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 1 {
		switch args[1] {
		case "healthcheck":
			return healthcheck(ctx)
		default:
			return &usageError{fmt.Sprintf("unknown command %q (the only command is healthcheck)", args[1])}
		}
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogFormat, cfg.Level, stdout)

	st, err := openStore(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close store", "err", err)
		}
		log.Info("store closed")
	}()

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	hub := stream.NewHub(stream.DefaultBuffer)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "subscriber_stream_clients", Help: "Open GET /messages/stream connections."},
			func() float64 { return float64(hub.Clients()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "subscriber_stream_dropped_total", Help: "Stream clients ended for falling too far behind."},
			func() float64 { return float64(hub.Dropped()) }),
	)
	// One goroutine feeds the hub, in id order, with rows readers of the
	// store can already see. SQLite has one writer: this process's, which
	// hands over each commit. A PostgreSQL store may have several (a share
	// group), so a follower of the table feeds the hub with every member's
	// rows, this one's included, and the writer hands over nothing.
	committed, follow := hub.Publish, func(context.Context) {}
	if pg, ok := st.(*postgres.Store); ok {
		// Read before HTTP serves: a stream that subscribes and then
		// replays from the store must find every later row on the hub.
		after, err := pg.LastID(ctx)
		if err != nil {
			return err
		}
		committed = nil
		follow = func(ctx context.Context) { pg.Follow(ctx, log, after, hub.Publish) }
	}
	ing := ingest.New(log, ingest.Config{
		Brokers: cfg.Brokers, ClientID: cfg.ClientID, Username: cfg.Username, Password: cfg.Password,
		TLS: cfg.TLS, QoS: byte(cfg.QoS), Filters: cfg.Topics, ShareGroup: cfg.ShareGroup,
		StatusTopic: cfg.StatusTopic, LogPayloadBytes: cfg.LogPayloadBytes,
		Committed: committed,
	}, st, m)

	// Values of messages stored before the store kept values, extracted
	// beside ingest.
	fill := backfill.New(log, st)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "subscriber_values_backfill_remaining", Help: "Messages stored before values were kept whose values are still to be extracted (-1 until the first batch)."},
			func() float64 { return float64(fill.Left()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "subscriber_values_backfilled_total", Help: "Messages stored before values were kept whose values have been extracted."},
			func() float64 { return float64(fill.Read()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "subscriber_values_backfill_errors_total", Help: "Failed batches of the extraction of earlier messages' values (each is retried)."},
			func() float64 { return float64(fill.Errors()) }),
	)

	reads := readlimit.New(readlimit.Concurrent, readlimit.Wait)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "subscriber_reads_in_flight", Help: "Reads of stored messages (pages of GET /messages, stream replay batches) running now."},
			func() float64 { return float64(reads.InUse()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "subscriber_reads_rejected_total", Help: "Reads of stored messages refused with 503 after waiting for a turn."},
			func() float64 { return float64(reads.Rejected()) }),
	)
	handler := api.NewServer(log, st, []api.Check{
		{Name: "mqtt", Func: func(context.Context) error { return ing.Ready() }},
		{Name: "store", Func: st.Ping},
	}, reg, hub, api.Options{PublisherURL: cfg.PublisherURL, APIToken: cfg.APIToken, Gate: reads})
	srv := api.Server(handler, log)
	// Open event streams end at shutdown instead of holding it up.
	srv.RegisterOnShutdown(hub.Close)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	// Logged whatever LOG_LEVEL says: scripts and tests read the bound
	// address from it (HTTP_ADDR may end in :0).
	newLogger(cfg.LogFormat, min(cfg.Level, slog.LevelInfo), stdout).
		Info("http server listening", "addr", ln.Addr().String())

	// Ingest outlives ctx: at a signal HTTP stops first, then ingest
	// commits what is queued before it disconnects.
	ingestCtx, stopIngest := context.WithCancel(context.WithoutCancel(ctx))
	defer stopIngest()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve http: %w", err)
		}
	})
	ingestDone := make(chan struct{})
	wg.Go(func() {
		defer close(ingestDone)
		if err := ing.Run(ingestCtx); err != nil {
			errc <- err
		}
	})
	wg.Go(func() { follow(ingestCtx) })
	wg.Go(func() { fill.Run(ingestCtx) })
	if cfg.Retention > 0 {
		wg.Go(func() { retention.Run(ingestCtx, log, st, cfg.Retention, m) })
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("stopping", "err", runErr)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	stopIngest()
	wg.Wait()
	close(errc)
	for err := range errc {
		if runErr == nil {
			runErr = err
		}
	}
	return runErr
}

func newLogger(format string, level slog.Level, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
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

// healthcheck GETs /healthz on the port of HTTP_ADDR, for images without a
// shell or curl.
func healthcheck(ctx context.Context) error {
	addr := os.Getenv("HTTP_ADDR")
	if addr == "" {
		addr = ":8081"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return &config.Error{Var: "HTTP_ADDR", Err: fmt.Errorf("%q: want host:port", addr)}
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s", resp.Status)
	}
	return nil
}
