package ingest

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The check of one connection: pending until its own probe is back, failed
// only while pending, confirmed late if the probe comes after the failure;
// a new connection starts over.
func TestShareProbeStates(t *testing.T) {
	p := newShareProbe("workers", "sub-1", DefaultShareProbeTimeout)
	if got, want := p.filter, "$share/workers/clients/sub-1/share-probe"; got != want {
		t.Fatalf("filter %q, want %q", got, want)
	}
	if err := p.ready(); err != nil {
		t.Errorf("before any connection: ready() = %v, want nil", err)
	}

	nonce, back := p.begin(1)
	if err := p.ready(); err == nil || !strings.Contains(err.Error(), "not confirmed yet") {
		t.Errorf("pending: ready() = %v, want not confirmed yet", err)
	}
	if ok, _, _, _ := p.arrived([]byte("another connection's nonce")); ok {
		t.Errorf("a probe with another nonce confirmed the check")
	}
	if ok, late, _, first := p.arrived([]byte(nonce)); !ok || late || !first {
		t.Errorf("own probe: ok %v late %v first %v, want ok, not late, first", ok, late, first)
	}
	select {
	case <-back:
	default:
		t.Errorf("confirmation did not close the channel")
	}
	if err := p.ready(); err != nil {
		t.Errorf("confirmed: ready() = %v, want nil", err)
	}
	if p.fail(1) {
		t.Errorf("a confirmed check was failed")
	}
	if ok, _, _, _ := p.arrived([]byte(nonce)); ok {
		t.Errorf("a second copy confirmed again")
	}

	nonce, _ = p.begin(2)
	if p.fail(1) {
		t.Errorf("the check of connection 2 was failed for connection 1")
	}
	if !p.fail(2) {
		t.Fatalf("a pending check could not be failed")
	}
	if err := p.ready(); !errors.Is(err, errShareUnsupported) || !strings.Contains(err.Error(), "$share/workers/clients/sub-1/share-probe") {
		t.Errorf("failed: ready() = %v, want errShareUnsupported naming the probe filter", err)
	}
	if ok, late, _, first := p.arrived([]byte(nonce)); !ok || !late || first {
		t.Errorf("late probe: ok %v late %v first %v, want ok, late, not first", ok, late, first)
	}
	if err := p.ready(); err != nil {
		t.Errorf("confirmed late: ready() = %v, want nil", err)
	}
}

// A QoS 0 arrival on any client's probe topic is dropped, never queued for
// the store; the member's own probe confirms its group. A QoS 1 message on
// such a topic is a message like any other.
func TestShareProbeArrivalsAreNotStored(t *testing.T) {
	i, _, m := newTestIngester(t)
	i.probe = newShareProbe("workers", "sub", DefaultShareProbeTimeout)
	testWire(t, i, 1, false)
	nonce, _ := i.probe.begin(1)
	i.m.ShareGroupUnsupported.Set(1)

	i.handle(nil, testMessage{topic: "clients/sub-2/share-probe", qos: 0, payload: "x"})
	if err := i.probe.ready(); err == nil {
		t.Errorf("another member's probe confirmed this member's group")
	}
	i.handle(nil, testMessage{topic: "clients/sub/share-probe", qos: 0, payload: nonce})
	if err := i.probe.ready(); err != nil {
		t.Errorf("own probe came back: ready() = %v, want nil", err)
	}
	if got := testutil.ToFloat64(m.ShareGroupUnsupported); got != 0 {
		t.Errorf("subscriber_share_group_unsupported = %v after the probe came back, want 0", got)
	}
	if n := len(i.queue); n != 0 {
		t.Errorf("%d probes queued for the store, want none", n)
	}
	i.handle(nil, testMessage{topic: "clients/sub/share-probe", qos: 1, payload: "data", ack: func() {}})
	if n := len(i.queue); n != 1 {
		t.Errorf("a QoS 1 message on a probe topic: %d queued, want 1", n)
	}
}

// testMessage is an arrival as Paho hands it to the handler.
type testMessage struct {
	topic, payload string
	qos            byte
	ack            func()
}

func (m testMessage) Duplicate() bool   { return false }
func (m testMessage) Qos() byte         { return m.qos }
func (m testMessage) Retained() bool    { return false }
func (m testMessage) Topic() string     { return m.topic }
func (m testMessage) MessageID() uint16 { return 1 }
func (m testMessage) Payload() []byte   { return []byte(m.payload) }
func (m testMessage) Ack() {
	if m.ack != nil {
		m.ack()
	}
}
