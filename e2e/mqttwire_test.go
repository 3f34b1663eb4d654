//go:build natsfacts

package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// MQTT 3.1.1 control packet types (the high nibble of the fixed header).
const (
	pktConnect     = 1
	pktConnack     = 2
	pktPublish     = 3
	pktPuback      = 4
	pktPubrec      = 5
	pktPubrel      = 6
	pktPubcomp     = 7
	pktSubscribe   = 8
	pktSuback      = 9
	pktUnsubscribe = 10
	pktUnsuback    = 11
	pktPingreq     = 12
	pktPingresp    = 13
	pktDisconnect  = 14
)

var pktNames = map[byte]string{
	pktConnect: "CONNECT", pktConnack: "CONNACK", pktPublish: "PUBLISH", pktPuback: "PUBACK",
	pktPubrec: "PUBREC", pktPubrel: "PUBREL", pktPubcomp: "PUBCOMP", pktSubscribe: "SUBSCRIBE",
	pktSuback: "SUBACK", pktUnsubscribe: "UNSUBSCRIBE", pktUnsuback: "UNSUBACK",
	pktPingreq: "PINGREQ", pktPingresp: "PINGRESP", pktDisconnect: "DISCONNECT",
}

// wirePacket is one control packet a wireClient received.
type wirePacket struct {
	Type  byte
	Flags byte // the fixed header's low nibble
	ID    uint16
	Topic string
	Body  []byte // PUBLISH: the payload; CONNACK, SUBACK: the variable header and payload
	At    time.Time
}

func (p wirePacket) Dup() bool      { return p.Flags&0x8 != 0 }
func (p wirePacket) QoS() byte      { return p.Flags >> 1 & 3 }
func (p wirePacket) Retained() bool { return p.Flags&1 != 0 }

func (p wirePacket) String() string {
	switch p.Type {
	case pktPublish:
		return fmt.Sprintf("PUBLISH id=%d qos=%d dup=%v retain=%v %s %q", p.ID, p.QoS(), p.Dup(), p.Retained(), p.Topic, p.Body)
	case pktConnack, pktSuback:
		return fmt.Sprintf("%s %x", pktNames[p.Type], p.Body)
	}
	return fmt.Sprintf("%s id=%d", pktNames[p.Type], p.ID)
}

// wireConnect is what a wireClient sends in its CONNECT.
type wireConnect struct {
	ClientID   string
	Clean      bool
	Protocol   string // "MQTT" unless set
	Level      byte   // 4 unless set
	KeepAlive  uint16
	User, Pass string
	WillTopic  string
	WillMsg    string
	WillQoS    byte
	WillRetain bool
}

// wireClient speaks MQTT 3.1.1 packet by packet, so that a test decides
// every acknowledgement itself (or withholds it) and sees every packet id
// and flag the broker sends. It never answers anything on its own.
type wireClient struct {
	tb   testing.TB
	conn net.Conn

	wmu sync.Mutex
	in  chan wirePacket
	err chan error
}

// dialWire connects to addr (host:port) and sends CONNECT; it does not wait
// for the CONNACK.
func dialWire(tb testing.TB, addr string, c wireConnect) *wireClient {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	w := &wireClient{tb: tb, conn: conn, in: make(chan wirePacket, 100000), err: make(chan error, 1)}
	tb.Cleanup(func() { conn.Close() })
	go w.read()

	if c.Protocol == "" {
		c.Protocol = "MQTT"
	}
	if c.Level == 0 {
		c.Level = 4
	}
	var flags byte
	if c.Clean {
		flags |= 0x02
	}
	var payload []byte
	payload = appendString(payload, c.ClientID)
	if c.WillTopic != "" {
		flags |= 0x04 | c.WillQoS<<3
		if c.WillRetain {
			flags |= 0x20
		}
		payload = appendString(payload, c.WillTopic)
		payload = appendString(payload, c.WillMsg)
	}
	if c.User != "" {
		flags |= 0x80
		payload = appendString(payload, c.User)
	}
	if c.Pass != "" {
		flags |= 0x40
		payload = appendString(payload, c.Pass)
	}
	var vh []byte
	vh = appendString(vh, c.Protocol)
	vh = append(vh, c.Level, flags)
	vh = binary.BigEndian.AppendUint16(vh, c.KeepAlive)
	w.send(pktConnect<<4, append(vh, payload...))
	return w
}

// connectWire dials and waits for a CONNACK that accepts the connection;
// it returns the client and the session-present flag.
func connectWire(tb testing.TB, addr string, c wireConnect) (*wireClient, bool) {
	tb.Helper()
	w := dialWire(tb, addr, c)
	ack := w.expect(pktConnack, 10*time.Second)
	if len(ack.Body) != 2 || ack.Body[1] != 0 {
		tb.Fatalf("CONNACK %x, want accepted", ack.Body)
	}
	return w, ack.Body[0]&1 == 1
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func (w *wireClient) send(header byte, body []byte) {
	w.tb.Helper()
	if err := w.write(header, body); err != nil {
		w.tb.Fatalf("send %s: %v", pktNames[header>>4], err)
	}
}

func (w *wireClient) write(header byte, body []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, err := w.conn.Write(encodePacket(header, body))
	return err
}

func encodePacket(header byte, body []byte) []byte {
	b := []byte{header}
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			break
		}
	}
	return append(b, body...)
}

// subscribe sends SUBSCRIBE of filter and waits for the SUBACK; it returns
// the granted QoS byte (0x80: refused).
func (w *wireClient) subscribe(id uint16, filter string, qos byte) byte {
	w.tb.Helper()
	body := binary.BigEndian.AppendUint16(nil, id)
	body = append(appendString(body, filter), qos)
	w.send(pktSubscribe<<4|2, body)
	ack := w.expect(pktSuback, 10*time.Second)
	if len(ack.Body) != 3 || binary.BigEndian.Uint16(ack.Body) != id {
		w.tb.Fatalf("SUBACK %x for id %d", ack.Body, id)
	}
	return ack.Body[2]
}

func (w *wireClient) unsubscribe(id uint16, filter string) {
	w.tb.Helper()
	w.send(pktUnsubscribe<<4|2, appendString(binary.BigEndian.AppendUint16(nil, id), filter))
}

func (w *wireClient) publish(topic string, qos byte, retain, dup bool, id uint16, payload string) {
	w.tb.Helper()
	w.send(publishHeader(qos, retain, dup), wirePublishBody(topic, qos, id, payload))
}

func publishHeader(qos byte, retain, dup bool) byte {
	h := byte(pktPublish<<4) | qos<<1
	if retain {
		h |= 1
	}
	if dup {
		h |= 8
	}
	return h
}

func wirePublishBody(topic string, qos byte, id uint16, payload string) []byte {
	body := appendString(nil, topic)
	if qos > 0 {
		body = binary.BigEndian.AppendUint16(body, id)
	}
	return append(body, payload...)
}

// ack sends PUBACK, PUBREC, PUBREL or PUBCOMP for id.
func (w *wireClient) ack(typ byte, id uint16) {
	w.tb.Helper()
	h := typ << 4
	if typ == pktPubrel {
		h |= 2
	}
	w.send(h, binary.BigEndian.AppendUint16(nil, id))
}

func (w *wireClient) disconnect() { w.tb.Helper(); w.send(pktDisconnect<<4, nil); w.conn.Close() }

// drop closes the TCP connection without DISCONNECT, as a killed client.
func (w *wireClient) drop() { w.conn.Close() }

func (w *wireClient) read() {
	r := bufio.NewReader(w.conn)
	for {
		h, err := r.ReadByte()
		if err != nil {
			w.err <- err
			close(w.in)
			return
		}
		n, mul := 0, 1
		for {
			d, err := r.ReadByte()
			if err != nil {
				w.err <- err
				close(w.in)
				return
			}
			n += int(d&0x7f) * mul
			mul *= 128
			if d&0x80 == 0 {
				break
			}
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			w.err <- err
			close(w.in)
			return
		}
		p := wirePacket{Type: h >> 4, Flags: h & 0xf, At: time.Now()}
		switch p.Type {
		case pktPublish:
			tl := int(binary.BigEndian.Uint16(body))
			p.Topic = string(body[2 : 2+tl])
			rest := body[2+tl:]
			if p.QoS() > 0 {
				p.ID = binary.BigEndian.Uint16(rest)
				rest = rest[2:]
			}
			p.Body = rest
		case pktPuback, pktPubrec, pktPubrel, pktPubcomp, pktUnsuback:
			p.ID = binary.BigEndian.Uint16(body)
		default:
			p.Body = body
		}
		w.in <- p
	}
}

// next returns the next packet, or ok false when none came within d or the
// connection ended.
func (w *wireClient) next(d time.Duration) (wirePacket, bool) {
	select {
	case p, ok := <-w.in:
		return p, ok
	case <-time.After(d):
		return wirePacket{}, false
	}
}

// expect returns the next packet and fails the test unless it is of typ.
func (w *wireClient) expect(typ byte, d time.Duration) wirePacket {
	w.tb.Helper()
	p, ok := w.next(d)
	if !ok {
		w.tb.Fatalf("no %s within %v (connection: %v)", pktNames[typ], d, w.closedErr())
	}
	if p.Type != typ {
		w.tb.Fatalf("got %v, want %s", p, pktNames[typ])
	}
	return p
}

// collect gathers packets until none comes for quiet, or max is reached.
func (w *wireClient) collect(quiet time.Duration, max int) []wirePacket {
	var out []wirePacket
	for len(out) < max {
		p, ok := w.next(quiet)
		if !ok {
			break
		}
		out = append(out, p)
	}
	return out
}

// collectFor gathers packets for d.
func (w *wireClient) collectFor(d time.Duration) []wirePacket {
	var out []wirePacket
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return out
		}
		p, ok := w.next(left)
		if !ok {
			return out
		}
		out = append(out, p)
	}
}

// closed waits up to d for the broker to close the connection.
func (w *wireClient) closed(d time.Duration) bool {
	deadline := time.After(d)
	for {
		select {
		case _, ok := <-w.in:
			if !ok {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

func (w *wireClient) closedErr() error {
	select {
	case err := <-w.err:
		w.err <- err
		return err
	default:
		return nil
	}
}
