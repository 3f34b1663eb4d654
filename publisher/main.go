// Command publisher turns HTTP requests into MQTT publications.
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
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telemetry-stack/mqtt-stack/publisher/internal/api"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/broker"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "publisher:", err)
		var cfgErr *config.Error
		if errors.As(err, &cfgErr) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run is the whole service; it returns when ctx is cancelled and everything
// has shut down. Configuration comes from the environment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := config.Load()
	if err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	if len(args) > 1 {
		switch args[1] {
		case "healthcheck":
			return healthcheck(ctx, cfg.HTTPAddr)
		default:
			return fmt.Errorf("unknown command %q (the only one is healthcheck)", args[1])
		}
	}
	log := newLogger(stdout, cfg.LogFormat, logLevel(cfg.LogLevel))

	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return fmt.Errorf("register go metrics: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return fmt.Errorf("register process metrics: %w", err)
	}

	mq, err := broker.New(log, broker.Options{
		Brokers:        cfg.Brokers,
		ClientID:       cfg.ClientID,
		Username:       cfg.Username,
		Password:       cfg.Password,
		TLS:            cfg.TLS,
		StatusTopic:    cfg.StatusTopic,
		PublishTimeout: cfg.PublishTimeout,
		MaxInflight:    cfg.MaxInflight,
		Registerer:     reg,
	})
	if err != nil {
		return err
	}
	// A fresh context for stopping: ctx may be cancelled already.
	stopCtx := context.WithoutCancel(ctx)
	handler, err := api.NewServer(log, cfg, mq, reg)
	if err != nil {
		return errors.Join(err, mq.Close(stopCtx))
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return errors.Join(fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err), mq.Close(stopCtx))
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		// Long enough for the largest batch body over a slow link; slower
		// clients are cut off rather than holding a connection forever.
		ReadTimeout:    60 * time.Second,
		WriteTimeout:   cfg.HTTPWriteTimeout(),
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Logged whatever LOG_LEVEL says: scripts and tests read the bound
	// address from it (HTTP_ADDR may end in :0).
	newLogger(stdout, cfg.LogFormat, min(logLevel(cfg.LogLevel), slog.LevelInfo)).
		Info("http server listening", "addr", ln.Addr().String())

	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	var pprofSrv *http.Server
	if cfg.PprofAddr != "" {
		pln, err := net.Listen("tcp", cfg.PprofAddr)
		if err != nil {
			return errors.Join(fmt.Errorf("listen on PPROF_ADDR %s: %w", cfg.PprofAddr, err),
				srv.Close(), mq.Close(stopCtx))
		}
		pprofSrv = newPprofServer(log)
		log.Info("pprof listening", "addr", pln.Addr().String())
		go func() { serveErr <- pprofSrv.Serve(pln) }()
	}

	select {
	case err = <-serveErr:
		err = fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	}

	sctx, cancel := context.WithTimeout(stopCtx, cfg.ShutdownTimeout)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		err = errors.Join(err, fmt.Errorf("shut down http server: %w", serr))
	}
	if pprofSrv != nil {
		// A profile being taken is cut off: it is no request of the API's.
		if perr := pprofSrv.Close(); perr != nil {
			err = errors.Join(err, fmt.Errorf("close pprof server: %w", perr))
		}
	}
	if cerr := mq.Close(sctx); cerr != nil {
		// Every request has had its answer by now; a broker that cannot
		// take the offline status is the broker's problem, not a failed stop.
		log.Warn("mqtt close", "error", cerr)
	}
	if err != nil {
		log.Error("stopped with error", "error", err)
		return err
	}
	log.Info("stopped")
	return nil
}

// logLevel is LOG_LEVEL as a slog level.
func logLevel(name string) slog.Level {
	var level slog.Level
	// Config validated the name; UnmarshalText cannot fail on it.
	if err := level.UnmarshalText([]byte(name)); err != nil {
		level = slog.LevelInfo
	}
	return level
}

func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
