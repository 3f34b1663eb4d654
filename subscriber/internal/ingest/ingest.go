// Package ingest is the MQTT side of the subscriber: a persistent session
// whose arrivals are committed to the store in batches and acknowledged to
// the broker only after the commit.
package ingest

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/telemetry-stack/mqtt-stack/mqttconn"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/metrics"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// Store is what ingest needs of a store.
type Store interface {
	Reader
	Commit(ctx context.Context, c *store.Commit) error
	LoadSession(ctx context.Context, clientID string) (store.Session, error)
	BatchIDs(ctx context.Context, key int64, since time.Time) ([]int64, error)
}

// Config configures an Ingester.
type Config struct {
	// Brokers are tried in turn, at each connection attempt.
	Brokers     []string
	ClientID    string
	Username    string
	Password    string
	TLS         *tls.Config
	QoS         byte
	Filters     []string
	ShareGroup  string
	StatusTopic string
	// LogPayloadBytes bounds the payload shown in an arrival's log line.
	LogPayloadBytes int
	// Arrivals, when set, is the logger of the arrival lines, and
	// FlushArrivals writes out what it holds back: the writer calls it
	// before it acknowledges a batch, so that each line is out before its
	// message is acknowledged (see logbuf).
	Arrivals      *slog.Logger
	FlushArrivals func() error
	// MaxBatch bounds the messages committed in one transaction (2000).
	// A commit's fixed costs (the fsync, the index pages of every topic
	// it touches) are shared by its messages: draining a backlog into
	// SQLite, batches of 2000 ran at 1.3 times the rate of batches of 500
	// (docs/performance.md).
	MaxBatch int
	// Queue is how many arrivals may wait for the writer (4000): the next
	// batch fills while one commits.
	Queue int
	// MaxBatchBytes bounds the payload bytes of one commit (8 MiB) and
	// QueueBytes the bytes of the arrivals waiting for or in a commit (16
	// MiB): the counts above are for small messages, and 4000 messages of
	// a megabyte would take 4 GB. A message larger than QueueBytes waits
	// until nothing else is held, then goes alone.
	MaxBatchBytes int
	QueueBytes    int
	// ShutdownTimeout bounds committing what is queued at shutdown (10s).
	ShutdownTimeout time.Duration
	// ShareProbeTimeout is how long a member of a share group waits for
	// its probe before it reports the group not honoured
	// (DefaultShareProbeTimeout).
	ShareProbeTimeout time.Duration
	// Committed, when set, is called by the writer after each commit with
	// the stored messages (ids set), e.g. to feed a live stream.
	Committed func([]store.Message)
}

// arrival is a received message waiting for the writer.
type arrival struct {
	msg  store.Message
	dup  bool   // the DUP flag: the broker says it may have sent this before
	hash uint64 // of topic and payload, for QoS 1 and 2
	wire *wire  // the connection it came on
	seq  int64  // its place among that connection's arrivals
	// ack acknowledges it: Paho's message itself, not its method value
	// msg.Ack, which would be one more allocation per message.
	ack  interface{ Ack() }
	row  int   // its index in the rows of the batch that stores it, or -1
	held int64 // what it holds of QueueBytes, until its batch is committed
}

// Ingester owns the MQTT client and the writer.
type Ingester struct {
	log      *slog.Logger
	arrivals *slog.Logger // the arrival lines' (cfg.Arrivals, else log)
	cfg      Config
	st       Store
	m        *metrics.Metrics

	received [3]prometheus.Counter // m.Received by QoS, looked up once

	client  mqtt.Client
	probe   *shareProbe // nil without a share group
	queue   chan *arrival
	room    *semaphore.Weighted // QueueBytes, taken by each arrival until its commit
	stopped context.Context     // done when shutdown begins (stop)
	stop    context.CancelFunc
	wakeup  chan struct{} // cap 1: a connection has a release or a confirmation

	mu         sync.Mutex
	connected  bool
	subscribed bool
	generation int // counts connections, so a stale OnConnect cannot mark a newer one subscribed
	connErr    error
	subErr     error // why the last subscription attempt failed
	// connectedTo is the broker of the latest connection that was made:
	// after losing it, the next attempt starts with the broker after it.
	connectedTo string
	wires       map[int64]*wire // connections that may still hold releases or confirmations
	failWarned  time.Time       // the last connection failure logged at WARN

	conns      atomic.Int64         // the last connection number handed out
	current    atomic.Pointer[wire] // the connection being used (or tried)
	storeErr   atomic.Pointer[error]
	resetStore atomic.Bool // the store was set up again: the next commit writes back the whole ledger

	// The writer's own; see ledger.
	ledger       *ledger
	judged       map[*wire]int64 // the last arrival of each connection taken into a batch
	unsaved      map[int64]int64 // confirmed acknowledgement marks not yet committed
	unsavedSince time.Time

	// The writer hands each commit's acknowledgements to ackLoop, which
	// gives them to Paho while the writer goes on to the next commit.
	acks     chan ackBatch
	acksBusy sync.WaitGroup // a batch handed on and not yet given to Paho
}

// New builds the client; nothing connects before Run.
func New(log *slog.Logger, cfg Config, st Store, m *metrics.Metrics) *Ingester {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 2000
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 4000
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = 8 << 20
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 16 << 20
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.ShareProbeTimeout <= 0 {
		cfg.ShareProbeTimeout = DefaultShareProbeTimeout
	}
	if cfg.Arrivals == nil {
		cfg.Arrivals = log
	}
	i := &Ingester{
		log: log, arrivals: cfg.Arrivals, cfg: cfg, st: st, m: m,
		queue:   make(chan *arrival, cfg.Queue),
		room:    semaphore.NewWeighted(int64(cfg.QueueBytes)),
		wakeup:  make(chan struct{}, 1),
		wires:   map[int64]*wire{},
		unsaved: map[int64]int64{},
		judged:  map[*wire]int64{},
		acks:    make(chan ackBatch, 1),
	}
	go i.ackLoop()
	i.stopped, i.stop = context.WithCancel(context.Background())
	for q := range i.received {
		i.received[q] = m.Received.WithLabelValues(strconv.Itoa(q))
	}
	if cfg.ShareGroup != "" {
		i.probe = newShareProbe(cfg.ShareGroup, cfg.ClientID, cfg.ShareProbeTimeout)
	}
	opts := mqtt.NewClientOptions().
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		// MQTT 3.1.1 only: Paho would otherwise retry a refused
		// connection as MQTT 3.1, which brokers such as NATS refuse.
		SetProtocolVersion(4).
		// A persistent session: the broker keeps our subscriptions and
		// queues QoS 1 and 2 messages while we are away.
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true). // start while the broker is down
		// The same timing as the publisher's (see mqttconn).
		SetConnectRetryInterval(mqttconn.ConnectRetryInterval).
		SetMaxReconnectInterval(mqttconn.MaxReconnectInterval).
		SetConnectTimeout(mqttconn.ConnectTimeout).
		SetKeepAlive(mqttconn.KeepAlive).
		SetPingTimeout(mqttconn.PingTimeout).
		SetWriteTimeout(10*time.Second).
		SetOrderMatters(true). // the handler only enqueues; keep arrival order
		// The writer acknowledges after the commit, never paho.
		SetAutoAckDisabled(true).
		// Registered before connecting: a persistent session delivers
		// its queued messages right after CONNACK, before any SUBSCRIBE.
		SetDefaultPublishHandler(i.handle).
		SetOnConnectHandler(i.onConnect).
		SetConnectionLostHandler(i.onConnectionLost).
		SetReconnectingHandler(i.onReconnecting).
		SetConnectionNotificationHandler(i.onNotification).
		SetCustomOpenConnectionFn(i.open).
		SetWill(cfg.StatusTopic, "offline", 1, true)
	for _, b := range cfg.Brokers {
		opts.AddBroker(b)
	}
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	i.client = mqtt.NewClient(opts)
	return i
}

// Ready reports why the subscriber cannot take messages, or nil.
func (i *Ingester) Ready() error {
	i.mu.Lock()
	connected, subscribed, connErr, subErr := i.connected, i.subscribed, i.connErr, i.subErr
	i.mu.Unlock()
	switch {
	case !connected && connErr != nil:
		return fmt.Errorf("not connected to the broker: %w", connErr)
	case !connected:
		return errors.New("not connected to the broker")
	case !subscribed && subErr != nil:
		return fmt.Errorf("subscriptions not acknowledged: %w", subErr)
	case !subscribed:
		return errors.New("subscriptions not acknowledged")
	}
	if i.probe != nil {
		if err := i.probe.ready(); err != nil {
			return err
		}
	}
	if p := i.storeErr.Load(); p != nil {
		return fmt.Errorf("store commits failing: %w", *p)
	}
	return nil
}

// Run loads what the store knows of the session, connects, and writes
// arrivals until ctx ends; then it shuts down: it stops taking messages,
// commits and acknowledges what is queued, publishes offline and
// disconnects.
func (i *Ingester) Run(ctx context.Context) error {
	if err := i.load(ctx); err != nil {
		return err
	}
	i.log.Info("connecting to broker", "brokers", i.cfg.Brokers, "client_id", i.cfg.ClientID)
	// With ConnectRetry the token completes only once connected; the
	// client keeps trying in the background meanwhile.
	i.client.Connect()
	pending := i.write(ctx)
	return i.shutdown(pending)
}

// load reads the session's records, retrying while the store does not
// answer. A connection whose outcome was never recorded (the process died
// between CONNECT and CONNACK) may have begun a new broker session: what
// came before becomes uncertain.
func (i *Ingester) load(ctx context.Context) error {
	for backoff := 100 * time.Millisecond; ; backoff = min(backoff*2, 5*time.Second) {
		ses, err := i.st.LoadSession(ctx, i.cfg.ClientID)
		if err == nil && ses.Attempted > ses.Connected {
			ses.Uncertain = max(ses.Uncertain, ses.Attempted)
			err = i.st.Commit(ctx, &store.Commit{ClientID: i.cfg.ClientID, Uncertain: ses.Uncertain})
		}
		if err == nil {
			i.ledger = newLedger(ses)
			i.conns.Store(max(ses.Attempted, ses.Connected))
			return nil
		}
		i.storeErr.Store(&err)
		i.log.Warn("cannot read the session from the store; retrying", "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("load session: %w", err)
		case <-time.After(backoff):
		}
	}
}

// open is Paho's dialer: it dials, numbers the connection and records the
// number before the CONNECT goes out, so that a restart knows of every
// connection that may have changed the broker session.
func (i *Ingester) open(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	nc, err := mqttconn.Dial(uri, o)
	if err != nil {
		return nil, err
	}
	num := i.conns.Add(1)
	if err := i.record(&store.Commit{ClientID: i.cfg.ClientID, Attempted: num}); err != nil {
		return nil, errors.Join(fmt.Errorf("record connection %d: %w", num, err), nc.Close())
	}
	w := newWire(nc, num, i.connack, i.wake)
	w.broker = uri.String()
	i.mu.Lock()
	i.wires[num] = w
	i.mu.Unlock()
	i.current.Store(w)
	return w, nil
}

// connack records a connection's CONNACK before Paho reads it: whether the
// broker kept the session (a new one voids every record of the old).
func (i *Ingester) connack(w *wire, rc byte, present bool) error {
	c := &store.Commit{ClientID: i.cfg.ClientID, Connected: w.num}
	if rc == 0 && !present {
		c.Epoch = w.num
	}
	if err := i.record(c); err != nil {
		return fmt.Errorf("record the session of connection %d: %w", w.num, err)
	}
	if rc == 0 {
		i.log.Info("broker session", "connection", w.num, "session_present", present)
	}
	return nil
}

func (i *Ingester) record(c *store.Commit) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := i.st.Commit(ctx, c)
	if errors.Is(err, store.ErrReset) {
		i.resetStore.Store(true)
		err = i.st.Commit(ctx, c)
	}
	return err
}

// flushArrivals writes out the arrival lines held back.
func (i *Ingester) flushArrivals() {
	if i.cfg.FlushArrivals == nil {
		return
	}
	if err := i.cfg.FlushArrivals(); err != nil {
		// Said where it failed, which may fail again: slog drops a line
		// it cannot write the same way.
		i.log.Warn("write arrival log lines", "err", err)
	}
}

func (i *Ingester) wake() {
	select {
	case i.wakeup <- struct{}{}:
	default:
	}
}

func (i *Ingester) onConnect(c mqtt.Client) {
	i.mu.Lock()
	i.connected = true
	i.connErr, i.subErr = nil, nil
	if w := i.current.Load(); w != nil {
		i.connectedTo = w.broker
	}
	i.generation++
	gen := i.generation
	i.mu.Unlock()
	i.m.Connected.Set(1)
	i.log.Info("connected to broker", "brokers", i.cfg.Brokers)

	filters := make(map[string]byte, len(i.cfg.Filters))
	for _, f := range i.cfg.Filters {
		if i.cfg.ShareGroup != "" {
			f = topic.Share(i.cfg.ShareGroup, f)
		}
		filters[f] = i.cfg.QoS
	}
	if i.probe != nil {
		// QoS 0: see shareprobe.go.
		filters[i.probe.filter] = 0
	}
	for attempt := 1; ; attempt++ {
		err := subscribe(c, filters)
		if err == nil {
			break
		}
		i.mu.Lock()
		if i.generation == gen {
			i.subErr = err
		}
		i.mu.Unlock()
		i.log.Error("subscribe failed", "filters", keys(filters), "attempt", attempt, "err", err)
		if !i.live(gen) {
			return
		}
		select {
		case <-i.stopped.Done():
			return
		case <-time.After(min(time.Duration(attempt)*time.Second, 10*time.Second)):
		}
		if !i.live(gen) {
			return
		}
	}
	if i.probe != nil {
		// Begun before the subscriptions count as acknowledged, so that
		// /readyz never sees an earlier connection's confirmation.
		nonce, back := i.probe.begin(gen)
		go i.checkShareGroup(gen, nonce, back)
	}
	i.mu.Lock()
	if i.generation == gen && i.connected {
		i.subscribed, i.subErr = true, nil
		i.m.Subscribed.Set(1)
	}
	i.mu.Unlock()
	i.log.Info("subscribed", "filters", keys(filters), "qos", i.cfg.QoS)
	if err := i.publishStatus("online", 10*time.Second); err != nil {
		i.log.Warn("publish online status", "topic", i.cfg.StatusTopic, "err", err)
	}
}

// live reports whether the connection gen is still the live one.
func (i *Ingester) live(gen int) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.generation == gen && i.connected
}

func subscribe(c mqtt.Client, filters map[string]byte) error {
	tok := c.SubscribeMultiple(filters, nil) // nil: arrivals go to the default handler
	if !tok.WaitTimeout(10 * time.Second) {
		return errors.New("no SUBACK within 10s")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	st, ok := tok.(*mqtt.SubscribeToken)
	if !ok {
		return nil
	}
	for f, code := range st.Result() {
		if code == 0x80 {
			// Paho names a shared subscription by its filter alone.
			return fmt.Errorf("broker refused %q (SUBACK 0x80)", f)
		}
	}
	return nil
}

func keys(m map[string]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func (i *Ingester) onConnectionLost(_ mqtt.Client, err error) {
	i.mu.Lock()
	i.connected, i.subscribed = false, false
	i.connErr = fmt.Errorf("connection lost: %w", err)
	i.mu.Unlock()
	i.m.Connected.Set(0)
	i.m.Subscribed.Set(0)
	i.log.Warn("connection to broker lost", "err", err)
}

// onReconnecting runs before each reconnect attempt: it tries the brokers
// starting with the one after the broker it lost (mqttconn.RotateAfter;
// Paho reads the list from o).
func (i *Ingester) onReconnecting(_ mqtt.Client, o *mqtt.ClientOptions) {
	i.mu.Lock()
	last := i.connectedTo
	i.mu.Unlock()
	o.Servers = mqttconn.RotateAfter(o.Servers, last)
}

// onNotification says why connection attempts fail (a wrong password, an
// untrusted certificate, a port that does not speak MQTT): at WARN once
// every 30 seconds, at DEBUG in between, and on /readyz.
func (i *Ingester) onNotification(_ mqtt.Client, n mqtt.ConnectionNotification) {
	var err error
	broker := ""
	switch n := n.(type) {
	case mqtt.ConnectionNotificationBrokerFailed:
		err, broker = n.Reason, n.Broker.String()
	case mqtt.ConnectionNotificationFailed:
		err = n.Reason
	default:
		return
	}
	i.mu.Lock()
	i.connErr = err
	warn := time.Since(i.failWarned) >= 30*time.Second
	if warn {
		i.failWarned = time.Now()
	}
	i.mu.Unlock()
	level := slog.LevelDebug
	if warn {
		level = slog.LevelWarn
	}
	i.log.Log(context.Background(), level, "connection attempt failed", "broker", broker, "err", err)
}

func (i *Ingester) publishStatus(status string, timeout time.Duration) error {
	tok := i.client.Publish(i.cfg.StatusTopic, 1, true, status)
	if !tok.WaitTimeout(timeout) {
		return fmt.Errorf("publish %s: no PUBACK within %s", status, timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish %s: %w", status, err)
	}
	return nil
}

// handle runs on paho's router goroutine for every arrival: log it and hand
// it to the writer. It never acknowledges.
func (i *Ingester) handle(_ mqtt.Client, msg mqtt.Message) {
	if msg.Qos() == 0 && topic.IsShareProbe(msg.Topic()) {
		i.shareProbeArrived(msg.Topic(), msg.Payload())
		return
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	payload := msg.Payload()
	// LogAttrs with typed attributes: no []any to build and convert per
	// message, and nothing at all (not even the payload copy) when INFO
	// is off.
	if ctx := context.Background(); i.arrivals.Enabled(ctx, slog.LevelInfo) {
		shown, enc := logPayload(payload, i.cfg.LogPayloadBytes)
		i.arrivals.LogAttrs(ctx, slog.LevelInfo, "message arrived",
			slog.String("topic", msg.Topic()), slog.Int("qos", int(msg.Qos())), slog.Bool("retained", msg.Retained()),
			slog.Bool("duplicate", msg.Duplicate()), slog.Int("bytes", len(payload)),
			slog.String("payload", shown), slog.String("encoding", enc))
	}
	i.received[msg.Qos()%3].Inc()
	if msg.Duplicate() {
		i.m.Redeliveries.Inc()
	}
	// Paho ends a connection's deliveries before it dials the next: the
	// current connection is the one this message came on.
	w := i.current.Load()
	a := &arrival{
		msg: store.Message{
			Topic: msg.Topic(), Payload: payload, QoS: msg.Qos(), Retained: msg.Retained(),
			ReceivedAt: now, ClientID: i.cfg.ClientID, PacketID: msg.MessageID(),
		},
		dup:  msg.Duplicate(),
		wire: w,
		seq:  w.seq.Add(1),
		ack:  msg,
	}
	if a.msg.QoS > 0 {
		a.hash = contentHash(a.msg.Topic, payload)
	}
	select {
	case <-i.stopped.Done():
		// Not acknowledged: the broker redelivers it to the session.
		i.m.RefusedWhileStopped.Inc()
		return
	default:
	}
	// Like a full queue, a full room holds Paho's reader back, and the
	// broker keeps what it has not sent.
	a.held = min(int64(len(payload)+len(a.msg.Topic))+arrivalSize, int64(i.cfg.QueueBytes))
	if i.room.Acquire(i.stopped, a.held) != nil {
		i.m.RefusedWhileStopped.Inc()
		return
	}
	select {
	case i.queue <- a:
		i.m.QueueDepth.Set(float64(len(i.queue)))
	case <-i.stopped.Done():
		i.room.Release(a.held)
		i.m.RefusedWhileStopped.Inc()
	}
}

// arrivalSize is about what an arrival takes besides its topic and
// payload (it, its record, Paho's message and packet).
const arrivalSize = 512

// logPayload returns at most n bytes of p for a log line: text when p is
// UTF-8 (cut at a character boundary), else base64. The text shares p's
// memory rather than copying it (an allocation per message): it is for a
// line logged at once, and an arrival's payload is never written to.
func logPayload(p []byte, n int) (shown, encoding string) {
	if utf8.Valid(p) {
		if len(p) > n {
			p = p[:n]
			for len(p) > 0 && !utf8.Valid(p) {
				p = p[:len(p)-1]
			}
		}
		return unsafe.String(unsafe.SliceData(p), len(p)), "text"
	}
	if len(p) > n {
		p = p[:n]
	}
	return base64.StdEncoding.EncodeToString(p), "base64"
}
