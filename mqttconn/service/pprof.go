package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"
)

// newPprofServer serves net/http/pprof for PPROF_ADDR, on its own listener
// so that profiles are never reachable on the API's port. Blocking and mutex
// events are sampled only while it is on.
func newPprofServer(log *slog.Logger) *http.Server {
	runtime.SetMutexProfileFraction(100)
	// Waits under a millisecond are sampled in proportion to their length;
	// a finer rate costs a few per cent of CPU under load.
	runtime.SetBlockProfileRate(int(time.Millisecond))
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// listenPprof listens on PPROF_ADDR and returns the task that serves
// net/http/pprof there until the service stops; a profile being taken is
// then cut off: it is no request of the API's.
func listenPprof(log *slog.Logger, addr string) (Task, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on PPROF_ADDR %s: %w", addr, err)
	}
	srv := newPprofServer(log)
	log.Info("pprof listening", "addr", ln.Addr().String())
	return func(ctx context.Context) error {
		stop := context.AfterFunc(ctx, func() {
			if err := srv.Close(); err != nil {
				log.Warn("close pprof server", "err", err)
			}
		})
		defer stop()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve pprof: %w", err)
		}
		return nil
	}, nil
}
