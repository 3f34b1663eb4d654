package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// peerPrefix is where the peers' queue is published.
const peerPrefix = "bench/peer"

// contender is one consumer of the peers' queue, over one round or added
// up over several.
type contender struct {
	name    string
	msgs    int           // stored
	elapsed time.Duration // to store them
	rss     float64       // peak bytes
	cpu     time.Duration // of its own process
	server  time.Duration // of the PostgreSQL processes serving it; -1 unknown
	err     error
}

func (c contender) rate() float64 { return rate(c.msgs, c.elapsed) }

// add counts round r of the same contender into c.
func (c *contender) add(r contender) {
	if c.err != nil {
		return
	}
	if r.err != nil {
		c.err = r.err
		return
	}
	c.msgs += r.msgs
	c.elapsed += r.elapsed
	c.rss = max(c.rss, r.rss)
	c.cpu += r.cpu
	if c.server < 0 || r.server < 0 {
		c.server = -1
	} else {
		c.server += r.server
	}
}

// cpuUsed reads the CPU time p has used and, with pgURL, that of the
// PostgreSQL processes serving its database (-1 where unknown).
func (b *bench) cpuUsed(ctx context.Context, p *Proc, pgURL string) (own, server time.Duration) {
	own, server = -1, -1
	if d, err := procCPU(p.Pid()); err == nil {
		own = d
	}
	if pgURL != "" {
		if d, err := backendCPU(ctx, pgURL); err == nil {
			server = d
		} else {
			b.logf("%s: %v", p.Name, err)
		}
	}
	return own, server
}

// peers: one queue of JSON messages (Telegraf's parser reads JSON) built
// up for four offline sessions, drained in turn by the subscriber into
// SQLite, Telegraf into SQLite, the subscriber into PostgreSQL and Telegraf
// into PostgreSQL, each storing every message before it acknowledges it.
func (b *bench) peers(ctx context.Context) (err error) {
	n := b.cfg.Ingest
	bin, cached, terr := telegrafBinary(ctx)
	switch {
	case terr != nil:
		b.note("peers: Telegraf could not be built, the subscriber is measured alone: %v", terr)
		bin = ""
	case !cached:
		b.logf("built Telegraf %s into the cache", telegrafVersion)
	}
	var pgSub, pgTelegraf string
	if b.cfg.Postgres != "" {
		for _, db := range []struct {
			url    *string
			prefix string
		}{{&pgSub, "bench_subscriber"}, {&pgTelegraf, "bench_telegraf"}} {
			u, drop, err := createDatabase(ctx, b.cfg.Postgres, db.prefix)
			if err != nil {
				b.note("peers: no PostgreSQL figures: %v", err)
				pgSub, pgTelegraf = "", ""
				break
			}
			*db.url = u
			defer func() { err = errors.Join(err, drop()) }()
		}
	}

	type subscriberRun struct {
		name, url, clientID string
		proc                *Proc
	}
	subs := []*subscriberRun{{name: "subscriber-peer-sqlite", url: "sqlite:" + filepath.Join(b.dir, "peer.db"), clientID: "bench-peer-sqlite"}}
	if pgSub != "" {
		subs = append(subs, &subscriberRun{name: "subscriber-peer-postgres", url: pgSub, clientID: "bench-peer-postgres"})
	}
	// A first start creates each subscriber's session and subscriptions.
	for _, s := range subs {
		p, err := b.startSubscriberOn(ctx, s.name, s.url, s.clientID, peerPrefix+"/#")
		if err != nil {
			return err
		}
		b.stop(p)
		s.proc = p
	}
	const telegrafSQLiteID, telegrafPostgresID = "bench-telegraf-sqlite", "bench-telegraf-postgres"
	if bin != "" {
		ids := []string{telegrafSQLiteID}
		if pgTelegraf != "" {
			ids = append(ids, telegrafPostgresID)
		}
		for _, id := range ids {
			if err := makeSession(b.broker.URL(), id, peerPrefix+"/#"); err != nil {
				return fmt.Errorf("session of %s: %w", id, err)
			}
		}
	}
	drainSubscriber := func(s *subscriberRun, round int) contender {
		c := contender{name: s.name}
		start := time.Now()
		if c.err = s.proc.Restart(ctx); c.err != nil {
			return c
		}
		defer b.stop(s.proc)
		stopProfile := b.profile(s.proc, fmt.Sprintf("%s-%d", s.name, round))
		stored, elapsed, _, err := waitStored(ctx, s.proc, n, b.cfg.IngestLimit, start)
		stopProfile()
		pgURL := ""
		if !strings.HasPrefix(s.url, "sqlite:") {
			pgURL = s.url
		}
		c.cpu, c.server = b.cpuUsed(ctx, s.proc, pgURL)
		if c.rss, c.err = s.proc.PeakRSS(); c.err != nil {
			return c
		}
		if c.err = err; err == nil && stored < n {
			c.err = fmt.Errorf("stored %d of %d messages within %s", stored, n, b.cfg.IngestLimit)
		}
		c.msgs, c.elapsed = stored, elapsed
		return c
	}
	drainTelegraf := func(name, config string, open func() (rowCounter, error), pgURL string) contender {
		rows, err := open()
		if err != nil {
			return contender{name: name, err: err}
		}
		defer rows.Close()
		return b.runTelegraf(ctx, bin, name, config, rows, n, b.cfg.IngestLimit, pgURL)
	}
	type step struct {
		key   string
		drain func(round int) contender
	}
	steps := []step{{"subscriber sqlite", func(round int) contender { return drainSubscriber(subs[0], round) }}}
	if bin != "" {
		path := filepath.Join(b.dir, "telegraf.db")
		config := telegrafConfig(b.broker.URL(), telegrafSQLiteID, peerPrefix+"/#", telegrafSQLite(path))
		steps = append(steps, step{"telegraf sqlite", func(int) contender {
			return drainTelegraf("telegraf-sqlite", config, func() (rowCounter, error) { return openSQLiteRows(path) }, "")
		}})
	}
	if pgSub != "" {
		steps = append(steps, step{"subscriber postgres", func(round int) contender { return drainSubscriber(subs[1], round) }})
		if bin != "" {
			config := telegrafConfig(b.broker.URL(), telegrafPostgresID, peerPrefix+"/#", telegrafPostgres(pgTelegraf))
			steps = append(steps, step{"telegraf postgres", func(int) contender {
				return drainTelegraf("telegraf-postgres", config, func() (rowCounter, error) { return openPostgresRows(ctx, pgTelegraf) }, pgTelegraf)
			}})
		}
	}

	results := map[string]contender{}
	for round := range b.cfg.IngestRounds {
		t := time.Now()
		if err := fillQueue(ctx, b.broker.URL(), peerPrefix, n, jsonSample); err != nil {
			return err
		}
		b.logf("round %d: queued %d QoS 1 messages (JSON payloads) for the peers in %s", round+1, n, time.Since(t).Round(100*time.Millisecond))
		order := slices.Clone(steps)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, st := range order {
			c := st.drain(round)
			if c.err == nil {
				b.logf("round %d: %-20s %9.0f msg/s", round+1, st.key, c.rate())
			}
			total, seen := results[st.key]
			if !seen {
				total = contender{name: c.name}
			}
			total.add(c)
			results[st.key] = total
		}
	}
	for _, k := range []string{"subscriber sqlite", "telegraf sqlite", "subscriber postgres", "telegraf postgres"} {
		c, ok := results[k]
		switch {
		case !ok:
		case c.err != nil:
			b.note("peers: %s: %v", k, c.err)
		default:
			b.logf("%-22s %9.0f msg/s  peak RSS %.1f MiB", k, c.rate(), c.rss/(1<<20))
			cpu := fmt.Sprintf("peers: %s: CPU µs per message: own %.1f", k, perMessage(c.cpu, c.msgs))
			if c.server >= 0 {
				cpu += fmt.Sprintf(", PostgreSQL %.1f", perMessage(c.server, c.msgs))
			}
			b.note("%s", cpu)
		}
	}

	// Each figure against its Telegraf; without one, the figure informs.
	figure := func(name, sub, peer string, value func(contender) float64) {
		s, ok := results[sub]
		if !ok {
			return
		}
		if s.err != nil {
			b.failure(name, s.err)
			return
		}
		if p, ok := results[peer]; ok && p.err == nil {
			b.figure(name, value(s), ptr(value(p)))
			return
		}
		b.figs = append(b.figs, measured(name, unitOf(name), value(s), nil, Target{}))
	}
	msgs := func(c contender) float64 { return c.rate() }
	mib := func(c contender) float64 { return c.rss / (1 << 20) }
	figure(figPeerSQLite, "subscriber sqlite", "telegraf sqlite", msgs)
	figure(figPeerPostgres, "subscriber postgres", "telegraf postgres", msgs)
	figure(figPeerRSSSQLite, "subscriber sqlite", "telegraf sqlite", mib)
	figure(figPeerRSSPostgres, "subscriber postgres", "telegraf postgres", mib)
	b.note("peers: %d rounds of %d queued QoS 1 JSON messages (%s), drained in turn by each contender from its own persistent session, "+
		"each round in the reverse order of the last; Telegraf %s with flush_interval 100ms, metric_batch_size 1000, max_undelivered_messages 2000; "+
		"msg/s from each process's start to its n-th stored row, added up over the rounds",
		b.cfg.IngestRounds, n, `{"seq":N,"value":21.5}`, telegrafVersion)
	return nil
}

// perMessage is d over n messages in µs (-1 for unknown).
func perMessage(d time.Duration, n int) float64 {
	if d < 0 {
		return -1
	}
	return float64(d.Microseconds()) / float64(n)
}

// unitOf is the unit of figure name.
func unitOf(name string) string {
	for _, s := range specs {
		if s.name == name {
			return s.unit
		}
	}
	return ""
}
