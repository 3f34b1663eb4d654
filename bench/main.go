// Command bench measures the publisher and the subscriber against
// baselines taken in the same run on the same machine: it builds both
// services, starts a Mosquitto of its own on a free loopback port, runs
// each scenario of the performance issue, prints one table and writes it
// as JSON under results/. Run it from bench/ with `go run .` (`make bench`).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "baseline-http" {
		return serveBaseline(ctx, stdout)
	}
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	return runBench(ctx, cfg, stdout)
}
