package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Figure names, in the order of the table.
const (
	figQoS0            = "HTTP publish QoS 0"
	figQoS1            = "HTTP publish QoS 1"
	figBatch           = "batch publish QoS 1, 100/request"
	figIngest          = "subscriber ingest, queued QoS 1"
	figPeerSQLite      = "subscriber ingest into SQLite, JSON"
	figPeerPostgres    = "subscriber ingest into PostgreSQL, JSON"
	figPeerRSSSQLite   = "subscriber peak RSS, ingest into SQLite"
	figPeerRSSPostgres = "subscriber peak RSS, ingest into PostgreSQL"
	figE2E50           = "end to end p50 at 1,000 msg/s"
	figE2E99           = "end to end p99 at 1,000 msg/s"
	figPubRSS          = "publisher peak RSS"
	figSubRSS          = "subscriber peak RSS"
	figQuery50         = "GET /messages a/+/c p50"
	figQuery99         = "GET /messages a/+/c p99"
	figBackfill        = "values of the filled rows extracted"
	figSeries50        = "GET /series 1 topic, 1 day by 1m p50"
	figSeries99        = "GET /series 1 topic, 1 day by 1m p99"
	figTopics50        = "GET /topics 10,000 topics p50"
	figTopics99        = "GET /topics 10,000 topics p99"
	figLarge50         = "GET /messages a/+/c p50, large store"
	figLarge99         = "GET /messages a/+/c p99, large store"
	figLargeIngest     = "subscriber ingest into the large store"
	subscriberID       = "bench-subscriber"
)

// specs gives each figure its unit and its target from the table,
// in the table's order.
var specs = []struct {
	name, unit string
	target     Target
}{
	{figQoS0, "req/s", Target{atLeastRatio, 0.7}},
	{figQoS1, "req/s", Target{atLeastRatio, 0.5}},
	{figBatch, "msg/s", Target{atLeastRatio, 0.8}},
	{figIngest, "msg/s", Target{atLeastRatio, 0.9}},
	{figPeerSQLite, "msg/s", Target{atLeastRatio, 1}},
	{figPeerPostgres, "msg/s", Target{atLeastRatio, 1}},
	{figPeerRSSSQLite, "MiB", Target{atMostRatio, 0.5}},
	{figPeerRSSPostgres, "MiB", Target{atMostRatio, 0.5}},
	{figE2E50, "ms", Target{}},
	{figE2E99, "ms", Target{below, 10}},
	{figPubRSS, "MiB", Target{below, 50}},
	{figSubRSS, "MiB", Target{below, 50}},
	{figQuery50, "ms", Target{below, 5}},
	{figQuery99, "ms", Target{}},
	{figBackfill, "rows/s", Target{}},
	{figSeries50, "ms", Target{below, 20}},
	{figSeries99, "ms", Target{}},
	{figTopics50, "ms", Target{below, 200}},
	{figTopics99, "ms", Target{}},
	{figLarge50, "ms", Target{below, 5}},
	{figLarge99, "ms", Target{}},
	{figLargeIngest, "msg/s", Target{atLeastRatio, 0.8}},
}

// figure records a measured figure, judged against its target.
func (b *bench) figure(name string, value float64, baseline *float64) {
	for _, s := range specs {
		if s.name == name {
			b.figs = append(b.figs, measured(name, s.unit, value, baseline, s.target))
			return
		}
	}
}

// failure records a figure that could not be measured.
func (b *bench) failure(name string, err error) {
	for _, s := range specs {
		if s.name == name {
			b.figs = append(b.figs, failed(name, s.unit, s.target, err))
			return
		}
	}
}

type bench struct {
	cfg    config
	out    io.Writer
	start  time.Time
	dir    string
	self   string // this program, to start the baseline server
	bins   map[string]string
	broker *Broker
	pub    *Proc
	sub    *Proc
	peak   map[string]float64
	// ingestStats are the main subscriber's commit counters after the
	// ingest, so that the end-to-end run can report its own share.
	ingestStats commitStats
	figs        []Figure
	notes       []string
}

func runBench(ctx context.Context, cfg config, out io.Writer) (err error) {
	b := &bench{cfg: cfg, out: out, start: time.Now(), bins: map[string]string{}, peak: map[string]float64{}}
	mosquitto, err := findMosquitto()
	if err != nil {
		return err
	}
	machine := describeMachine(ctx, mosquitto)
	fmt.Fprintf(out, "bench: %s run on %s (load average %s)\n", cfg.Kind(), machine, machine.LoadAverage)
	if b.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	if b.dir, err = os.MkdirTemp("", "mqtt-stack-bench-"); err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	if cfg.Keep {
		fmt.Fprintf(out, "bench: keeping %s\n", b.dir)
	} else {
		defer func() { err = errors.Join(err, os.RemoveAll(b.dir)) }()
	}
	if cfg.Perf != "" {
		if b.cfg.Perf, err = filepath.Abs(cfg.Perf); err != nil {
			return fmt.Errorf("-perf: %w", err)
		}
		if err := os.MkdirAll(b.cfg.Perf, 0o755); err != nil {
			return fmt.Errorf("-perf: %w", err)
		}
	}

	for _, svc := range []string{"publisher", "subscriber"} {
		t := time.Now()
		bin, err := buildService(ctx, cfg.Repo, svc, b.dir)
		if err != nil {
			b.note("%v", err)
			continue
		}
		b.bins[svc] = bin
		b.logf("built %s in %s", svc, time.Since(t).Round(100*time.Millisecond))
	}
	b.broker, err = startBroker(ctx, mosquitto, b.dir, cfg.MaxInflight, cfg.MaxQueued)
	if err != nil {
		return err
	}
	defer func() {
		if err := b.broker.Stop(); err != nil {
			b.logf("%v", err)
		}
	}()
	b.logf("mosquitto on %s: %s", b.broker.Addr, strings.Join(b.broker.Config[3:6], ", "))
	defer func() { b.stop(b.pub); b.stop(b.sub) }()

	steps := []struct {
		name string
		run  func(context.Context) error
		figs []string
	}{
		{"http", b.httpPublish, []string{figQoS0, figQoS1}},
		{"batch", b.batchPublish, []string{figBatch}},
		{"ingest", b.ingest, []string{figIngest}},
		{"peers", b.peers, []string{figPeerSQLite, figPeerPostgres, figPeerRSSSQLite, figPeerRSSPostgres}},
		{"e2e", b.endToEnd, []string{figE2E50, figE2E99}},
		{"query", b.query, []string{figQuery50, figQuery99, figBackfill, figSeries50, figSeries99, figTopics50, figTopics99}},
		{"large", b.large, []string{figLarge50, figLarge99, figLargeIngest}},
	}
	for _, s := range steps {
		if !cfg.Only[s.name] || ctx.Err() != nil {
			continue
		}
		fmt.Fprintf(out, "bench: %s (%s in)\n", s.name, time.Since(b.start).Round(time.Second))
		b.settle()
		if err := s.run(ctx); err != nil {
			b.logf("%s: %v", s.name, err)
			for _, name := range s.figs {
				if !b.has(name) {
					b.failure(name, err)
				}
			}
		}
	}
	b.stop(b.pub)
	b.stop(b.sub)
	b.pub, b.sub = nil, nil
	for _, svc := range []string{"publisher", "subscriber"} {
		name := map[string]string{"publisher": figPubRSS, "subscriber": figSubRSS}[svc]
		if v, ok := b.peak[svc]; ok {
			b.figure(name, v/(1<<20), nil)
		}
	}
	b.sortFigures()

	rep := Report{
		Date:    b.start.Format("2006-01-02"),
		Started: b.start.UTC().Round(time.Second),
		Seconds: time.Since(b.start).Round(time.Second).Seconds(),
		Kind:    cfg.Kind(),
		Machine: machine,
		Broker:  b.broker.Config,
		Settings: map[string]string{
			"conns": strconv.Itoa(cfg.Conns), "warmup": cfg.Warmup.String(),
			"http_duration": cfg.HTTPDuration.String(), "batch_size": strconv.Itoa(cfg.BatchSize),
			"batch_duration": cfg.BatchDuration.String(), "ingest": strconv.Itoa(cfg.Ingest), "ingest_json": strconv.FormatBool(cfg.IngestJSON),
			"e2e_rate": strconv.Itoa(cfg.E2ERate), "e2e_duration": cfg.E2EDuration.String(),
			"rows": strconv.Itoa(cfg.Rows), "query_duration": cfg.QueryDuration.String(),
			"max_inflight_messages": strconv.Itoa(cfg.MaxInflight), "max_queued_messages": strconv.Itoa(cfg.MaxQueued),
			"large_rows": strconv.Itoa(cfg.LargeRows), "ingest_rounds": strconv.Itoa(cfg.IngestRounds),
		},
		Figures: b.figs,
		Notes:   b.notes,
	}
	fmt.Fprintf(out, "\n%s\n", Table(b.figs))
	for _, n := range b.notes {
		fmt.Fprintf(out, "note: %s\n", n)
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.Notes = append(rep.Notes, "load average at the end: "+strings.Join(strings.Fields(string(la))[:3], " "))
	}
	fmt.Fprintf(out, "machine: %s\ndate: %s, %s run, %s; load average at start %s\n", machine, rep.Date, rep.Kind,
		time.Since(b.start).Round(time.Second), machine.LoadAverage)
	if cfg.Results != "" {
		paths, err := rep.Write(cfg.Results)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s\n", strings.Join(paths, ", "))
	}
	var missing int
	for _, f := range b.figs {
		if f.Result == resultError {
			missing++
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if missing > 0 {
		return fmt.Errorf("%d figures could not be measured", missing)
	}
	return nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.out, "  "+format+"\n", args...)
}

// note records a remark for the report and prints it.
func (b *bench) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	b.notes = append(b.notes, n)
	b.logf("%s", n)
}

func (b *bench) has(name string) bool {
	for _, f := range b.figs {
		if f.Name == name {
			return true
		}
	}
	return false
}

// sortFigures puts the figures in the order of the table.
func (b *bench) sortFigures() {
	var sorted []Figure
	for _, spec := range specs {
		for _, f := range b.figs {
			if f.Name == spec.name {
				sorted = append(sorted, f)
			}
		}
	}
	b.figs = sorted
}

// sample records the service's peak RSS so far.
func (b *bench) sample(p *Proc) {
	if p == nil || p.Exited() {
		return
	}
	svc := strings.SplitN(p.Name, "-", 2)[0]
	v, err := p.PeakRSS()
	if err != nil {
		b.logf("%v", err)
		return
	}
	b.peak[svc] = max(b.peak[svc], v)
}

// settle writes out what the scenarios before left in the kernel's page
// cache (the peers' stores alone are hundreds of MiB), so that its
// writeback, which the kernel starts about 30 s after the writes, does not
// land in the next scenario's measurement: the end-to-end run's commits
// each wait for a flush of the disk it would share.
func (b *bench) settle() {
	t := time.Now()
	syscall.Sync()
	if d := time.Since(t); d > time.Second {
		b.logf("settle: sync took %s", d.Round(100*time.Millisecond))
	}
}

// stop samples the peak RSS of p and stops it gracefully.
func (b *bench) stop(p *Proc) {
	if p == nil {
		return
	}
	b.sample(p)
	if err := p.Stop(); err != nil {
		b.logf("%v", err)
	}
}

// publisher returns the running publisher, starting it if needed.
func (b *bench) publisher(ctx context.Context) (*Proc, error) {
	if b.pub != nil && !b.pub.Exited() {
		return b.pub, nil
	}
	bin, ok := b.bins["publisher"]
	if !ok {
		return nil, errors.New("the publisher did not build")
	}
	p, err := startProc(ctx, "publisher", bin, nil, b.env(map[string]string{
		"MQTT_BROKER": b.broker.URL(), "MQTT_CLIENT_ID": "bench-publisher",
		"HTTP_ADDR": "127.0.0.1:0", "LOG_FORMAT": "json",
		// As the stack runs it: the broker's max_inflight_messages.
		"MQTT_MAX_INFLIGHT": strconv.Itoa(b.cfg.MaxInflight),
	}), b.dir)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, 30*time.Second); err != nil {
		return nil, errors.Join(err, p.Stop())
	}
	b.pub = p
	return p, nil
}

// env is a service's environment: env, with -env on top.
func (b *bench) env(env map[string]string) map[string]string {
	for k, v := range b.cfg.Env {
		env[k] = v
	}
	return env
}

// startSubscriber starts a subscriber on the SQLite file db with a
// persistent session of clientID on topics.
func (b *bench) startSubscriber(ctx context.Context, name, db, clientID, topics string) (*Proc, error) {
	return b.startSubscriberOn(ctx, name, "sqlite:"+db, clientID, topics)
}

// startSubscriberOn starts a subscriber on the store at databaseURL (the
// subscriber's DATABASE_URL).
func (b *bench) startSubscriberOn(ctx context.Context, name, databaseURL, clientID, topics string) (*Proc, error) {
	bin, ok := b.bins["subscriber"]
	if !ok {
		return nil, errors.New("the subscriber did not build")
	}
	p, err := startProc(ctx, name, bin, nil, b.env(map[string]string{
		"MQTT_BROKER": b.broker.URL(), "MQTT_CLIENT_ID": clientID, "MQTT_TOPICS": topics, "MQTT_QOS": "1",
		"DATABASE_URL": databaseURL, "HTTP_ADDR": "127.0.0.1:0", "LOG_FORMAT": "json",
	}), b.dir)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, 60*time.Second); err != nil {
		return nil, errors.Join(err, p.Stop())
	}
	return p, nil
}

// subscriber returns the run's main subscriber, starting it if needed.
func (b *bench) subscriber(ctx context.Context) (*Proc, error) {
	if b.sub != nil && !b.sub.Exited() {
		return b.sub, nil
	}
	p, err := b.startSubscriber(ctx, "subscriber", filepath.Join(b.dir, "subscriber.db"), subscriberID, "bench/ingest/#,bench/e2e/#")
	if err != nil {
		return nil, err
	}
	b.sub = p
	return p, nil
}

// cpuOf measures the CPU time of a server (if name is not empty), the
// broker and this program (the load generator and the paho baselines).
func (b *bench) cpuOf(name string, pid int) *cpuUse {
	c := newCPUUse()
	if name != "" {
		c.watch(name, pid)
	}
	c.watch("mosquitto", b.broker.Pid())
	c.watch("bench", os.Getpid())
	return c
}

// profile records a CPU profile of p with perf while the returned function
// has not been called, when -perf is given.
func (b *bench) profile(p *Proc, name string) func() {
	if b.cfg.Perf == "" || p == nil {
		return func() {}
	}
	out := filepath.Join(b.cfg.Perf, name+".perf.data")
	cmd := exec.Command("perf", "record", "-F", "499", "-g", "-p", strconv.Itoa(p.Pid()), "-o", out)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		b.logf("perf: %v", err)
		return func() {}
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		// perf ends on the interrupt it was sent; only a failure to wait
		// for it at all is worth a line.
		var exit *exec.ExitError
		if err := cmd.Wait(); err != nil && !errors.As(err, &exit) {
			b.logf("perf %s: %v", name, err)
		}
	}
}

// httpPublish: single publishes at QoS 0 and 1 against the minimal server.
// The three targets take turns in rounds (baseline, QoS 0, QoS 1, baseline,
// ...) so that a change in what else runs on the machine weighs on all
// three alike instead of on whichever ran during it.
func (b *bench) httpPublish(ctx context.Context) error {
	base, err := startProc(ctx, "baseline-http", b.self, []string{"baseline-http"}, nil, b.dir)
	if err != nil {
		return fmt.Errorf("baseline server: %w", err)
	}
	defer b.stop(base)
	pub, err := b.publisher(ctx)
	if err != nil {
		return err
	}
	bodies := map[int][][]byte{}
	for _, q := range []int{0, 1} {
		if bodies[q], err = publishBodies(4096, q); err != nil {
			return err
		}
	}
	client := newClient(b.cfg.Conns)
	targets := []struct {
		name, url, profile string
		qos                int
		total              loadResult
		rates              []float64
		cpu                *cpuUse
	}{
		{name: "baseline", url: base.URL() + "/publish", qos: 1, cpu: b.cpuOf("baseline", base.Pid())},
		{name: "publisher QoS 0", url: pub.URL() + "/publish", qos: 0, profile: "http-qos0", cpu: b.cpuOf("publisher", pub.Pid())},
		{name: "publisher QoS 1", url: pub.URL() + "/publish", qos: 1, profile: "http-qos1", cpu: b.cpuOf("publisher", pub.Pid())},
	}
	slice := b.cfg.HTTPDuration / time.Duration(b.cfg.Rounds)
	for round := -1; round < b.cfg.Rounds; round++ {
		for i := range targets {
			t := &targets[i]
			l := load{Conns: b.cfg.Conns, URL: t.url, MaxRequests: b.cfg.HTTPRequests / b.cfg.Rounds,
				Body: func(i int) []byte { return bodies[t.qos][i%len(bodies[t.qos])] }}
			if round < 0 { // warm-up
				l.Duration = b.cfg.Warmup
				l.run(ctx, client)
				continue
			}
			l.Duration = slice
			stop := func() {}
			if t.profile != "" {
				stop = b.profile(pub, fmt.Sprintf("%s-%d", t.profile, round))
			}
			t.cpu.begin()
			r := l.run(ctx, client)
			t.cpu.end()
			stop()
			t.total.add(r)
			t.rates = append(t.rates, r.PerSecond())
		}
	}
	b.sample(pub)
	for _, t := range targets {
		r := t.total
		b.logf("%-22s %9.0f req/s  p50 %.2f ms  p99 %.2f ms  (%d ok, %d failed; rounds %s)", t.name, r.PerSecond(),
			ms(r.Latency.Percentile(0.5)), ms(r.Latency.Percentile(0.99)), r.OK, r.Failed, formatRates(t.rates))
		b.note("HTTP %s: %s", t.name, t.cpu.per(r.OK, "request"))
		if r.Failed > 0 {
			b.note("%s: %d of %d requests failed, first: %s", t.name, r.Failed, r.OK+r.Failed, r.FirstError)
		}
	}
	baseline := targets[0].total
	if baseline.OK == 0 {
		return fmt.Errorf("baseline: %s", baseline.FirstError)
	}
	for _, x := range []struct {
		name string
		r    loadResult
	}{{figQoS0, targets[1].total}, {figQoS1, targets[2].total}} {
		if x.r.OK == 0 {
			b.failure(x.name, errors.New(x.r.FirstError))
			continue
		}
		b.figure(x.name, x.r.PerSecond(), ptr(baseline.PerSecond()))
	}
	return nil
}

// batchPublish: /publish/batch of 100 QoS 1 messages against a plain paho
// client publishing the same messages in windows of 100, taking turns in
// rounds like the single publishes.
func (b *bench) batchPublish(ctx context.Context) error {
	size := b.cfg.BatchSize
	pub, err := b.publisher(ctx)
	if err != nil {
		return err
	}
	paho, err := connect(b.broker.URL(), mqtt.NewClientOptions().SetClientID("bench-paho-publisher"))
	if err != nil {
		return fmt.Errorf("paho baseline: %w", err)
	}
	defer paho.Disconnect(250)
	bodies, err := batchBodies(256, size)
	if err != nil {
		return err
	}
	client := newClient(b.cfg.Conns)
	maxBatches := b.cfg.BatchRequests / b.cfg.Rounds
	slice := b.cfg.BatchDuration / time.Duration(b.cfg.Rounds)
	var base, viaHTTP loadResult
	var baseRates, httpRates []float64
	baseCPU, httpCPU := b.cpuOf("", 0), b.cpuOf("publisher", pub.Pid())
	for round := -1; round < b.cfg.Rounds; round++ {
		d := slice
		if round < 0 {
			d = b.cfg.Warmup
		}
		if round >= 0 {
			baseCPU.begin()
		}
		n, elapsed, err := pahoBatches(ctx, paho, b.cfg.Conns, size, d, maxBatches)
		if round >= 0 {
			baseCPU.end()
		}
		if err != nil {
			return fmt.Errorf("paho baseline: %w", err)
		}
		l := load{Conns: b.cfg.Conns, URL: pub.URL() + "/publish/batch", MaxRequests: maxBatches, Duration: d,
			Body: func(i int) []byte { return bodies[i%len(bodies)] }}
		if round < 0 {
			l.run(ctx, client)
			continue
		}
		base.add(loadResult{OK: n, Elapsed: elapsed})
		baseRates = append(baseRates, rate(n, elapsed))
		stop := b.profile(pub, fmt.Sprintf("batch-%d", round))
		httpCPU.begin()
		r := l.run(ctx, client)
		httpCPU.end()
		stop()
		r.OK *= size // messages, not requests
		viaHTTP.add(r)
		httpRates = append(httpRates, r.PerSecond())
	}
	b.sample(pub)
	b.logf("%-22s %9.0f msg/s  (rounds %s)", "paho baseline", base.PerSecond(), formatRates(baseRates))
	b.logf("%-22s %9.0f msg/s  p50 %.2f ms  p99 %.2f ms per request  (%d messages, %d requests failed; rounds %s)",
		"publisher batch", viaHTTP.PerSecond(), ms(viaHTTP.Latency.Percentile(0.5)), ms(viaHTTP.Latency.Percentile(0.99)),
		viaHTTP.OK, viaHTTP.Failed, formatRates(httpRates))
	b.note("batch paho baseline: %s", baseCPU.per(base.OK, "message"))
	b.note("batch publisher: %s", httpCPU.per(viaHTTP.OK, "message"))
	if viaHTTP.Failed > 0 {
		b.note("batch: %d requests failed, first: %s", viaHTTP.Failed, viaHTTP.FirstError)
	}
	if viaHTTP.OK == 0 {
		return errors.New(viaHTTP.FirstError)
	}
	b.figure(figBatch, viaHTTP.PerSecond(), ptr(base.PerSecond()))
	return nil
}

// formatRates lists per-round rates, to show how steady the machine was.
func formatRates(rates []float64) string {
	parts := make([]string, len(rates))
	for i, r := range rates {
		parts[i] = strconv.FormatFloat(r, 'f', 0, 64)
	}
	return strings.Join(parts, " ")
}

// ingest: a queue of QoS 1 messages built up while the subscriber was
// offline, drained by the subscriber (stored, acknowledged after commit)
// and by a plain paho client (acknowledged, not stored).
func (b *bench) ingest(ctx context.Context) error {
	n := b.cfg.Ingest
	const baselineID = "bench-paho-subscriber"
	// A first start creates the subscriber's session and subscriptions.
	sub, err := b.subscriber(ctx)
	if err != nil {
		return err
	}
	b.stop(sub)
	if err := makeSession(b.broker.URL(), baselineID, "bench/ingest/#"); err != nil {
		return fmt.Errorf("baseline session: %w", err)
	}
	t := time.Now()
	load, kind := sample, "text"
	if b.cfg.IngestJSON {
		load, kind = jsonSample, "JSON"
	}
	if err := fillQueue(ctx, b.broker.URL(), "bench/ingest", n, load); err != nil {
		return err
	}
	b.logf("queued %d QoS 1 messages (%s payloads) for two offline sessions in %s", n, kind, time.Since(t).Round(100*time.Millisecond))

	baseCPU := b.cpuOf("", 0)
	baseCPU.begin()
	baseline, err := pahoDrain(ctx, b.broker.URL(), baselineID, n, b.cfg.IngestLimit)
	baseCPU.end()
	if err != nil {
		return fmt.Errorf("paho baseline: %w", err)
	}
	b.note("ingest paho baseline: %s", baseCPU.per(n, "message"))
	b.logf("%-22s %9.0f msg/s", "paho baseline", baseline)

	start := time.Now()
	if err := sub.Restart(ctx); err != nil {
		return err
	}
	stop := b.profile(sub, "ingest")
	// The subscriber's CPU from its start: it is a new process.
	subCPU := b.cpuOf("", 0)
	subCPU.begin()
	stored, elapsed, how, err := waitStored(ctx, sub, n, b.cfg.IngestLimit, start)
	subCPU.end()
	if used, err := procCPU(sub.Pid()); err == nil {
		subCPU.names = append([]string{"subscriber"}, subCPU.names...)
		subCPU.used["subscriber"] = used
	}
	stop()
	b.sample(sub)
	if err != nil {
		return err
	}
	perSecond := rate(stored, elapsed)
	b.note("ingest subscriber: %s", subCPU.per(stored, "message"))
	b.logf("%-22s %9.0f msg/s  (%d stored in %s, counted by %s)", "subscriber", perSecond, stored, elapsed.Round(time.Millisecond), how)
	if b.ingestStats, err = readCommitStats(ctx, sub); err == nil {
		b.note("ingest: %s", b.ingestStats.since(commitStats{}))
	}
	if stored < n {
		b.note("ingest: only %d of %d messages were stored within %s; the rate is over that time", stored, n, b.cfg.IngestLimit)
	}
	b.figure(figIngest, perSecond, ptr(baseline))
	return nil
}

// waitStored polls the subscriber until n messages are stored or limit
// passes, and returns how many it saw and when. It reads the counter
// subscriber_messages_stored_total from /metrics; where that is missing,
// the id of the newest stored row (ids start at 1 in the run's new file).
func waitStored(ctx context.Context, sub *Proc, n int, limit time.Duration, start time.Time) (int, time.Duration, string, error) {
	client := newClient(1)
	count := func() (int, string, error) {
		body, err := get(ctx, client, sub.URL()+"/metrics")
		if err != nil {
			return 0, "", err
		}
		if v, ok := metricSum(body, "subscriber_messages_stored_total"); ok {
			return int(v), "subscriber_messages_stored_total", nil
		}
		body, err = get(ctx, client, sub.URL()+"/messages?limit=1&topic="+url.QueryEscape("bench/ingest/#"))
		if err != nil {
			return 0, "", err
		}
		id, err := newestID(body)
		return int(id), "newest row id", err
	}
	var stored int
	var how string
	var at time.Time
	deadline := start.Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		c, h, err := count()
		if err != nil {
			return 0, 0, "", fmt.Errorf("count stored messages: %w", err)
		}
		if c > stored {
			stored, how, at = c, h, time.Now()
		}
		if stored >= n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if stored == 0 {
		return 0, 0, "", fmt.Errorf("nothing stored within %s; log: %s", limit, sub.LogTail())
	}
	return stored, at.Sub(start), how, nil
}

// endToEnd: HTTP request to stored row at a steady rate.
func (b *bench) endToEnd(ctx context.Context) error {
	pub, err := b.publisher(ctx)
	if err != nil {
		return err
	}
	sub, err := b.subscriber(ctx)
	if err != nil {
		return err
	}
	n := int(b.cfg.E2EDuration.Seconds() * float64(b.cfg.E2ERate))
	stopPub := b.profile(pub, "e2e-publisher")
	stopSub := b.profile(sub, "e2e-subscriber")
	r, err := endToEnd(ctx, pub, sub, b.cfg.Conns, n, b.cfg.E2ERate)
	stopPub()
	stopSub()
	b.sample(pub)
	b.sample(sub)
	if err != nil {
		return err
	}
	if after, err := readCommitStats(ctx, sub); err == nil {
		b.note("end to end: %s", after.since(b.ingestStats))
	}
	b.logf("%d published (%d failed), %d seen stored, by %s; publish answer p50 %.2f ms p99 %.2f ms",
		r.Sent, r.Failed, r.Seen, r.Method, ms(r.HTTP.Percentile(0.5)), ms(r.HTTP.Percentile(0.99)))
	switch r.Method {
	case "stream":
		b.note("end to end: from the moment each request was due to the moment its event arrived on GET /messages/stream (after the commit); "+
			"to received_at (arrival, before the commit) p50 %.2f ms, p99 %.2f ms; from received_at to the event (queue, commit, stream) p50 %.2f ms, p99 %.2f ms",
			ms(r.Arrival.Percentile(0.5)), ms(r.Arrival.Percentile(0.99)), ms(r.Inside.Percentile(0.5)), ms(r.Inside.Percentile(0.99)))
	default:
		b.note("end to end: the subscriber has no GET /messages/stream, so this is from the moment each request was due to the row's received_at, stamped on arrival before the commit: the commit is not included")
	}
	if r.Seen < r.Sent {
		b.note("end to end: %d of %d published messages were not seen stored", r.Sent-r.Seen, r.Sent)
	}
	if r.Failed > 0 {
		b.note("end to end: %d publishes failed, first: %s", r.Failed, r.FirstErr)
	}
	if len(r.Commit) == 0 {
		return errors.New("no message was seen stored")
	}
	b.figure(figE2E50, ms(r.Commit.Percentile(0.5)), nil)
	b.figure(figE2E99, ms(r.Commit.Percentile(0.99)), nil)
	return nil
}

// query: reads over a filled file of a million rows: GET /messages a/+/c,
// GET /series of one topic's day and GET /topics of 10,000 topics, once
// the subscriber has extracted the values of the rows (which it does for
// rows stored before it kept values: the fill leaves them to it).
func (b *bench) query(ctx context.Context) error {
	// The main subscriber is done; its memory has been sampled.
	b.stop(b.sub)
	b.sub = nil
	db := filepath.Join(b.dir, "query.db")
	sub, err := b.startSubscriber(ctx, "subscriber-query", db, "bench-query", "bench/query/#")
	if err != nil {
		return err
	}
	b.stop(sub)
	t := time.Now()
	f, err := fillStore(ctx, db, b.cfg.Rows)
	if err != nil {
		return fmt.Errorf("fill %s: %w", db, err)
	}
	b.logf("filled %d rows in %s", b.cfg.Rows+extraTopics, time.Since(t).Round(100*time.Millisecond))
	start := time.Now()
	if err := sub.Restart(ctx); err != nil {
		return err
	}
	defer b.stop(sub)
	if err := sub.WaitReady(ctx, 60*time.Second); err != nil {
		return err
	}
	took, err := waitBackfill(ctx, sub, 10*time.Minute, start)
	if err != nil {
		return err
	}
	rows := b.cfg.Rows + extraTopics
	b.logf("values of %d rows extracted in %s", rows, took.Round(100*time.Millisecond))
	b.figure(figBackfill, rate(rows, took), nil)
	b.note("values backfill: %s rows of two numbers each, a batch of up to 1000 at a time with a pause as long as the batch, measured from the subscriber's start", thousands(int64(rows)))

	stop := b.profile(sub, "query")
	lat, err := queryLatency(ctx, sub.URL(), b.cfg.QueryDuration, b.cfg.Queries)
	stop()
	if err != nil {
		return err
	}
	b.logf("%d queries: p50 %.2f ms, p99 %.2f ms", len(lat), ms(lat.Percentile(0.5)), ms(lat.Percentile(0.99)))
	b.figure(figQuery50, ms(lat.Percentile(0.5)), nil)
	b.figure(figQuery99, ms(lat.Percentile(0.99)), nil)
	b.note("query: %s rows over 1,000 topics (and %s of one row each), a/+/c matching 2.5%% of them; one request at a time",
		thousands(int64(b.cfg.Rows)), thousands(extraTopics))

	stop = b.profile(sub, "series")
	lat, err = seriesLatency(ctx, sub.URL(), f, b.cfg.QueryDuration, b.cfg.Queries)
	stop()
	if err != nil {
		return fmt.Errorf("series: %w", err)
	}
	b.logf("%d series queries: p50 %.2f ms, p99 %.2f ms", len(lat), ms(lat.Percentile(0.5)), ms(lat.Percentile(0.99)))
	b.figure(figSeries50, ms(lat.Percentile(0.5)), nil)
	b.figure(figSeries99, ms(lat.Percentile(0.99)), nil)
	b.note("series: %s temp over the last day by 1m (%d readings) among %s rows; one request at a time", seriesTopic, f.seriesRows, thousands(int64(rows)))

	stop = b.profile(sub, "topics")
	lat, err = topicsLatency(ctx, sub.URL(), b.cfg.QueryDuration, b.cfg.Queries)
	stop()
	if err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	b.logf("%d topics queries: p50 %.2f ms, p99 %.2f ms", len(lat), ms(lat.Percentile(0.5)), ms(lat.Percentile(0.99)))
	b.figure(figTopics50, ms(lat.Percentile(0.5)), nil)
	b.figure(figTopics99, ms(lat.Percentile(0.99)), nil)
	b.note("topics: GET /topics?limit=10000, all %s topics with their newest message and values in one answer; one request at a time", thousands(1000+extraTopics))
	return nil
}

// waitBackfill polls the subscriber until subscriber_values_backfill_remaining
// is 0, at most limit, and returns the time since start.
func waitBackfill(ctx context.Context, sub *Proc, limit time.Duration, start time.Time) (time.Duration, error) {
	client := newClient(1)
	deadline := start.Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		body, err := get(ctx, client, sub.URL()+"/metrics")
		if err != nil {
			return 0, err
		}
		left, ok := metricSum(body, "subscriber_values_backfill_remaining")
		if !ok {
			return 0, errors.New("the subscriber has no subscriber_values_backfill_remaining")
		}
		if left == 0 {
			return time.Since(start), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, fmt.Errorf("values not extracted within %s", limit)
}

func findMosquitto() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("mosquitto not found in PATH (apt-get install mosquitto)")
}
