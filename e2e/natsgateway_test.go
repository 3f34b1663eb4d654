//go:build natsfacts

package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// What NATS's MQTT gateway does, packet by packet, where the MQTT 3.1.1
// specification leaves a broker room or where NATS departs from it. The
// services must not depend on any of it (CONTRACT.md); these tests measure
// the facts and log them, to be run again when NATSVersion changes:
//
//	go test -tags natsfacts -count=1 -v -run TestNATSGateway .
//
// They take minutes (most wait for ack_wait) and assert little, so they are
// built only with the natsfacts tag: not part of make test.

func wireSub(t *testing.T, addr, id, filter string, qos byte) (*wireClient, bool) {
	t.Helper()
	w, sp := connectWire(t, addr, wireConnect{ClientID: id})
	if got := w.subscribe(1, filter, qos); got != qos {
		t.Fatalf("SUBACK granted %x for %s, want %d", got, filter, qos)
	}
	return w, sp
}

// wirePublish publishes payloads at qos with a clean client of its own and
// completes each flow before it returns.
func wirePublish(t *testing.T, addr, topic string, qos byte, payloads ...string) {
	t.Helper()
	w, _ := connectWire(t, addr, wireConnect{ClientID: fmt.Sprintf("pub-%d", time.Now().UnixNano()), Clean: true})
	for i, p := range payloads {
		id := uint16(i + 1)
		w.publish(topic, qos, false, false, id, p)
		switch qos {
		case 1:
			w.expect(pktPuback, 10*time.Second)
		case 2:
			w.expect(pktPubrec, 10*time.Second)
			w.ack(pktPubrel, id)
			w.expect(pktPubcomp, 10*time.Second)
		}
	}
	w.disconnect()
}

func publishes(ps []wirePacket) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, "; ")
}

func ids(ps []wirePacket) []uint16 {
	var out []uint16
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

// Packet ids toward a persistent session, and redelivery while the client
// stays connected without acknowledging.
func TestNATSGatewayPacketIDs(t *testing.T) {
	n := harness.StartNATS(t, harness.WithMQTTAckWait(2*time.Second))
	sub, _ := wireSub(t, n.Addr(), "pi-sub", "pi/#", 1)

	wirePublish(t, n.Addr(), "pi/t", 1, "a", "b", "c")
	first := sub.collect(500*time.Millisecond, 3)
	t.Logf("first deliveries: %s", publishes(first))
	if len(first) != 3 {
		t.Fatalf("%d deliveries, want 3", len(first))
	}
	again := sub.collect(4*time.Second, 3)
	for _, p := range again {
		t.Logf("redelivered after %v without acks: %s", p.At.Sub(first[0].At).Round(10*time.Millisecond), p)
	}
	for _, p := range again {
		sub.ack(pktPuback, p.ID)
	}
	if rest := sub.collect(3*time.Second, 10); len(rest) > 0 {
		t.Logf("after the acks still: %s", publishes(rest))
	}

	// One at a time, each acknowledged before the next is published.
	var one []uint16
	for i := range 3 {
		wirePublish(t, n.Addr(), "pi/t", 1, fmt.Sprint("single-", i))
		p := sub.expect(pktPublish, 5*time.Second)
		one = append(one, p.ID)
		sub.ack(pktPuback, p.ID)
	}
	t.Logf("ids of messages acknowledged one at a time: %v", one)

	// The same session after a reconnect: does the counter go on?
	sub.disconnect()
	sub, sp := connectWire(t, n.Addr(), wireConnect{ClientID: "pi-sub"})
	wirePublish(t, n.Addr(), "pi/t", 1, "after-reconnect")
	p := sub.expect(pktPublish, 5*time.Second)
	sub.ack(pktPuback, p.ID)
	t.Logf("session present %v; id after a reconnect: %d", sp, p.ID)

	n.Stop()
	n.Start()
	n.WaitHealthy(t, 30*time.Second)
	sub, sp = connectWire(t, n.Addr(), wireConnect{ClientID: "pi-sub"})
	wirePublish(t, n.Addr(), "pi/t", 1, "after-restart")
	p = sub.expect(pktPublish, 5*time.Second)
	sub.ack(pktPuback, p.ID)
	t.Logf("session present %v; id after a server restart: %d", sp, p.ID)
}

// When unacknowledged messages come again after the subscriber's
// connection died: at the reconnect, or only when ack_wait runs out.
//
// NATS_DEFAULT_ACK_WAIT=1 runs it with the server's default ack_wait (30s)
// instead of 8s.
func TestNATSGatewayRedeliveryOnReconnect(t *testing.T) {
	ackWait := 8 * time.Second
	opts := []harness.NATSOption{harness.WithMQTTAckWait(ackWait)}
	if os.Getenv("NATS_DEFAULT_ACK_WAIT") != "" {
		ackWait, opts = 30*time.Second, nil
	}
	n := harness.StartNATS(t, opts...)
	sub, _ := wireSub(t, n.Addr(), "rc-sub", "rc/#", 1)

	wirePublish(t, n.Addr(), "rc/t", 1, "a", "b", "c")
	first := sub.collect(500*time.Millisecond, 3)
	t.Logf("delivered: %s", publishes(first))
	sub.drop()
	time.Sleep(200 * time.Millisecond)
	reconnect := time.Now()
	sub, sp := connectWire(t, n.Addr(), wireConnect{ClientID: "rc-sub"})
	again := sub.collect(ackWait+3*time.Second, 3)
	for _, p := range again {
		t.Logf("session present %v; redelivered %v after the reconnect, %v after the first delivery: %s",
			sp, p.At.Sub(reconnect).Round(10*time.Millisecond), p.At.Sub(first[0].At).Round(10*time.Millisecond), p)
	}
	for _, p := range again {
		sub.ack(pktPuback, p.ID)
	}
	if len(again) != 3 {
		t.Errorf("%d redelivered, want 3", len(again))
	}

	// Unacknowledged across a server restart, graceful and killed.
	for _, restart := range []struct {
		name string
		do   func()
	}{{"stop", n.Stop}, {"kill", n.Kill}} {
		wirePublish(t, n.Addr(), "rc/t", 1, "x-"+restart.name, "y-"+restart.name)
		got := sub.collect(500*time.Millisecond, 2)
		t.Logf("before %s: %s", restart.name, publishes(got))
		restart.do()
		n.Start()
		n.WaitHealthy(t, 30*time.Second)
		start := time.Now()
		sub, sp = connectWire(t, n.Addr(), wireConnect{ClientID: "rc-sub"})
		again := sub.collect(ackWait+3*time.Second, 2)
		for _, p := range again {
			t.Logf("after %s: session present %v; redelivered %v after the reconnect: %s", restart.name, sp, p.At.Sub(start).Round(10*time.Millisecond), p)
			sub.ack(pktPuback, p.ID)
		}
		if len(again) != 2 {
			t.Errorf("after %s: %d redelivered, want 2", restart.name, len(again))
		}
	}
}

// QoS 2 toward a subscriber: PUBLISH, PUBREC, PUBREL, PUBCOMP, with the
// subscriber stopping at each step.
func TestNATSGatewayQoS2Delivery(t *testing.T) {
	const ackWait = 4 * time.Second
	n := harness.StartNATS(t, harness.WithMQTTAckWait(ackWait))
	sub, _ := wireSub(t, n.Addr(), "q2-sub", "q2/#", 2)

	// No PUBREC: the PUBLISH again after ack_wait?
	wirePublish(t, n.Addr(), "q2/t", 2, "one")
	p := sub.expect(pktPublish, 5*time.Second)
	t.Logf("delivered %s", p)
	if again, ok := sub.next(ackWait + 2*time.Second); ok {
		t.Logf("without PUBREC, after %v: %s", again.At.Sub(p.At).Round(10*time.Millisecond), again)
	} else {
		t.Logf("without PUBREC: nothing within %v", ackWait+2*time.Second)
	}

	// PUBREC, then no PUBCOMP: the PUBREL again after ack_wait? The PUBLISH?
	sub.ack(pktPubrec, p.ID)
	rel := sub.expect(pktPubrel, 5*time.Second)
	t.Logf("PUBREC %d answered by %s after %v", p.ID, rel, time.Since(p.At).Round(10*time.Millisecond))
	for _, q := range sub.collectFor(2*ackWait + time.Second) {
		t.Logf("without PUBCOMP, %v after the PUBREL: %s", q.At.Sub(rel.At).Round(10*time.Millisecond), q)
	}

	// Drop the connection with the PUBREL unanswered and reconnect.
	sub.drop()
	start := time.Now()
	sub, sp := connectWire(t, n.Addr(), wireConnect{ClientID: "q2-sub"})
	got := sub.collectFor(2*ackWait + time.Second)
	for _, q := range got {
		t.Logf("session present %v; after the reconnect, %v: %s", sp, q.At.Sub(start).Round(10*time.Millisecond), q)
	}
	for _, q := range got {
		if q.Type == pktPubrel {
			sub.ack(pktPubcomp, q.ID)
		}
	}
	if rest := sub.collect(ackWait+1*time.Second, 5); len(rest) > 0 {
		t.Logf("after PUBCOMP still: %s", publishes(rest))
	}

	// A PUBREC for an id the server never sent.
	sub.ack(pktPubrec, 4242)
	if q, ok := sub.next(2 * time.Second); ok {
		t.Logf("PUBREC for an unknown id answered with %s", q)
	} else {
		t.Logf("PUBREC for an unknown id: no answer")
	}
	sub.ack(pktPubcomp, 4242)
	if q, ok := sub.next(time.Second); ok {
		t.Logf("PUBCOMP for an unknown id answered with %s", q)
	}

	// Unacknowledged QoS 2 PUBLISH and PUBREL across a server restart.
	wirePublish(t, n.Addr(), "q2/t", 2, "two", "three")
	a := sub.expect(pktPublish, 5*time.Second)
	b := sub.expect(pktPublish, 5*time.Second)
	sub.ack(pktPubrec, a.ID)
	relA := sub.expect(pktPubrel, 5*time.Second)
	t.Logf("before the restart: %s; %s; %s (b not PUBRECed, a not PUBCOMPed)", a, b, relA)
	n.Stop()
	n.Start()
	n.WaitHealthy(t, 30*time.Second)
	start = time.Now()
	sub, sp = connectWire(t, n.Addr(), wireConnect{ClientID: "q2-sub"})
	got = sub.collectFor(2*ackWait + time.Second)
	for _, q := range got {
		t.Logf("session present %v; after the server restart, %v: %s", sp, q.At.Sub(start).Round(10*time.Millisecond), q)
	}
}

// The session-present flag of CONNACK.
func TestNATSGatewaySessionPresent(t *testing.T) {
	n := harness.StartNATS(t)
	sp := func(id string, clean bool) bool {
		w, sp := connectWire(t, n.Addr(), wireConnect{ClientID: id, Clean: clean})
		w.disconnect()
		time.Sleep(100 * time.Millisecond)
		return sp
	}
	t.Logf("first connect, clean false: %v", sp("sp", false))
	t.Logf("again, clean false: %v", sp("sp", false))
	n.Stop()
	n.Start()
	n.WaitHealthy(t, 30*time.Second)
	t.Logf("after a graceful server restart: %v", sp("sp", false))
	n.Kill()
	n.Start()
	n.WaitHealthy(t, 30*time.Second)
	t.Logf("after SIGKILL and start: %v", sp("sp", false))

	// A subscription and a queued message, then a clean-session client with
	// the same id.
	w, _ := wireSub(t, n.Addr(), "sp", "sp/#", 1)
	w.disconnect()
	wirePublish(t, n.Addr(), "sp/t", 1, "queued")
	t.Logf("clean true with the same id: %v", sp("sp", true))
	w, present := connectWire(t, n.Addr(), wireConnect{ClientID: "sp"})
	got := w.collect(2*time.Second, 5)
	t.Logf("clean false after that: session present %v, %d queued messages delivered %s", present, len(got), publishes(got))

	// Two connections with one id at once.
	one, _ := connectWire(t, n.Addr(), wireConnect{ClientID: "twin"})
	two, present := connectWire(t, n.Addr(), wireConnect{ClientID: "twin"})
	t.Logf("second connection with the id of a live one: session present %v; first closed: %v", present, one.closed(3*time.Second))
	start := time.Now()
	three := dialWire(t, n.Addr(), wireConnect{ClientID: "twin"})
	if p, ok := three.next(5 * time.Second); ok {
		t.Logf("third connection at once: %v after %v", p, time.Since(start).Round(10*time.Millisecond))
	} else {
		t.Logf("third connection at once: closed %v after %v", three.closedErr(), time.Since(start).Round(10*time.Millisecond))
	}
	t.Logf("second closed: %v", two.closed(3*time.Second))
}

// Shared subscriptions ($share/<group>/<filter>).
func TestNATSGatewaySharedSubscription(t *testing.T) {
	n := harness.StartNATS(t)
	a, _ := connectWire(t, n.Addr(), wireConnect{ClientID: "share-a"})
	b, _ := connectWire(t, n.Addr(), wireConnect{ClientID: "share-b"})
	t.Logf("SUBACK for $share/g/share/#: %x and %x", a.subscribe(1, "$share/g/share/#", 1), b.subscribe(1, "$share/g/share/#", 1))
	wirePublish(t, n.Addr(), "share/t", 1, "1", "2", "3", "4")
	ga, gb := a.collect(time.Second, 10), b.collect(200*time.Millisecond, 10)
	t.Logf("published 4 to share/t: a got %d (%s), b got %d (%s)", len(ga), publishes(ga), len(gb), publishes(gb))
	c, _ := connectWire(t, n.Addr(), wireConnect{ClientID: "share-c", Clean: true})
	c.publish("$share/g/share/t", 1, false, false, 1, "literal")
	t.Logf("publish to the topic $share/g/share/t: %v", c.expect(pktPuback, 5*time.Second))
	ga, gb = a.collect(time.Second, 10), b.collect(200*time.Millisecond, 10)
	t.Logf("then a got %s, b got %s", publishes(ga), publishes(gb))
}

// UNSUBSCRIBE of a filter never subscribed, and the order of PINGRESP and
// UNSUBACK after QoS 1 publishes in flight.
func TestNATSGatewayUnsubscribeAndPing(t *testing.T) {
	n := harness.StartNATS(t)
	w, _ := connectWire(t, n.Addr(), wireConnect{ClientID: "unsub", Clean: true})
	start := time.Now()
	w.unsubscribe(7, "never/subscribed/#")
	p := w.expect(pktUnsuback, 5*time.Second)
	t.Logf("UNSUBSCRIBE of a filter never subscribed: %v after %v", p, time.Since(start).Round(time.Microsecond))
	for i := range 5 {
		start := time.Now()
		w.unsubscribe(uint16(8+i), fmt.Sprintf("never/%d", i))
		w.expect(pktUnsuback, 5*time.Second)
		t.Logf("again: %v", time.Since(start).Round(time.Microsecond))
	}

	// Many QoS 1 publishes, then PINGREQ and UNSUBSCRIBE, in one write.
	const n1 = 200
	var buf []byte
	for i := range n1 {
		buf = append(buf, encodePacket(publishHeader(1, false, false), wirePublishBody("ping/t", 1, uint16(i+1), "x"))...)
	}
	buf = append(buf, encodePacket(pktPingreq<<4, nil)...)
	buf = append(buf, encodePacket(pktUnsubscribe<<4|2, appendString([]byte{0x7f, 0xff}, "none"))...)
	if _, err := w.conn.Write(buf); err != nil {
		t.Fatal(err)
	}
	got := w.collect(2*time.Second, n1+2)
	pingAt, unsubAt, acks := -1, -1, 0
	for i, p := range got {
		switch p.Type {
		case pktPingresp:
			pingAt = i
		case pktUnsuback:
			unsubAt = i
		case pktPuback:
			acks++
		}
	}
	t.Logf("%d QoS 1 PUBLISH then PINGREQ then UNSUBSCRIBE: %d PUBACKs; PINGRESP arrived as packet %d, UNSUBACK as packet %d (0-based)", n1, acks, pingAt, unsubAt)
}

// max_ack_pending toward one subscriber, and a publisher with many QoS 2
// messages in flight.
func TestNATSGatewayInflight(t *testing.T) {
	const ackWait = 3 * time.Second
	n := harness.StartNATS(t, harness.WithMQTTAckWait(ackWait), harness.WithMQTTMaxAckPending(5))
	sub, _ := wireSub(t, n.Addr(), "mp-sub", "mp/#", 1)
	var payloads []string
	for i := range 20 {
		payloads = append(payloads, fmt.Sprint(i))
	}
	wirePublish(t, n.Addr(), "mp/t", 1, payloads...)
	got := sub.collect(time.Second, 20)
	t.Logf("max_ack_pending 5, 20 published, none acknowledged: %d delivered: %v", len(got), ids(got))
	start := time.Now()
	sub.ack(pktPuback, got[0].ID)
	if p, ok := sub.next(2 * time.Second); ok {
		t.Logf("one PUBACK: next delivery after %v: %s", time.Since(start).Round(time.Millisecond), p)
	} else {
		t.Logf("one PUBACK: nothing within 2s")
	}
	rest := sub.collectFor(ackWait + time.Second)
	t.Logf("then within ack_wait: %s", publishes(rest))
	sub.drop()

	// A subscriber that acknowledges everything gets all 20.
	sub, _ = connectWire(t, n.Addr(), wireConnect{ClientID: "mp-sub"})
	seen := map[string]bool{string(got[0].Body): true}
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < 20 && time.Now().Before(deadline) {
		if p, ok := sub.next(time.Second); ok && p.Type == pktPublish {
			seen[string(p.Body)] = true
			sub.ack(pktPuback, p.ID)
		}
	}
	t.Logf("acknowledging each: %d of 20 distinct payloads after %v", len(seen), 20*time.Second-time.Until(deadline).Round(time.Millisecond))

	// QoS 2 flood from one publisher: every PUBLISH written before any
	// PUBREC is read.
	const flood = 5000
	pub, _ := connectWire(t, n.Addr(), wireConnect{ClientID: "flood", Clean: true})
	var buf []byte
	for i := range flood {
		buf = append(buf, encodePacket(publishHeader(2, false, false), wirePublishBody("flood/t", 2, uint16(i+1), "x"))...)
	}
	start = time.Now()
	go pub.conn.Write(buf)
	recs := pub.collect(5*time.Second, flood)
	t.Logf("%d QoS 2 PUBLISH at once: %d PUBREC within %v (last after %v)", flood, len(recs), time.Since(start).Round(time.Millisecond), recs[len(recs)-1].At.Sub(start).Round(time.Millisecond))
	buf = buf[:0]
	for i := range flood {
		buf = append(buf, encodePacket(pktPubrel<<4|2, []byte{byte((i + 1) >> 8), byte(i + 1)})...)
	}
	start = time.Now()
	go pub.conn.Write(buf)
	comps := pub.collect(5*time.Second, flood)
	t.Logf("%d PUBREL: %d PUBCOMP (last after %v)", flood, len(comps), comps[len(comps)-1].At.Sub(start).Round(time.Millisecond))
	t.Logf("$MQTT_qos2in holds %d messages after the flood", n.StreamMessages(t, harness.NATSQoS2InStream))
}

// MQTT 3.1 (MQIsdp) and other protocol levels.
func TestNATSGatewayProtocolLevels(t *testing.T) {
	n := harness.StartNATS(t)
	for _, c := range []struct {
		proto string
		level byte
	}{{"MQIsdp", 3}, {"MQTT", 3}, {"MQTT", 5}, {"MQTT", 4}} {
		w := dialWire(t, n.Addr(), wireConnect{ClientID: "proto", Clean: true, Protocol: c.proto, Level: c.level})
		if p, ok := w.next(3 * time.Second); ok {
			t.Logf("CONNECT %s level %d: %v", c.proto, c.level, p)
		} else {
			t.Logf("CONNECT %s level %d: no CONNACK, connection closed: %v", c.proto, c.level, w.closedErr())
		}
		w.drop()
	}
	w := dialWire(t, n.Addr(), wireConnect{ClientID: "proto", Clean: true, User: "nobody", Pass: "x"})
	p, _ := w.next(3 * time.Second)
	t.Logf("CONNECT with credentials on a server without users: %v", p)
}

// After a server restart the session's packet-id counter starts again at
// 1, while a PUBREL stored before the restart keeps its id: a new PUBLISH
// can carry the id of a QoS 2 exchange the client has not completed.
func TestNATSGatewayPubrelIDAfterRestart(t *testing.T) {
	const ackWait = 3 * time.Second
	n := harness.StartNATS(t, harness.WithMQTTAckWait(ackWait))
	sub, _ := wireSub(t, n.Addr(), "col-sub", "col/#", 2)
	wirePublish(t, n.Addr(), "col/t", 2, "first")
	p := sub.expect(pktPublish, 5*time.Second)
	sub.ack(pktPubrec, p.ID)
	rel := sub.expect(pktPubrel, 5*time.Second)
	t.Logf("before the restart: %s, PUBREC, %s; no PUBCOMP", p, rel)
	sub.drop()
	n.Stop()
	n.Start()
	n.WaitHealthy(t, 30*time.Second)
	sub, sp := connectWire(t, n.Addr(), wireConnect{ClientID: "col-sub"})
	start := time.Now()
	wirePublish(t, n.Addr(), "col/t", 2, "second")
	for _, q := range sub.collectFor(2*ackWait + time.Second) {
		t.Logf("session present %v; %v after the reconnect: %s", sp, q.At.Sub(start).Round(10*time.Millisecond), q)
	}
}

// max_ack_pending: when the held-back messages come, in detail.
func TestNATSGatewayMaxAckPendingTiming(t *testing.T) {
	const ackWait = 3 * time.Second
	n := harness.StartNATS(t, harness.WithMQTTAckWait(ackWait), harness.WithMQTTMaxAckPending(5))
	sub, _ := wireSub(t, n.Addr(), "mt-sub", "mt/#", 1)
	var payloads []string
	for i := range 20 {
		payloads = append(payloads, fmt.Sprint(i))
	}
	start := time.Now()
	wirePublish(t, n.Addr(), "mt/t", 1, payloads...)
	for _, p := range sub.collectFor(2*ackWait + ackWait/2) {
		t.Logf("%v: %s", p.At.Sub(start).Round(10*time.Millisecond), p)
	}
}

// Retained messages and last wills in a cluster of three with
// stream_replicas 3, when a node is killed.
func TestNATSGatewayClusterRetainedAndWill(t *testing.T) {
	c := harness.StartNATSCluster(t, 3)
	// Streams exist once an MQTT client has connected.
	w0, _ := connectWire(t, c.Nodes[0].Addr(), wireConnect{ClientID: "init", Clean: true})
	w0.disconnect()
	rleader := c.StreamLeader(t, harness.NATSRetainedStream)
	var others []*harness.NATS
	for _, n := range c.Nodes {
		if n != rleader {
			others = append(others, n)
		}
	}
	home, watch := others[0], others[1]
	t.Logf("retained stream leader %s; client on %s; watcher on %s", rleader.Name(), home.Name(), watch.Name())

	a, _ := connectWire(t, home.Addr(), wireConnect{ClientID: "will-a", Clean: true, WillTopic: "status/a", WillMsg: "offline", WillQoS: 1, WillRetain: true})
	a.publish("status/a", 1, true, false, 1, "online")
	a.expect(pktPuback, 5*time.Second)

	rleader.Kill()
	start := time.Now()
	c.WaitReady(t, 30*time.Second)
	t.Logf("killed %s; cluster ready again after %v", rleader.Name(), time.Since(start).Round(10*time.Millisecond))
	w, _ := connectWire(t, watch.Addr(), wireConnect{ClientID: "watch-1", Clean: true})
	t.Logf("watcher's SUBACK right after the kill: %x", w.subscribe(1, "status/#", 1))
	if p, ok := w.next(5 * time.Second); ok {
		t.Logf("retained after killing the retained stream's leader: %s", p)
	} else {
		t.Logf("retained after killing the retained stream's leader: nothing within 5s")
	}

	// The client's connection dies while its node lives: the will.
	a.drop()
	if p, ok := w.next(5 * time.Second); ok {
		t.Logf("client connection dropped, node alive: watcher got %s", p)
		if p.QoS() == 1 {
			w.ack(pktPuback, p.ID)
		}
	} else {
		t.Logf("client connection dropped, node alive: no will within 5s")
	}

	// The client's node dies: the will?
	rleader.Start()
	c.WaitReady(t, 60*time.Second)
	b, _ := connectWire(t, home.Addr(), wireConnect{ClientID: "will-b", Clean: true, WillTopic: "status/b", WillMsg: "offline", WillQoS: 1, WillRetain: true})
	b.publish("status/b", 1, true, false, 1, "online")
	b.expect(pktPuback, 5*time.Second)
	if p, ok := w.next(5 * time.Second); ok {
		t.Logf("watcher: %s", p)
		if p.QoS() == 1 {
			w.ack(pktPuback, p.ID)
		}
	}
	home.Kill()
	if p, ok := w.next(10 * time.Second); ok {
		t.Logf("client's node killed: watcher got %s", p)
	} else {
		t.Logf("client's node killed: no will within 10s")
	}
	c.WaitReady(t, 30*time.Second)
	w2, _ := connectWire(t, watch.Addr(), wireConnect{ClientID: "watch-2", Clean: true})
	w2.subscribe(1, "status/#", 1)
	for _, p := range w2.collect(2*time.Second, 5) {
		t.Logf("retained now, on %s: %s", watch.Name(), p)
	}
}

// A persistent session that moves to another node of a cluster with
// messages unacknowledged, as a subscriber failing over along its
// MQTT_BROKER list does.
func TestNATSGatewayClusterSessionMoves(t *testing.T) {
	c := harness.StartNATSCluster(t, 3, harness.WithMQTTAckWait(5*time.Second))
	a, b := c.Nodes[0], c.Nodes[1]
	sub, _ := wireSub(t, a.Addr(), "move-sub", "move/#", 1)
	wirePublish(t, b.Addr(), "move/t", 1, "x", "y", "z")
	first := sub.collect(time.Second, 3)
	t.Logf("on %s: %s", a.Name(), publishes(first))
	sub.drop()
	start := time.Now()
	sub, sp := connectWire(t, b.Addr(), wireConnect{ClientID: "move-sub"})
	t.Logf("reconnected to %s after %v, session present %v", b.Name(), time.Since(start).Round(time.Millisecond), sp)
	ackEach(t, sub, 13*time.Second, start)
	wirePublish(t, a.Addr(), "move/t", 1, "after")
	p := sub.expect(pktPublish, 5*time.Second)
	t.Logf("next message on %s: %s", b.Name(), p)
	sub.ack(pktPuback, p.ID)

	// The node holding the connection is killed; the client reconnects
	// to another at once.
	wirePublish(t, a.Addr(), "move/t", 1, "unacked")
	p = sub.expect(pktPublish, 5*time.Second)
	b.Kill()
	start = time.Now()
	tries := 0
	for {
		tries++
		w := dialWire(t, c.Nodes[2].Addr(), wireConnect{ClientID: "move-sub"})
		if ack, ok := w.next(10 * time.Second); ok && ack.Type == pktConnack && ack.Body[1] == 0 {
			sub, sp = w, ack.Body[0]&1 == 1
			break
		} else {
			t.Logf("connect %d to %s after the kill: %v %v (%v)", tries, c.Nodes[2].Name(), ok, ack, time.Since(start).Round(time.Millisecond))
		}
		w.drop()
		if time.Since(start) > time.Minute {
			t.Fatalf("no connect within a minute of the kill")
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%s killed with %s unacknowledged; reconnected to %s after %v (%d tries), session present %v", b.Name(), p, c.Nodes[2].Name(), time.Since(start).Round(time.Millisecond), tries, sp)
	ackEach(t, sub, 20*time.Second, start)
}

// ackEach logs every packet that comes for d and acknowledges each PUBLISH
// at once (an experiment that acknowledged only after collecting for d saw
// the redeliveries that its own delay caused).
func ackEach(t *testing.T, w *wireClient, d time.Duration, start time.Time) {
	t.Helper()
	deadline := time.Now().Add(d)
	for left := d; left > 0; left = time.Until(deadline) {
		p, ok := w.next(left)
		if !ok {
			return
		}
		t.Logf("%v after the reconnect: %s", p.At.Sub(start).Round(10*time.Millisecond), p)
		if p.Type == pktPublish && p.QoS() == 1 {
			w.ack(pktPuback, p.ID)
		}
	}
}
