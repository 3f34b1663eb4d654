// Command fillstore fills a SQLite store with generated telemetry through
// the store's own insert path (sqlite.Store.Insert), so that a large store
// has exactly the rows, values, topic counts and indexes that the
// subscriber would have written. The bench builds it to make the store of
// ten million rows under its large-store figures; it is not part of the
// service.
//
// The rows are spread over the last day: 1,000 topics site/device/metric
// (10 sites a..j, 25 devices d00..d24, 4 metrics c..f) drawn at random
// with a fixed seed, each payload a JSON object with two numbers.
//
// The store is opened with a 64 MiB page cache, which changes no byte of
// what is stored: with SQLite's 2 MiB a million rows took 40 s here, the
// writer reading the leaves of the (topic, id) index back from the
// operating system; with 64 MiB, 19 s.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/sqlite"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fillstore: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fillstore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("db", "", "SQLite file to create (must not exist)")
	rows := fs.Int("rows", 10_000_000, "rows to insert")
	batch := fs.Int("batch", 20_000, "rows per transaction")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" || *rows < 1 || *batch < 1 {
		return errors.New("-db is required, -rows and -batch must be positive")
	}
	if _, err := os.Stat(*path); err == nil {
		return fmt.Errorf("%s exists", *path)
	}
	s, err := sqlite.Open(ctx, *path, sqlite.CacheSize(64<<10))
	if err != nil {
		return err
	}
	start := time.Now()
	err = fill(ctx, s, *rows, *batch, start)
	err = errors.Join(err, s.Close())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "inserted %d rows in %s\n", *rows, time.Since(start).Round(time.Millisecond))
	return nil
}

func fill(ctx context.Context, s store.Store, rows, batch int, now time.Time) error {
	r := rand.New(rand.NewPCG(1, 2))
	first := now.Add(-24 * time.Hour)
	every := 24 * time.Hour / time.Duration(rows)
	msgs := make([]store.Message, 0, batch)
	for done := 0; done < rows; {
		msgs = msgs[:0]
		for ; done < rows && len(msgs) < batch; done++ {
			msgs = append(msgs, store.Message{
				Topic:      fmt.Sprintf("%c/d%02d/%c", 'a'+r.IntN(10), r.IntN(25), 'c'+r.IntN(4)),
				Payload:    fmt.Appendf(nil, `{"temp":%d.%d,"hum":%d}`, 15+done%11, done%10, 30+done%41),
				QoS:        1,
				ReceivedAt: first.Add(time.Duration(done) * every),
				ClientID:   "bench-fill",
				PacketID:   uint16(done%65535 + 1),
			})
		}
		if err := s.Insert(ctx, msgs); err != nil {
			return fmt.Errorf("insert rows up to %d: %w", done, err)
		}
	}
	return nil
}
