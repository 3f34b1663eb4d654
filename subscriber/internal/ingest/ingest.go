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
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/metrics"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// Store is what ingest needs of a store.
type Store interface {
	Insert(ctx context.Context, msgs []store.Message) error
	LatestByPacketID(ctx context.Context, clientID string, packetID uint16, max int) (store.Redelivery, error)
	BatchIDs(ctx context.Context, key int64, since time.Time) ([]int64, error)
}

// Config configures an Ingester.
type Config struct {
	Broker      string
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
	// MaxBatch bounds the messages committed in one transaction (500).
	MaxBatch int
	// Queue is how many arrivals may wait for the writer (1000).
	Queue int
	// ShutdownTimeout bounds committing what is queued at shutdown (10s).
	ShutdownTimeout time.Duration
	// Committed, when set, is called by the writer after each commit with
	// the stored messages (ids set), e.g. to feed a live stream.
	Committed func([]store.Message)
}

// arrival is a received message waiting for the writer.
type arrival struct {
	msg  store.Message
	dup  bool   // the DUP flag: the broker says it may have sent this before
	conn uint64 // the connection it came on (see Ingester.conn)
	ack  func()
}

// Ingester owns the MQTT client and the writer.
type Ingester struct {
	log *slog.Logger
	cfg Config
	st  Store
	m   *metrics.Metrics

	received [3]prometheus.Counter // m.Received by QoS, looked up once

	client   mqtt.Client
	queue    chan arrival
	stopping chan struct{} // closed when shutdown begins

	mu         sync.Mutex
	connected  bool
	subscribed bool
	generation int // counts connections, so a stale OnConnect cannot mark a newer one subscribed

	storeErr atomic.Pointer[error] // the last commit error, nil while commits succeed

	// conn counts connection attempts. It moves on before each dial, so
	// every arrival of a connection carries that connection's number.
	conn atomic.Uint64
	// replay is the writer's state at the start of a connection; only the
	// goroutine running Run touches it.
	replay replay
}

// New builds the client; nothing connects before Run.
func New(log *slog.Logger, cfg Config, st Store, m *metrics.Metrics) *Ingester {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 500
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1000
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	i := &Ingester{
		log: log, cfg: cfg, st: st, m: m,
		queue:    make(chan arrival, cfg.Queue),
		stopping: make(chan struct{}),
	}
	for q := range i.received {
		i.received[q] = m.Received.WithLabelValues(strconv.Itoa(q))
	}
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		// A persistent session: the broker keeps our subscriptions and
		// queues QoS 1 and 2 messages while we are away.
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true). // start while the broker is down
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(5*time.Second).
		SetConnectTimeout(10*time.Second).
		SetKeepAlive(30*time.Second).
		SetPingTimeout(10*time.Second).
		SetWriteTimeout(10*time.Second).
		SetOrderMatters(true). // the handler only enqueues; keep arrival order
		// The writer acknowledges after the commit, never paho.
		SetAutoAckDisabled(true).
		// Registered before connecting: a persistent session delivers
		// its queued messages right after CONNACK, before any SUBSCRIBE.
		SetDefaultPublishHandler(i.handle).
		SetOnConnectHandler(i.onConnect).
		// Called before each dial, unlike OnConnect, which may run after
		// the new session's first arrivals.
		SetConnectionAttemptHandler(func(_ *url.URL, tlsCfg *tls.Config) *tls.Config {
			i.conn.Add(1)
			return tlsCfg
		}).
		SetConnectionLostHandler(i.onConnectionLost).
		SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) {
			i.log.Debug("reconnecting to broker", "broker", cfg.Broker)
		}).
		SetWill(cfg.StatusTopic, "offline", 1, true)
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	i.client = mqtt.NewClient(opts)
	return i
}

// Ready reports why the subscriber cannot take messages, or nil.
func (i *Ingester) Ready() error {
	i.mu.Lock()
	connected, subscribed := i.connected, i.subscribed
	i.mu.Unlock()
	switch {
	case !connected:
		return errors.New("not connected to the broker")
	case !subscribed:
		return errors.New("subscriptions not acknowledged")
	}
	if p := i.storeErr.Load(); p != nil {
		return fmt.Errorf("store commits failing: %w", *p)
	}
	return nil
}

// Run connects and writes arrivals until ctx ends, then shuts down: it stops
// taking messages, commits and acknowledges what is queued, publishes
// offline and disconnects.
func (i *Ingester) Run(ctx context.Context) error {
	i.log.Info("connecting to broker", "broker", i.cfg.Broker, "client_id", i.cfg.ClientID)
	// With ConnectRetry the token completes only once connected; the
	// client keeps trying in the background meanwhile.
	i.client.Connect()
	pending := i.write(ctx)
	return i.shutdown(pending)
}

func (i *Ingester) onConnect(c mqtt.Client) {
	i.mu.Lock()
	i.connected = true
	i.generation++
	gen := i.generation
	i.mu.Unlock()
	i.m.Connected.Set(1)
	i.log.Info("connected to broker", "broker", i.cfg.Broker)

	filters := make(map[string]byte, len(i.cfg.Filters))
	for _, f := range i.cfg.Filters {
		if i.cfg.ShareGroup != "" {
			f = topic.Share(i.cfg.ShareGroup, f)
		}
		filters[f] = i.cfg.QoS
	}
	for attempt := 1; ; attempt++ {
		err := subscribe(c, filters)
		if err == nil {
			break
		}
		i.log.Error("subscribe failed", "filters", keys(filters), "attempt", attempt, "err", err)
		if !i.current(gen) {
			return
		}
		select {
		case <-i.stopping:
			return
		case <-time.After(min(time.Duration(attempt)*time.Second, 10*time.Second)):
		}
		if !i.current(gen) {
			return
		}
	}
	i.mu.Lock()
	if i.generation == gen && i.connected {
		i.subscribed = true
		i.m.Subscribed.Set(1)
	}
	i.mu.Unlock()
	i.log.Info("subscribed", "filters", keys(filters), "qos", i.cfg.QoS)
	if err := i.publishStatus("online", 10*time.Second); err != nil {
		i.log.Warn("publish online status", "topic", i.cfg.StatusTopic, "err", err)
	}
}

// current reports whether the connection gen is still the live one.
func (i *Ingester) current(gen int) bool {
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
			return fmt.Errorf("broker refused %q", f)
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
	i.mu.Unlock()
	i.m.Connected.Set(0)
	i.m.Subscribed.Set(0)
	i.log.Warn("connection to broker lost", "broker", i.cfg.Broker, "err", err)
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
	now := time.Now().UTC().Truncate(time.Microsecond)
	payload := msg.Payload()
	// LogAttrs with typed attributes: no []any to build and convert per
	// message, and nothing at all (not even the payload copy) when INFO
	// is off.
	if ctx := context.Background(); i.log.Enabled(ctx, slog.LevelInfo) {
		shown, enc := logPayload(payload, i.cfg.LogPayloadBytes)
		i.log.LogAttrs(ctx, slog.LevelInfo, "message arrived",
			slog.String("topic", msg.Topic()), slog.Int("qos", int(msg.Qos())), slog.Bool("retained", msg.Retained()),
			slog.Bool("duplicate", msg.Duplicate()), slog.Int("bytes", len(payload)),
			slog.String("payload", shown), slog.String("encoding", enc))
	}
	i.received[msg.Qos()%3].Inc()
	if msg.Duplicate() {
		i.m.Redeliveries.Inc()
	}
	a := arrival{
		msg: store.Message{
			Topic: msg.Topic(), Payload: payload, QoS: msg.Qos(), Retained: msg.Retained(),
			ReceivedAt: now, ClientID: i.cfg.ClientID, PacketID: msg.MessageID(),
		},
		dup:  msg.Duplicate(),
		conn: i.conn.Load(),
		ack:  msg.Ack,
	}
	select {
	case <-i.stopping:
		// Not acknowledged: the broker redelivers it to the session.
		i.m.RefusedWhileStopped.Inc()
		return
	default:
	}
	select {
	case i.queue <- a:
		i.m.QueueDepth.Set(float64(len(i.queue)))
	case <-i.stopping:
		i.m.RefusedWhileStopped.Inc()
	}
}

// logPayload returns at most n bytes of p for a log line: text when p is
// UTF-8 (cut at a character boundary), else base64.
func logPayload(p []byte, n int) (shown, encoding string) {
	if utf8.Valid(p) {
		if len(p) > n {
			p = p[:n]
			for len(p) > 0 && !utf8.Valid(p) {
				p = p[:len(p)-1]
			}
		}
		return string(p), "text"
	}
	if len(p) > n {
		p = p[:n]
	}
	return base64.StdEncoding.EncodeToString(p), "base64"
}
