package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The peer the issue compares the subscriber with, built from the Go
// module proxy with only the plugins it needs, once, into the user's cache.
const (
	telegrafVersion = "v1.37.2"
	telegrafTags    = "custom,inputs.mqtt_consumer,outputs.postgresql,outputs.sql,parsers.json"
	telegrafTable   = "mqtt_consumer" // the measurement, and so the table
)

// telegrafBinary returns the cached Telegraf, building it first if need be
// (about 90 s with the modules downloaded, several minutes without).
func telegrafBinary(ctx context.Context) (string, bool, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", false, fmt.Errorf("cache directory: %w", err)
	}
	dir := filepath.Join(cache, "mqtt-stack-bench", "telegraf-"+telegrafVersion)
	bin := filepath.Join(dir, "telegraf")
	if _, err := os.Stat(bin); err == nil {
		return bin, true, nil
	}
	cmd := exec.CommandContext(ctx, "go", "install", "-tags", telegrafTags,
		"github.com/influxdata/telegraf/cmd/telegraf@"+telegrafVersion)
	cmd.Dir = os.TempDir() // outside this repository's modules
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("build telegraf %s: %w: %s", telegrafVersion, err, lastLines(out, 5))
	}
	return bin, false, nil
}

// telegrafConfig is Telegraf resuming the persistent session clientID on
// filter, as tuned in the issue: it acknowledges a message only once its
// output has written it, flushes every 100 ms in batches of 1000, with up
// to 2000 messages unacknowledged. output is the [[outputs.*]] table.
func telegrafConfig(brokerURL, clientID, filter, output string) string {
	return fmt.Sprintf(`[agent]
  interval = "10s"
  flush_interval = "100ms"
  flush_jitter = "0s"
  metric_batch_size = 1000
  metric_buffer_limit = 100000
  omit_hostname = true
  quiet = true

[[inputs.mqtt_consumer]]
  servers = [%q]
  topics = [%q]
  qos = 1
  client_id = %q
  persistent_session = true
  max_undelivered_messages = 2000
  data_format = "json"

%s
`, brokerURL, filter, clientID, output)
}

// telegrafSQLite is outputs.sql into the SQLite file path, a transaction
// per batch. The busy timeout lets its commit wait the microseconds of the
// harness's count instead of failing: without it a commit that met the
// count's lock failed, and the driver's next batch then found the
// transaction still open ("cannot start a transaction within a
// transaction") and every batch after it failed.
func telegrafSQLite(path string) string {
	return fmt.Sprintf(`[[outputs.sql]]
  driver = "sqlite"
  data_source_name = %q
  batch_transactions = true
`, path+"?_pragma=busy_timeout(5000)")
}

// telegrafPostgres is outputs.postgresql (COPY) into the database at url.
func telegrafPostgres(url string) string {
	return fmt.Sprintf(`[[outputs.postgresql]]
  connection = %q
`, url)
}

// rowCounter reads how many rows Telegraf has written so far.
type rowCounter interface {
	Count(ctx context.Context) (int, error)
	Close() error
}

// sqliteRows counts by the largest rowid: an index lookup, where count(*)
// would scan the table while holding a lock Telegraf's next commit waits
// for (its file has a rollback journal).
type sqliteRows struct {
	db   *sql.DB
	last int
}

func openSQLiteRows(path string) (*sqliteRows, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(1000)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return &sqliteRows{db: db}, nil
}

func (r *sqliteRows) Count(ctx context.Context) (int, error) {
	var n sql.NullInt64
	err := r.db.QueryRowContext(ctx, "SELECT max(rowid) FROM "+telegrafTable).Scan(&n)
	switch {
	case err == nil:
		r.last = int(n.Int64)
	case strings.Contains(err.Error(), "no such table") || strings.Contains(err.Error(), "unable to open"):
		// nothing written yet
	case strings.Contains(err.Error(), "SQLITE_BUSY"):
		// Telegraf is committing: the count is read at the next poll.
	default:
		return 0, err
	}
	return r.last, nil
}

func (r *sqliteRows) Close() error { return r.db.Close() }

type postgresRows struct{ conn *pgx.Conn }

func openPostgresRows(ctx context.Context, url string) (*postgresRows, error) {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	return &postgresRows{c}, nil
}

func (r *postgresRows) Count(ctx context.Context) (int, error) {
	var n int
	err := r.conn.QueryRow(ctx, "SELECT count(*) FROM "+telegrafTable).Scan(&n)
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return 0, nil
	}
	return n, err
}

func (r *postgresRows) Close() error { return r.conn.Close(context.Background()) }

// runTelegraf starts Telegraf with config and waits until rows shows n
// more rows than before its start, or limit passes. It returns how long
// that took from its start to the poll that saw the n-th row, its peak
// RSS, the CPU time it used and, with pgURL, that of the PostgreSQL
// processes serving it.
func (b *bench) runTelegraf(ctx context.Context, bin, name, config string, rows rowCounter, n int, limit time.Duration, pgURL string) contender {
	c := contender{name: name}
	path := filepath.Join(b.dir, name+".conf")
	if c.err = os.WriteFile(path, []byte(config), 0o600); c.err != nil {
		return c
	}
	base, err := rows.Count(ctx)
	if err != nil {
		c.err = fmt.Errorf("%s: count rows: %w", name, err)
		return c
	}
	start := time.Now()
	p, err := startCommand(name, bin, []string{"--config", path}, b.dir)
	if err != nil {
		c.err = err
		return c
	}
	defer func() {
		if err := p.Stop(); err != nil {
			b.logf("%v", err)
		}
	}()
	var got int
	var at time.Time
	for deadline := start.Add(limit); time.Now().Before(deadline) && ctx.Err() == nil; {
		if p.Exited() {
			c.err = fmt.Errorf("%s exited; log: %s", name, p.LogTail())
			return c
		}
		total, err := rows.Count(ctx)
		if err != nil {
			c.err = fmt.Errorf("%s: count rows: %w", name, err)
			return c
		}
		if total-base > got {
			got, at = total-base, time.Now()
		}
		if got >= n {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.cpu, c.server = b.cpuUsed(ctx, p, pgURL)
	if c.rss, c.err = p.PeakRSS(); c.err != nil {
		return c
	}
	if got < n {
		c.err = errors.Join(ctx.Err(), fmt.Errorf("%s wrote %d of %d rows within %s; log: %s", name, got, n, limit, p.LogTail()))
		return c
	}
	c.msgs, c.elapsed = n, at.Sub(start)
	return c
}
