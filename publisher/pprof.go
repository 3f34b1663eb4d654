package main

import (
	"log/slog"
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
