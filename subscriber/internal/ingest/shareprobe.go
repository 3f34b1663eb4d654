package ingest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// A share group on a broker without shared subscriptions loses data in
// silence: NATS and RabbitMQ 3 grant $share/<group>/<filter> as an
// ordinary subscription to that literal topic and deliver nothing
// published on <filter>, while they acknowledge every publish. So a member
// checks the group after every connect. It subscribes, at QoS 0,
// $share/<group>/clients/<client id>/share-probe, a filter no other member
// subscribes, and publishes a QoS 0 probe to clients/<client id>/share-probe.
// A broker that shares hands the probe to the one member of that filter;
// one that does not never delivers it.
//
// Until the probe is back /readyz is 503. If it is not back within
// ShareProbeTimeout the subscriber says so at ERROR, keeps /readyz at 503
// with the reason, sets subscriber_share_group_unsupported to 1, and sends
// the probe again every ShareProbeTimeout, in case it only waited behind a
// backlog; a probe that comes back late clears all of it.
//
// The probe is QoS 0: no packet id, no acknowledgement, nothing queued for
// an offline session, nothing for the ledger. Every subscriber drops a QoS
// 0 arrival on any client's probe topic instead of storing it: a member
// whose own filters match it gets the others' probes, and so does a
// subscriber without a group that subscribed to #.

// DefaultShareProbeTimeout is how long a member waits for its probe.
const DefaultShareProbeTimeout = 10 * time.Second

type probeState int

const (
	probePending probeState = iota
	probeConfirmed
	probeFailed
)

// shareProbe is the state of a member's check of its share group.
type shareProbe struct {
	group, topic, filter string
	timeout              time.Duration

	mu     sync.Mutex
	gen    int       // the connection being checked
	nonce  string    // the payload of its probes
	sent   time.Time // when its first probe went out
	state  probeState
	back   chan struct{} // closed when a probe of gen comes back
	logged bool          // the first confirmation was logged at INFO
}

func newShareProbe(group, clientID string, timeout time.Duration) *shareProbe {
	t := topic.ShareProbe(clientID)
	return &shareProbe{group: group, topic: t, filter: topic.Share(group, t), timeout: timeout}
}

// begin starts the check of connection gen and returns its nonce and the
// channel closed when its probe is back.
func (p *shareProbe) begin(gen int) (string, <-chan struct{}) {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen, p.nonce, p.sent, p.state = gen, hex.EncodeToString(b[:]), time.Now(), probePending
	p.back = make(chan struct{})
	return p.nonce, p.back
}

// arrived takes a probe that came back with payload, and reports whether
// it confirmed the connection being checked (and, if so, after what wait
// and whether that check had already failed).
func (p *shareProbe) arrived(payload []byte) (ok, late bool, waited time.Duration, first bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.back == nil || string(payload) != p.nonce || p.state == probeConfirmed {
		return false, false, 0, false
	}
	late = p.state == probeFailed
	p.state = probeConfirmed
	close(p.back)
	first = !p.logged
	p.logged = true
	return true, late, time.Since(p.sent), first
}

// fail marks the check of gen failed; false if another connection's check
// has begun or the probe came back meanwhile.
func (p *shareProbe) fail(gen int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gen != gen || p.state != probePending {
		return false
	}
	p.state = probeFailed
	return true
}

// ready says why the group cannot be relied on yet, or nil.
func (p *shareProbe) ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.back == nil {
		return nil // no connection checked yet: not connected either
	}
	switch p.state {
	case probePending:
		return fmt.Errorf("share group %q not confirmed yet: probe sent %v ago", p.group, time.Since(p.sent).Round(time.Millisecond))
	case probeFailed:
		return fmt.Errorf("share group %q: %w (probe on %s not delivered to %s within %v)", p.group, errShareUnsupported, p.topic, p.filter, p.timeout)
	}
	return nil
}

var errShareUnsupported = errors.New("the broker does not honour shared subscriptions, and delivers nothing published on MQTT_TOPICS to this group: " +
	"unset MQTT_SHARE_GROUP and give each subscriber its own MQTT_TOPICS (Mosquitto 2, EMQX, VerneMQ and HiveMQ share; NATS and RabbitMQ 3 do not)")

// checkShareGroup probes the group of connection gen (begun with nonce)
// until its probe is back, another connection begins or the subscriber
// stops.
func (i *Ingester) checkShareGroup(gen int, nonce string, back <-chan struct{}) {
	p := i.probe
	for attempt := 1; ; attempt++ {
		tok := i.client.Publish(p.topic, 0, false, nonce)
		if !tok.WaitTimeout(p.timeout) || tok.Error() != nil {
			i.log.Debug("share group probe not sent", "topic", p.topic, "err", tok.Error())
		}
		select {
		case <-back:
			return
		case <-i.stopped.Done():
			return
		case <-time.After(p.timeout):
		}
		if !i.live(gen) {
			return
		}
		if attempt == 1 && p.fail(gen) {
			i.m.ShareGroupUnsupported.Set(1)
			i.log.Error("share group not honoured by the broker: nothing published on MQTT_TOPICS reaches this subscriber",
				"group", p.group, "filters", i.cfg.Filters, "probe", p.topic, "waited", p.timeout, "err", errShareUnsupported)
			continue
		}
		i.log.Debug("share group probe sent again", "group", p.group, "attempt", attempt+1)
	}
}

// shareProbeArrived takes a QoS 0 arrival on a probe topic: this member's
// own probe confirms its group; any other is dropped.
func (i *Ingester) shareProbeArrived(name string, payload []byte) {
	p := i.probe
	if p == nil || name != p.topic {
		i.log.Debug("share group probe of another subscriber dropped", "topic", name)
		return
	}
	ok, late, waited, first := p.arrived(payload)
	if !ok {
		return
	}
	i.m.ShareGroupUnsupported.Set(0)
	switch {
	case late:
		i.log.Info("share group confirmed after all: the probe came back late", "group", p.group, "waited", waited)
	case first:
		i.log.Info("share group confirmed: the broker delivers shared subscriptions", "group", p.group, "waited", waited)
	default:
		i.log.Debug("share group confirmed", "group", p.group, "waited", waited)
	}
}
