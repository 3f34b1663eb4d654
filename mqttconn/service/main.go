package service

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Main is the whole of a service's main function: it calls run with a
// context that SIGINT and SIGTERM end, the program's arguments and its
// output, and on failure prints "<name>: <error>" to stderr and exits with
// ExitCode's status. run is the whole service, so that a test can start it
// in-process.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(ExitCode(err))
	}
}
