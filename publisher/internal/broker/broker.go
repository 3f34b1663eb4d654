// Package broker is the publisher's MQTT adapter: one Eclipse Paho client
// that keeps itself connected, announces its status and publishes messages
// with a bounded wait for their acknowledgement.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-stack/mqtt-stack/mqttconn"
	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// The errors Publish returns, under the names this package's callers expect.
var (
	ErrNotConnected   = message.ErrNotConnected
	ErrConnectionLost = message.ErrConnectionLost
	ErrTimeout        = message.ErrTimeout
)

// Status payloads on the status topic.
const (
	statusOnline  = "online"
	statusOffline = "offline"
)

// Options configure a Client.
type Options struct {
	// Brokers are tried in turn at each connection attempt.
	Brokers     []string
	ClientID    string
	Username    string
	Password    string
	TLS         *tls.Config
	StatusTopic string
	// PublishTimeout bounds the wait for an acknowledgement.
	PublishTimeout time.Duration
	// MaxInflight is the most QoS 1 and 2 publishes awaiting the broker's
	// acknowledgement at once (1 to 65535); more wait their turn.
	MaxInflight int
	// Registerer receives the client's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Client publishes to one broker. It is safe for concurrent use.
type Client struct {
	log     *slog.Logger
	mqtt    mqtt.Client
	opts    Options
	metrics *metrics
	// inflight holds a slot per QoS 1 or 2 publish that Paho keeps until
	// the broker acknowledges it; it is Paho's store.
	inflight *inflight

	mu sync.Mutex
	// conn is the network connection of the latest attempt to connect.
	conn *mqttconn.Conn
	// lost is closed when the current connection drops, which ends every
	// wait for an acknowledgement sent on it: with auto reconnect, Paho keeps
	// such tokens open until a later session resends the message.
	lost     chan struct{}
	connects int
	// connectedTo is the broker of the latest connection that was made:
	// after losing it, the next attempt starts with the broker after it.
	connectedTo string
	// timeoutErr is what a publish that timed out returns.
	timeoutErr error
	// lastFailWarn rate-limits the warning for failed connection attempts,
	// which come every second or so while the broker is away.
	lastFailWarn time.Time
}

// New makes a client and starts connecting in the background: it retries
// until the broker answers and reconnects whenever the connection drops, so
// the publisher can start before the broker. Close stops it.
func New(log *slog.Logger, o Options) (*Client, error) {
	if o.MaxInflight < 1 || o.MaxInflight > message.MaxInflight {
		return nil, fmt.Errorf("max in-flight publishes must be between 1 and %d, got %d", message.MaxInflight, o.MaxInflight)
	}
	f := newInflight(o.MaxInflight)
	m, err := newMetrics(o.Registerer, f)
	if err != nil {
		return nil, err
	}
	c := &Client{log: log, opts: o, metrics: m, inflight: f, lost: closedChan(),
		timeoutErr: fmt.Errorf("%w (PUBLISH_TIMEOUT %s)", ErrTimeout, o.PublishTimeout)}

	po := mqtt.NewClientOptions().
		SetClientID(o.ClientID).
		// MQTT 3.1.1 only: Paho would otherwise retry a refused connection
		// as MQTT 3.1, which brokers such as NATS refuse.
		SetProtocolVersion(4).
		SetUsername(o.Username).
		SetPassword(o.Password).
		SetCleanSession(true).
		// The same timing as the subscriber's (see mqttconn).
		SetKeepAlive(mqttconn.KeepAlive).
		SetPingTimeout(mqttconn.PingTimeout).
		SetConnectTimeout(mqttconn.ConnectTimeout).
		SetConnectRetry(true).
		SetConnectRetryInterval(mqttconn.ConnectRetryInterval).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(mqttconn.MaxReconnectInterval).
		// Counts the publishes awaiting acknowledgement (see inflight).
		SetStore(f).
		// Publish blocks while Paho hands the packet to its writer; bound it
		// like the acknowledgement.
		SetWriteTimeout(o.PublishTimeout).
		SetBinaryWill(o.StatusTopic, []byte(statusOffline), 1, true).
		SetOnConnectHandler(c.onConnect).
		SetConnectionLostHandler(c.onConnectionLost).
		SetReconnectingHandler(c.onReconnecting).
		SetConnectionNotificationHandler(c.onNotification).
		// Buffered reads and coalesced writes, with the publish timeout
		// for each write(2) (see mqttconn.Conn).
		SetCustomOpenConnectionFn(mqttconn.Open(o.PublishTimeout, c.opened))
	for _, b := range o.Brokers {
		po.AddBroker(b)
	}
	if o.TLS != nil {
		po.SetTLSConfig(o.TLS)
	}
	c.mqtt = mqtt.NewClient(po)
	// With ConnectRetry the token completes only once connected (or after
	// Disconnect), and failures arrive through onNotification, so there is
	// nothing to wait for here.
	c.mqtt.Connect()
	log.Info("mqtt connecting", "brokers", o.Brokers, "client_id", o.ClientID)
	return c, nil
}

// broker is the URL of the latest connection attempt's broker.
func (c *Client) broker() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return ""
	}
	return c.conn.Broker
}

// opened records the network connection of a connection attempt.
func (c *Client) opened(wc *mqttconn.Conn) {
	c.mu.Lock()
	c.conn = wc
	c.mu.Unlock()
}

func closedChan() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

func (c *Client) onConnect(client mqtt.Client) {
	c.mu.Lock()
	c.lost = make(chan struct{})
	c.connects++
	if c.conn != nil {
		c.connectedTo = c.conn.Broker
	}
	reconnect := c.connects > 1
	c.mu.Unlock()

	c.metrics.connected.Set(1)
	if reconnect {
		c.metrics.reconnects.Inc()
	}
	c.log.Info("mqtt connected", "broker", c.broker(), "reconnect", reconnect)

	// The will covers a crash; this replaces the retained offline left by it
	// or by a graceful stop. It is a QoS 1 publish like any other: it takes
	// a slot, which publishes sent again after a reconnect may hold a moment.
	// Paho's callback has no context; the timer bounds the wait.
	d := deadline{ctx: context.Background(), timer: time.NewTimer(c.opts.PublishTimeout), err: c.timeoutErr}
	defer d.timer.Stop()
	if _, err := c.inflight.acquire(&d, nil); err != nil {
		c.log.Warn("mqtt status not published", "topic", c.opts.StatusTopic, "status", statusOnline, "err", err)
		return
	}
	t := c.publishHolding(c.opts.StatusTopic, 1, true, []byte(statusOnline))
	if !t.WaitTimeout(c.opts.PublishTimeout) {
		c.log.Warn("mqtt status not acknowledged", "topic", c.opts.StatusTopic, "status", statusOnline, "timeout", c.opts.PublishTimeout)
		return
	}
	if err := t.Error(); err != nil {
		c.log.Warn("mqtt status publish failed", "topic", c.opts.StatusTopic, "status", statusOnline, "err", err)
	}
}

func (c *Client) onConnectionLost(_ mqtt.Client, err error) {
	c.markLost()
	c.log.Warn("mqtt connection lost", "broker", c.broker(), "err", err)
}

// onReconnecting runs in Paho's reconnect goroutine before each attempt, so
// before a new session resends (and completes the tokens of) what the old one
// left unacknowledged. onConnectionLost runs in a goroutine of its own and
// may come later. The attempt tries the brokers starting with the one after
// the broker it lost (mqttconn.RotateAfter): Paho reads the list from o.
func (c *Client) onReconnecting(_ mqtt.Client, o *mqtt.ClientOptions) {
	c.markLost()
	c.mu.Lock()
	last := c.connectedTo
	c.mu.Unlock()
	o.Servers = mqttconn.RotateAfter(o.Servers, last)
}

func (c *Client) markLost() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.lost:
	default:
		close(c.lost)
	}
	c.metrics.connected.Set(0)
}

func (c *Client) onNotification(_ mqtt.Client, n mqtt.ConnectionNotification) {
	switch n := n.(type) {
	case mqtt.ConnectionNotificationFailed:
		c.mu.Lock()
		warn := time.Since(c.lastFailWarn) >= 30*time.Second
		if warn {
			c.lastFailWarn = time.Now()
		}
		c.mu.Unlock()
		logf := c.log.Debug
		if warn {
			logf = c.log.Warn
		}
		logf("mqtt connect failed", "brokers", c.opts.Brokers, "err", n.Reason)
	case mqtt.ConnectionNotificationBrokerFailed:
		c.log.Debug("mqtt connect attempt failed", "broker", n.Broker.String(), "err", n.Reason)
	case mqtt.ConnectionNotificationConnecting:
		c.log.Debug("mqtt connect attempt", "brokers", c.opts.Brokers, "reconnect", n.IsReconnect, "attempt", n.Attempt)
	}
}

// Connected reports whether the connection to the broker is open.
func (c *Client) Connected() bool {
	_, _, ok := c.connection()
	return ok
}

// connection returns the current connection's lost channel and whether it
// is open. Paho's IsConnected is true while it retries, and Publish would
// then queue the message for later; only an open connection counts here.
func (c *Client) connection() (<-chan struct{}, *mqttconn.Conn, bool) {
	if !c.mqtt.IsConnectionOpen() {
		return nil, nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.lost:
		return nil, nil, false
	default:
		return c.lost, c.conn, true
	}
}

// Publish sends m and waits for it to complete: written to the connection
// for QoS 0, PUBACK for QoS 1, PUBCOMP for QoS 2. It returns ErrNotConnected
// at once when the connection is not open, ErrConnectionLost when it drops
// during the wait and ErrTimeout when the wait exceeds the publish timeout.
func (c *Client) Publish(ctx context.Context, m message.Message) error {
	return c.PublishAll(ctx, []message.Message{m})[0]
}

// PublishAll sends the messages in order, each QoS 1 or 2 one as soon as it
// has a slot (MaxInflight), and only then waits for the acknowledgements: a
// batch is pipelined as far as the slots allow, instead of costing a round
// trip per message. One publish timeout bounds the whole batch, waits for
// slots included. The result has an error, or nil, per message; a message
// whose error is ErrNotConnected, or ErrTimeout before it was sent, never
// left the publisher.
func (c *Client) PublishAll(ctx context.Context, msgs []message.Message) []error {
	// A timer rather than a context with a deadline: a derived context
	// registers with the request's and cost a few per cent of a publish.
	d := deadline{ctx: ctx, timer: time.NewTimer(c.opts.PublishTimeout), err: c.timeoutErr}
	defer d.timer.Stop()

	type pending struct {
		token mqtt.Token
		lost  <-chan struct{}
		conn  *mqttconn.Conn
		start time.Time
	}
	errs := make([]error, len(msgs))
	sent := make([]pending, len(msgs))
	for i, m := range msgs {
		if err := d.check(); err != nil {
			errs[i] = err
			continue
		}
		lost, conn, ok := c.connection()
		if !ok {
			errs[i] = ErrNotConnected
			continue
		}
		if m.QoS > 0 {
			waited, err := c.inflight.acquire(&d, lost)
			if waited > 0 {
				c.metrics.inflightWait.Observe(waited.Seconds())
			}
			if err != nil {
				errs[i] = err
				continue
			}
			if waited > 0 {
				// The connection may have dropped while this waited.
				if lost, conn, ok = c.connection(); !ok {
					c.inflight.release()
					errs[i] = ErrNotConnected
					continue
				}
			}
		}
		sent[i] = pending{token: c.publishHolding(m.Topic, m.QoS, m.Retain, m.Payload), lost: lost, conn: conn, start: time.Now()}
	}
	for i, s := range sent {
		if s.token == nil {
			c.metrics.observe(msgs[i].QoS, errs[i], 0)
			continue
		}
		errs[i] = wait(&d, s.token, s.lost)
		if errs[i] == nil && msgs[i].QoS == 0 && s.conn != nil {
			// Paho completes a QoS 0 token once the packet is handed to
			// the connection; it is complete once written out.
			errs[i] = waitWritten(s.conn, &d, s.lost)
		}
		if errs[i] != nil {
			errs[i] = fmt.Errorf("publish %s: %w", msgs[i].Topic, errs[i])
		}
		c.metrics.observe(msgs[i].QoS, errs[i], time.Since(s.start))
	}
	return errs
}

// publishHolding hands a publish to Paho. For QoS 1 and 2 the caller holds
// a slot: Paho's store takes it over when Paho keeps the message, and it is
// given back here when Paho refused the message before keeping it (it
// assigns a packet identifier just before it stores).
func (c *Client) publishHolding(topic string, qos byte, retain bool, payload []byte) mqtt.Token {
	t := c.mqtt.Publish(topic, qos, retain, payload)
	if qos > 0 {
		if pt, ok := t.(*mqtt.PublishToken); !ok || pt.MessageID() == 0 {
			c.inflight.release()
		}
	}
	return t
}

// waitWritten waits until everything given to wc so far has been written
// out, a write has failed, lost is closed or d passes.
func waitWritten(wc *mqttconn.Conn, d *deadline, lost <-chan struct{}) error {
	n := wc.Queued()
	for {
		done, next, err := wc.Written(n)
		switch {
		case err != nil:
			return ErrConnectionLost
		case done:
			return nil
		}
		if _, err := d.wait(next, lost); err != nil {
			return err
		}
	}
}

// deadline ends a wait when the publish timeout passes (err) or the
// request's context ends (its cause).
type deadline struct {
	ctx     context.Context
	timer   *time.Timer
	err     error
	expired bool
}

// check returns the reason the wait is over, or nil.
func (d *deadline) check() error {
	if d.expired {
		return d.err
	}
	if err := d.ctx.Err(); err != nil {
		return context.Cause(d.ctx)
	}
	select {
	case <-d.timer.C:
		d.expired = true
		return d.err
	default:
		return nil
	}
}

// wait blocks until ch is closed (true) or the deadline passes (false).
func (d *deadline) wait(ch <-chan struct{}, lost <-chan struct{}) (done bool, err error) {
	if d.expired {
		return false, d.err
	}
	select {
	case <-ch:
		return true, nil
	case <-lost:
		return false, ErrConnectionLost
	case <-d.ctx.Done():
		return false, context.Cause(d.ctx)
	case <-d.timer.C:
		d.expired = true
		return false, d.err
	}
}

func wait(d *deadline, t mqtt.Token, lost <-chan struct{}) error {
	if _, err := d.wait(t.Done(), lost); err != nil {
		if errors.Is(err, ErrConnectionLost) {
			return err
		}
		// A token that completed meanwhile still counts.
		select {
		case <-t.Done():
		default:
			return err
		}
	}
	if err := t.Error(); err != nil {
		select {
		case <-lost:
			// Whatever Paho says (a failed write, its writer gone before
			// it took the packet), the connection is what failed.
			return fmt.Errorf("%w (%v)", ErrConnectionLost, withoutAddrs(err))
		default:
			return tokenError(err)
		}
	}
	// After a reconnect Paho resends what was unacknowledged and completes
	// the original token, without error, as it does so: a token completed
	// once its connection was lost proves nothing. (A PUBACK that came just
	// before the loss is reported lost too; the client retries, at least
	// once.)
	select {
	case <-lost:
		return ErrConnectionLost
	default:
		return nil
	}
}

// pahoWriteTimeout is the error Paho completes a publish token with when
// its writer did not take the packet within the write timeout.
const pahoWriteTimeout = "publish was broken by timeout"

// tokenError is the domain's word for the error Paho completed a publish
// token with. Paho has no sentinels for most of them; what it reports for a
// publish is a failed write (broken pipe, reset, closed connection), the
// connection lost before the acknowledgement, the connection not open when
// the publish was made, or its writer not taking the packet in time (on a
// connection that is still open: wait checks that first). Every failure of
// the connection is ErrConnectionLost: the message may or may not have
// reached the broker, and the caller must not mistake it for a fault of the
// publisher.
func tokenError(err error) error {
	switch {
	case errors.Is(err, mqtt.ErrNotConnected):
		return ErrNotConnected
	case err.Error() == pahoWriteTimeout:
		return fmt.Errorf("%w (%v)", ErrTimeout, err)
	}
	return fmt.Errorf("%w (%v)", ErrConnectionLost, withoutAddrs(err))
}

// withoutAddrs is the failure of a *net.OpError without its addresses: the
// answer's detail is the client's to read, the network's layout is not.
func withoutAddrs(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// Close announces offline on the status topic (a graceful disconnect does
// not trigger the will) and disconnects, within ctx and the publish timeout.
func (c *Client) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.PublishTimeout)
	defer cancel()
	var err error
	if lost, _, ok := c.connection(); ok {
		d := deadline{ctx: ctx, timer: time.NewTimer(c.opts.PublishTimeout), err: c.timeoutErr}
		defer d.timer.Stop()
		if _, aerr := c.inflight.acquire(&d, lost); aerr != nil {
			return c.disconnect(ctx, fmt.Errorf("publish offline status: %w", aerr))
		}
		t := c.publishHolding(c.opts.StatusTopic, 1, true, []byte(statusOffline))
		select {
		case <-t.Done():
			if terr := t.Error(); terr != nil {
				err = fmt.Errorf("publish offline status: %w", terr)
			}
		case <-ctx.Done():
			err = fmt.Errorf("publish offline status: %w", context.Cause(ctx))
		}
	}
	return c.disconnect(ctx, err)
}

// disconnect closes the connection, giving Paho a moment within ctx to
// write what it has, and returns err.
func (c *Client) disconnect(ctx context.Context, err error) error {
	quiesce := 250 * time.Millisecond
	if d, ok := ctx.Deadline(); ok {
		quiesce = min(quiesce, max(time.Until(d), 0))
	}
	c.mqtt.Disconnect(uint(quiesce.Milliseconds()))
	c.markLost()
	c.log.Info("mqtt disconnected", "broker", c.broker())
	return err
}

type metrics struct {
	publishes    *prometheus.CounterVec
	ackSeconds   *prometheus.HistogramVec
	connected    prometheus.Gauge
	reconnects   prometheus.Counter
	inflight     prometheus.GaugeFunc
	inflightMax  prometheus.Gauge
	inflightWait prometheus.Histogram

	// The children of every label value, resolved once: observe runs per
	// message.
	ack     [3]prometheus.Observer
	results map[string]*[3]prometheus.Counter
}

var publishResults = []string{"ok", "not_connected", "connection_lost", "timeout", "error"}

func newMetrics(reg prometheus.Registerer, f *inflight) (*metrics, error) {
	m := &metrics{
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_mqtt_publishes_total",
			Help: "MQTT publishes by result (ok, not_connected, connection_lost, timeout, error) and QoS.",
		}, []string{"result", "qos"}),
		ackSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "publisher_mqtt_ack_seconds",
			Help:    "Time from sending a publish to its completion (written, PUBACK or PUBCOMP), by QoS.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"qos"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "publisher_mqtt_connected",
			Help: "1 while the connection to the broker is open, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "publisher_mqtt_reconnects_total",
			Help: "Connections made to the broker after the first.",
		}),
		inflight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "publisher_mqtt_inflight",
			Help: "QoS 1 and 2 publishes awaiting the broker's acknowledgement (sent, or about to be).",
		}, func() float64 { return float64(f.inUse()) }),
		inflightMax: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "publisher_mqtt_inflight_max",
			Help: "MQTT_MAX_INFLIGHT: the most QoS 1 and 2 publishes awaiting acknowledgement at once.",
		}),
		inflightWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "publisher_mqtt_inflight_wait_seconds",
			Help:    "Time a QoS 1 or 2 publish waited for one of the MQTT_MAX_INFLIGHT slots, for the publishes that had to wait.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		results: make(map[string]*[3]prometheus.Counter, len(publishResults)),
	}
	m.inflightMax.Set(float64(cap(f.slots)))
	for _, r := range publishResults {
		m.results[r] = new([3]prometheus.Counter)
	}
	for q := range 3 {
		qs := strconv.Itoa(q)
		m.ack[q] = m.ackSeconds.WithLabelValues(qs)
		for _, r := range publishResults {
			m.results[r][q] = m.publishes.WithLabelValues(r, qs)
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.publishes, m.ackSeconds, m.connected, m.reconnects, m.inflight, m.inflightMax, m.inflightWait} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register broker metrics: %w", err)
			}
		}
	}
	return m, nil
}

// observe counts a publish by result. qos is 0, 1 or 2: messages are
// validated before they get here.
func (m *metrics) observe(qos byte, err error, d time.Duration) {
	q := min(int(qos), 2)
	result := "ok"
	switch {
	case err == nil:
		m.ack[q].Observe(d.Seconds())
	case errors.Is(err, ErrNotConnected):
		result = "not_connected"
	case errors.Is(err, ErrConnectionLost):
		result = "connection_lost"
	case errors.Is(err, ErrTimeout):
		result = "timeout"
	default:
		result = "error"
	}
	m.results[result][q].Inc()
}
