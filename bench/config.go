package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// scenarios in the order they run.
var scenarios = []string{"http", "batch", "ingest", "peers", "e2e", "query", "large"}

type config struct {
	Repo    string
	Results string
	Perf    string
	Quick   bool
	Keep    bool
	Only    map[string]bool
	Env     map[string]string // added to both services' environment
	// Custom is set when a flag that changes what is measured was given:
	// such a run is not the and does not replace latest.json.
	Custom bool

	Conns         int
	Rounds        int
	Warmup        time.Duration
	HTTPDuration  time.Duration
	HTTPRequests  int
	BatchSize     int
	BatchDuration time.Duration
	BatchRequests int
	Ingest        int
	IngestLimit   time.Duration
	// IngestJSON makes the queued messages JSON objects with two numbers
	// (values to extract) instead of the short text.
	IngestJSON    bool
	E2ERate       int
	E2EDuration   time.Duration
	Rows          int
	QueryDuration time.Duration
	Queries       int
	MaxInflight   int
	MaxQueued     int
	// Postgres is a URL of the PostgreSQL server on which the run creates
	// (and drops) databases of its own; empty leaves PostgreSQL out.
	Postgres string
	// LargeRows is the size of the large store (built once per schema,
	// then copied for each run).
	LargeRows int
	// IngestRounds is how many times the peers and the large store's two
	// drains take turns, each round in the reverse order of the last.
	IngestRounds int
}

// quickValues replace the defaults under -quick, unless a flag is given
// explicitly: about one minute in all, enough to see that every scenario
// works, not to judge a figure.
var quickValues = map[string]string{
	"warmup":         "300ms",
	"http-duration":  "3s",
	"batch-duration": "3s",
	"ingest":         "20000",
	"ingest-limit":   "30s",
	"e2e-duration":   "5s",
	"rows":           "100000",
	"query-duration": "3s",
	"large-rows":     "200000",
	"ingest-rounds":  "1",
}

func parseConfig(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run . [flags]   (from bench/; `make bench` at the root)")
		fs.PrintDefaults()
	}
	only := fs.String("only", strings.Join(scenarios, ","), "scenarios to run, comma-separated")
	env := fs.String("env", "", "extra environment of both services, e.g. LOG_LEVEL=warn,FOO=1 (for experiments)")
	fs.StringVar(&c.Repo, "repo", "", "repository root (default: the directory above holding go.work)")
	fs.StringVar(&c.Results, "results", "results", "directory for the JSON results")
	fs.StringVar(&c.Perf, "perf", "", "if set, record `perf` profiles of the services into this directory")
	fs.BoolVar(&c.Quick, "quick", false, "a one-minute smoke run with smaller counts and durations")
	fs.BoolVar(&c.Keep, "keep", false, "keep the temporary directory (binaries, logs, databases)")
	fs.IntVar(&c.Conns, "conns", 64, "keep-alive HTTP connections of the load generator")
	fs.IntVar(&c.Rounds, "rounds", 4, "turns the publisher and its baseline take within each throughput measurement")
	fs.DurationVar(&c.Warmup, "warmup", time.Second, "unmeasured load before each throughput measurement")
	fs.DurationVar(&c.HTTPDuration, "http-duration", 10*time.Second, "duration of each single-publish measurement")
	fs.IntVar(&c.HTTPRequests, "http-requests", 2_000_000, "most requests of each single-publish measurement")
	fs.IntVar(&c.BatchSize, "batch-size", 100, "messages per batch request")
	fs.DurationVar(&c.BatchDuration, "batch-duration", 10*time.Second, "duration of each batch measurement")
	fs.IntVar(&c.BatchRequests, "batch-requests", 100_000, "most batch requests of each batch measurement")
	fs.IntVar(&c.Ingest, "ingest", 200_000, "QoS 1 messages queued for the offline subscriber")
	fs.DurationVar(&c.IngestLimit, "ingest-limit", 150*time.Second, "longest wait for the queue to drain")
	fs.BoolVar(&c.IngestJSON, "ingest-json", false, `queue JSON payloads with two numbers ({"seq":N,"value":21.5}) instead of text, to measure the extraction of values`)
	fs.IntVar(&c.E2ERate, "e2e-rate", 1000, "messages per second of the end-to-end run")
	fs.DurationVar(&c.E2EDuration, "e2e-duration", 30*time.Second, "duration of the end-to-end run")
	fs.IntVar(&c.Rows, "rows", 1_000_000, "stored rows under the queries, over 1,000 topics and the last day (plus 9,000 topics of one row)")
	fs.DurationVar(&c.QueryDuration, "query-duration", 15*time.Second, "duration of each query measurement (messages, series, topics)")
	fs.IntVar(&c.Queries, "queries", 20_000, "most queries of the query measurement")
	fs.IntVar(&c.MaxInflight, "max-inflight", 100, "Mosquitto max_inflight_messages (as the repository's mosquitto.conf)")
	fs.IntVar(&c.MaxQueued, "max-queued", 1_000_000, "Mosquitto max_queued_messages")
	fs.StringVar(&c.Postgres, "postgres", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"PostgreSQL server on which to create (and drop) the run's databases; empty: no PostgreSQL figures")
	fs.IntVar(&c.IngestRounds, "ingest-rounds", 2, "rounds of the peers' drains and of the large store's, each in the reverse order of the last")
	fs.IntVar(&c.LargeRows, "large-rows", 10_000_000, "rows of the large store (built through the store's insert path, cached by schema)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name := range set {
		switch name {
		case "repo", "results", "keep", "quick", "postgres":
		default:
			c.Custom = true
		}
	}
	if c.Quick {
		for name, v := range quickValues {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return c, fmt.Errorf("-quick: set %s: %w", name, err)
				}
			}
		}
	}
	c.Env = map[string]string{}
	for kv := range strings.SplitSeq(*env, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return c, fmt.Errorf("-env: %q is not KEY=VALUE", kv)
		}
		c.Env[k] = v
	}
	c.Only = map[string]bool{}
	for s := range strings.SplitSeq(*only, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		known := false
		for _, k := range scenarios {
			known = known || k == s
		}
		if !known {
			return c, fmt.Errorf("-only: unknown scenario %q (have %s)", s, strings.Join(scenarios, ", "))
		}
		c.Only[s] = true
	}
	switch {
	case c.Rounds < 1 || c.IngestRounds < 1:
		return c, errors.New("-rounds and -ingest-rounds must be at least 1")
	case c.Conns < 1 || c.BatchSize < 1 || c.BatchSize > 1000 || c.Ingest < 1 || c.E2ERate < 1 || c.Rows < 1000 || c.LargeRows < 1000:
		return c, errors.New("-conns, -ingest and -e2e-rate must be positive, -batch-size 1..1000, -rows and -large-rows at least 1000")
	case c.MaxQueued < c.Ingest:
		return c, fmt.Errorf("-max-queued %d is below -ingest %d: the broker would drop part of the queue", c.MaxQueued, c.Ingest)
	}
	if c.Repo == "" {
		root, err := findRepo()
		if err != nil {
			return c, err
		}
		c.Repo = root
	}
	return c, nil
}

// Kind is what the run's results are called.
func (c config) Kind() string {
	switch {
	case c.Quick:
		return kindQuick
	case c.Custom || len(c.Only) < len(scenarios):
		return kindPartial
	default:
		return kindFull
	}
}

// findRepo walks up from the working directory to the one holding go.work.
func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory; give -repo")
		}
		dir = parent
	}
}
