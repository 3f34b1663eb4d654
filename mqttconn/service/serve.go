package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
)

// A Task is a part of a service that runs beside its HTTP server until its
// context ends, and then stops: the subscriber's ingest, the publisher's
// broker client.
type Task func(ctx context.Context) error

// Serve runs a service until ctx ends or a part of it fails: the tasks,
// and srv on HTTP_ADDR. Then it stops them in order: HTTP first, waiting
// up to SHUTDOWN_TIMEOUT for the requests in flight, then the tasks, so
// that they finish what HTTP handed them. It returns the first failure.
// stdout is where the listening line goes (see Listen). With PPROF_ADDR
// set, net/http/pprof is served there too, as one more task.
func Serve(ctx context.Context, stdout io.Writer, log *slog.Logger, c Common, srv *http.Server, tasks ...Task) error {
	// The tasks outlive ctx: they stop after HTTP, whenever ctx ends.
	taskCtx, stopTasks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTasks()
	var err error
	if c.PprofAddr != "" {
		var pprof Task
		if pprof, err = listenPprof(log, c.PprofAddr); err == nil {
			tasks = append(tasks, pprof)
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(tasks)+1)
	for _, task := range tasks {
		wg.Go(func() {
			if err := task(taskCtx); err != nil {
				errc <- err
			}
		})
	}
	if err == nil {
		// Else the tasks are started only to be stopped: each of them
		// owns what it must close (the publisher's broker client).
		err = serveHTTP(ctx, stdout, log, c, srv, &wg, errc)
	}
	stopTasks()
	wg.Wait()
	close(errc)
	for e := range errc {
		err = errors.Join(err, e)
	}
	if err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// serveHTTP serves srv until ctx ends or a failure arrives on errc, and
// shuts it down.
func serveHTTP(ctx context.Context, stdout io.Writer, log *slog.Logger, c Common, srv *http.Server, wg *sync.WaitGroup, errc chan error) error {
	ln, err := c.Listen(stdout)
	if err != nil {
		return err
	}
	wg.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve http: %w", err)
		}
	})
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", c.ShutdownTimeout)
	case err = <-errc:
		log.Error("stopping", "err", err)
	}
	// A fresh context: ctx has ended.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.ShutdownTimeout)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		err = errors.Join(err, fmt.Errorf("shut down http server: %w", serr))
	}
	return err
}

// Listen listens on HTTP_ADDR and logs the address it got as "http server
// listening", on stdout whatever LOG_LEVEL says: scripts and tests read
// the address from that line (HTTP_ADDR may end in :0).
func (c Common) Listen(stdout io.Writer) (net.Listener, error) {
	ln, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", c.HTTPAddr, err)
	}
	newLogger(stdout, c.LogFormat, min(c.Level, slog.LevelInfo)).Info("http server listening", "addr", ln.Addr().String())
	return ln, nil
}
