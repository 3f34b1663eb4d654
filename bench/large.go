package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// largePrefix is where the large scenario's queue is published.
const largePrefix = "bench/large"

// largeSources are the files that decide the bytes of the large store: the
// subscriber's SQLite schema and the program that fills it. The cached
// store is keyed by their content; the insert path behind them is held to
// one behaviour by the shared store tests, so a faster insert makes the
// same file.
var largeSources = []string{
	"subscriber/internal/sqlite/schema.go",
	"subscriber/internal/cmd/fillstore/main.go",
}

// largeStore returns the path of a cached store of rows rows, made by
// fillstore through the subscriber's own insert path, building it first
// if the cache has none for these sources.
func (b *bench) largeStore(ctx context.Context, rows int) (string, bool, error) {
	h := sha256.New()
	for _, f := range largeSources {
		data, err := os.ReadFile(filepath.Join(b.cfg.Repo, f))
		if err != nil {
			return "", false, fmt.Errorf("key of the large store: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", false, fmt.Errorf("cache directory: %w", err)
	}
	dir := filepath.Join(cache, "mqtt-stack-bench")
	name := fmt.Sprintf("large-%d-%s.db", rows, hex.EncodeToString(h.Sum(nil))[:12])
	path := filepath.Join(dir, name)
	if _, err := os.Stat(path); err == nil {
		return path, true, nil
	}
	// Stores of other sources are stale: they go before a new one is made.
	old, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("large-%d-*.db", rows)))
	for _, o := range old {
		if err := os.Remove(o); err != nil {
			return "", false, fmt.Errorf("remove stale %s: %w", o, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("cache directory: %w", err)
	}
	if err := needDisk(dir, int64(rows)*400); err != nil {
		return "", false, err
	}
	bin := filepath.Join(b.dir, "fillstore")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./internal/cmd/fillstore")
	cmd.Dir = filepath.Join(b.cfg.Repo, "subscriber")
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("build fillstore: %w: %s", err, lastLines(out, 10))
	}
	tmp := filepath.Join(b.dir, "large-building.db")
	cmd = exec.CommandContext(ctx, bin, "-db", tmp, "-rows", strconv.Itoa(rows))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("fillstore: %w: %s", err, lastLines(out, 10))
	}
	if err := copyFile(tmp, path+".part"); err != nil {
		return "", false, err
	}
	if err := errors.Join(os.Rename(path+".part", path), os.Remove(tmp)); err != nil {
		return "", false, fmt.Errorf("cache the large store: %w", err)
	}
	return path, false, nil
}

// needDisk fails unless the file system of dir has n bytes free.
func needDisk(dir string, n int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", dir, err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < n {
		return fmt.Errorf("%s has %d MiB free, the large store needs about %d", dir, free>>20, n>>20)
	}
	return nil
}

func copyFile(from, to string) (err error) {
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer func() { err = errors.Join(err, out.Close()) }()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy %s: %w", from, err)
	}
	return nil
}

// large: a store of -large-rows rows (ten million), built once through the
// store's own insert path and copied for the run; GET /messages a/+/c over
// it, and the ingest of one queue of QoS 1 messages into it against the
// same into an empty store, drained in turn.
func (b *bench) large(ctx context.Context) error {
	rows := b.cfg.LargeRows
	t := time.Now()
	cached, hit, err := b.largeStore(ctx, rows)
	if err != nil {
		return err
	}
	how := "from the cache"
	if !hit {
		how = "built through the store's insert path"
	}
	fi, err := os.Stat(cached)
	if err != nil {
		return err
	}
	if err := needDisk(b.dir, fi.Size()+fi.Size()/4); err != nil {
		return err
	}
	db := filepath.Join(b.dir, "large.db")
	if err := copyFile(cached, db); err != nil {
		return err
	}
	defer os.Remove(db)
	b.logf("store of %s rows (%d MiB) %s, copied in %s", thousands(int64(rows)), fi.Size()>>20, how, time.Since(t).Round(100*time.Millisecond))

	big, err := b.startSubscriber(ctx, "subscriber-large", db, "bench-large", largePrefix+"/#")
	if err != nil {
		return err
	}
	stop := b.profile(big, "large-query")
	lat, err := queryLatency(ctx, big.URL(), b.cfg.QueryDuration, b.cfg.Queries)
	stop()
	if rss, err := big.PeakRSS(); err == nil {
		b.note("large: %s peak RSS %.1f MiB while queried", big.Name, rss/(1<<20))
	}
	b.stop(big)
	if err != nil {
		return err
	}
	b.logf("%d queries over %s rows: p50 %.2f ms, p99 %.2f ms", len(lat), thousands(int64(rows)), ms(lat.Percentile(0.5)), ms(lat.Percentile(0.99)))
	b.figure(figLarge50, ms(lat.Percentile(0.5)), nil)
	b.figure(figLarge99, ms(lat.Percentile(0.99)), nil)

	empty, err := b.startSubscriber(ctx, "subscriber-empty", filepath.Join(b.dir, "empty.db"), "bench-empty", largePrefix+"/#")
	if err != nil {
		return err
	}
	b.stop(empty)
	n := b.cfg.Ingest
	drain := func(p *Proc) (time.Duration, error) {
		start := time.Now()
		if err := p.Restart(ctx); err != nil {
			return 0, err
		}
		defer b.stop(p)
		stored, elapsed, _, err := waitStored(ctx, p, n, b.cfg.IngestLimit, start)
		if err != nil {
			return 0, err
		}
		if rss, err := p.PeakRSS(); err == nil {
			b.note("large: %s peak RSS %.1f MiB", p.Name, rss/(1<<20))
		}
		if stored < n {
			return 0, fmt.Errorf("%s stored %d of %d messages within %s", p.Name, stored, n, b.cfg.IngestLimit)
		}
		return elapsed, nil
	}
	// Each round drains one queue into each store, in turns: empty first,
	// then the large one first, and so on.
	var intoEmpty, intoLarge time.Duration
	for round := range b.cfg.IngestRounds {
		if err := fillQueue(ctx, b.broker.URL(), largePrefix, n, sample); err != nil {
			return err
		}
		order := []*Proc{empty, big}
		took := []*time.Duration{&intoEmpty, &intoLarge}
		if round%2 == 1 {
			order[0], order[1], took[0], took[1] = big, empty, &intoLarge, &intoEmpty
		}
		for i, p := range order {
			stop := b.profile(p, fmt.Sprintf("%s-%d", p.Name, round))
			d, err := drain(p)
			stop()
			if err != nil {
				return err
			}
			*took[i] += d
			b.logf("round %d: %-22s %9.0f msg/s", round+1, p.Name, rate(n, d))
		}
	}
	total := n * b.cfg.IngestRounds
	into, intoBig := rate(total, intoEmpty), rate(total, intoLarge)
	b.logf("%-22s %9.0f msg/s into an empty store, %.0f msg/s into %s rows", "subscriber", into, intoBig, thousands(int64(rows)))
	b.figure(figLargeIngest, intoBig, ptr(into))
	b.note("large: a store of %s rows over 1,000 topics and the last day, each with two values, made by fillstore through sqlite.Store.Insert (%s); "+
		"%d rounds of %d queued QoS 1 text messages drained into an empty store and into the large one, in turns", thousands(int64(rows)), how, b.cfg.IngestRounds, n)
	return nil
}
