package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/api"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/broker"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/config"
)

// run is the whole service; it returns when ctx is cancelled and everything
// has shut down. Configuration comes from the environment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 1 {
		return service.Command(ctx, args[1:], ":8080")
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log := cfg.Logger(stdout)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mq, err := broker.New(log, broker.Options{
		Brokers: cfg.Brokers, ClientID: cfg.ClientID, Username: cfg.Username, Password: cfg.Password,
		TLS: cfg.TLS, StatusTopic: cfg.StatusTopic, PublishTimeout: cfg.PublishTimeout,
		MaxInflight: cfg.MaxInflight, Registerer: reg,
	})
	if err != nil {
		return err
	}
	handler, err := api.NewServer(log, cfg, mq, reg)
	if err != nil {
		return errors.Join(err, mq.Close(context.WithoutCancel(ctx)))
	}
	tasks := []service.Task{closeAtStop(log, cfg, mq)}
	return service.Serve(ctx, stdout, log, cfg.Common, newHTTPServer(log, cfg, handler), tasks...)
}

// closeAtStop holds the broker connection until the service stops, then
// publishes the offline status and disconnects. Every request has had its
// answer by then: a broker that cannot take the status is the broker's
// problem, not a failed stop.
func closeAtStop(log *slog.Logger, cfg config.Config, mq *broker.Client) service.Task {
	return func(ctx context.Context) error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		if err := mq.Close(sctx); err != nil {
			log.Warn("mqtt close", "err", err)
		}
		return nil
	}
}

func newHTTPServer(log *slog.Logger, cfg config.Config, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		// Long enough for the largest batch body over a slow link; slower
		// clients are cut off rather than holding a connection forever.
		ReadTimeout:    60 * time.Second,
		WriteTimeout:   cfg.HTTPWriteTimeout(),
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
