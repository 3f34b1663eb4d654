package ingest

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MQTT control packet types (the high nibble of the first byte).
const (
	typeConnack  = 2
	typePublish  = 3
	typePuback   = 4
	typePubrec   = 5
	typePubrel   = 6
	typePubcomp  = 7
	typePingreq  = 12
	typePingresp = 13
)

// wire is the network connection the subscriber gives Paho. It follows the
// MQTT packets that pass in both directions, for what Paho does not tell:
//
//   - the CONNACK: its session-present flag, recorded (through onConnack)
//     before Paho sees it, so before anything of the connection happens;
//   - PUBCOMP: Paho answers a PUBREL with PUBCOMP at once, but the release
//     of the packet id must be committed first (MQTT 3.1.1 section 4.3.3:
//     until then a PUBLISH with that id is the same message again). A
//     PUBCOMP is held back and asked of the writer (releases), which lets
//     it go (release) after the commit;
//   - acknowledgements the broker has processed: a PINGREQ written after
//     n PUBACK and PUBREC packets is answered after the broker has read
//     them, so its PINGRESP confirms them. The writer asks for such a
//     barrier after it acknowledges a batch (barrier), and learns how far
//     acknowledgements are confirmed (confirmed).
//
// It also writes the acknowledgements of one batch together (expect):
// Paho writes each PUBACK with a write of its own, and a batch has
// hundreds.
//
// Paho writes each packet with one Write call; the framing here does not
// rely on it.
type wire struct {
	net.Conn
	num       int64  // the connection's number, unique across restarts
	broker    string // the URL it was dialled for
	r         *bufio.Reader
	onConnack func(w *wire, rc byte, present bool) error
	wake      func() // tells the writer that there is a release or a confirmation

	seq     atomic.Int64 // arrivals numbered in order (the handler's)
	present atomic.Bool  // CONNACK said session present
	broken  atomic.Bool  // closed, or a read or write failed

	in   framer // inbound, on Paho's reader goroutine only
	pubs int64  // PUBLISH packets read, on Paho's reader goroutine only

	mu     sync.Mutex
	out    framer
	held   map[uint16]int   // PUBCOMPs held back, by packet id
	relSeq map[uint16]int64 // the PUBLISHes read before each PUBREL
	asked  []release        // releases not yet taken by the writer
	acks   int64            // PUBACK and PUBREC packets written
	pings  []int64          // acks written before each PINGREQ still unanswered
	want   int64            // acks the writer wants confirmed
	late   []byte           // packets to write at the next packet boundary
	outBuf []byte           // what the next write(2) takes (emit, send)

	// Acknowledgements of one batch leave together (expect).
	expected  int64       // PUBACK and PUBREC packets the writer has handed to Paho
	coalesced []byte      // acknowledgements written by Paho that wait for the rest of their batch
	hold      *time.Timer // bounds their wait (maxHold)
	sent      seqList     // the seq of each acknowledgement the writer made, from offset on
	offset    int64       // acknowledgements before sent[0]
	confSeq   int64       // the seq of the last confirmed acknowledgement
}

func newWire(nc net.Conn, num int64, onConnack func(*wire, byte, bool) error, wake func()) *wire {
	return &wire{
		Conn: nc, num: num, r: bufio.NewReaderSize(nc, 16<<10),
		onConnack: onConnack, wake: wake, held: map[uint16]int{}, relSeq: map[uint16]int64{},
	}
}

// release is a PUBREL whose PUBCOMP waits: after is the number of PUBLISH
// packets read before it. A PUBLISH read before the PUBREL (a redelivery
// sent before the broker had the PUBREC) is still the held message; only
// once the writer has judged those may it commit the release.
type release struct {
	id    uint16
	after int64
}

// Read reads through a buffer (Paho reads a packet in several small reads)
// and follows the packets read.
func (w *wire) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	for rest := p[:n]; len(rest) > 0; {
		k, end, ferr := w.in.next(rest)
		rest = rest[k:]
		if ferr != nil {
			w.broken.Store(true)
			return n, ferr
		}
		if !end {
			continue
		}
		switch w.in.kind() {
		case typeConnack:
			flags, rc := w.in.head[0], w.in.head[1]
			w.present.Store(flags&1 == 1)
			if herr := w.onConnack(w, rc, flags&1 == 1); herr != nil {
				w.broken.Store(true)
				return 0, herr
			}
		case typePingresp:
			w.answered()
		case typePublish:
			w.pubs++
		case typePubrel:
			w.mu.Lock()
			w.relSeq[uint16(w.in.head[0])<<8|uint16(w.in.head[1])] = w.pubs
			w.mu.Unlock()
		}
	}
	if err != nil {
		w.broken.Store(true)
	}
	return n, err
}

// answered takes a PINGRESP: the oldest unanswered PINGREQ confirms the
// acknowledgements written before it.
func (w *wire) answered() {
	w.mu.Lock()
	if len(w.pings) == 0 {
		w.mu.Unlock()
		return
	}
	n := w.pings[0]
	w.pings = w.pings[1:]
	// The writer records an acknowledgement just after handing it to
	// Paho, which may write it first: only the recorded ones count.
	k := min(n-w.offset, w.sent.n)
	moved := k > 0
	if moved {
		w.confSeq = w.sent.drop(k)
		w.offset += k
	}
	w.ping()
	w.sendAside()
	w.mu.Unlock()
	if moved {
		w.wake()
	}
}

// Write passes Paho's packets on, but for PUBCOMPs, which it holds back
// (see release), and acknowledgements that more of the same batch follow
// (see expect): those wait for the last, and leave with it in one
// write(2). Every other packet takes what waits with it, ahead of itself.
func (w *wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	asked := false
	for pos := 0; pos < len(p); {
		k, end, err := w.out.next(p[pos:])
		if err != nil {
			w.broken.Store(true)
			return 0, err
		}
		seg := p[pos : pos+k]
		pos += k
		switch w.out.kind() {
		case typePubcomp:
			// Held back: see release.
		case typePuback, typePubrec:
			w.coalesced = append(w.coalesced, seg...)
		default:
			w.emit(seg)
		}
		if !end {
			continue
		}
		switch w.out.kind() {
		case typePubcomp:
			id := uint16(w.out.head[0])<<8 | uint16(w.out.head[1])
			w.held[id]++
			w.asked = append(w.asked, release{id: id, after: w.relSeq[id]})
			delete(w.relSeq, id)
			asked = true
		case typePuback, typePubrec:
			w.acks++
			if w.acks >= w.expected {
				w.emit(nil) // the last of its batch: all go now
			} else if w.hold == nil {
				w.hold = time.AfterFunc(maxHold, w.holdExpired)
			} else {
				w.hold.Reset(maxHold)
			}
		case typePingreq:
			w.pings = append(w.pings, w.acks)
		}
	}
	if w.out.between() && len(w.late) > 0 {
		w.emit(w.late)
		w.late = w.late[:0]
	}
	w.ping()
	err := w.send()
	if asked {
		w.wake()
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// maxHold bounds how long an acknowledgement waits for the rest of its
// batch. Paho hands each one to its writer goroutine as the writer
// acknowledges it, so the last follows the first within a millisecond;
// this only matters if one was dropped (Paho drops an acknowledgement
// made while its connection goes down).
const maxHold = 20 * time.Millisecond

// holdExpired writes out acknowledgements that waited maxHold.
func (w *wire) holdExpired() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.coalesced) == 0 || w.broken.Load() {
		return
	}
	// The batch is taken as complete: what is held goes now, and the rest
	// of it, if it comes, goes as it comes.
	w.expected = w.acks
	if !w.out.between() {
		// Paho is amid an acknowledgement (only one can be under way
		// while others are held): the Write that ends it takes them all.
		return
	}
	w.emit(nil)
	w.sendAside()
}

// expect tells that n acknowledgements are being handed to Paho for this
// connection, one batch: each waits for the last, so that they leave in
// one write(2) instead of one each.
func (w *wire) expect(n int) {
	w.mu.Lock()
	w.expected = max(w.expected, w.acks) + int64(n)
	w.mu.Unlock()
}

// emit queues b for the next send, after the acknowledgements that wait:
// they go out first. Callers hold mu.
func (w *wire) emit(b []byte) {
	w.outBuf = append(w.outBuf, w.coalesced...)
	w.coalesced = w.coalesced[:0]
	w.outBuf = append(w.outBuf, b...)
}

// send writes what emit queued, in one write(2). Callers hold mu.
func (w *wire) send() error {
	if len(w.outBuf) == 0 {
		return nil
	}
	_, err := w.Conn.Write(w.outBuf)
	if cap(w.outBuf) > 64<<10 {
		w.outBuf = nil // a large packet's buffer is not kept
	} else {
		w.outBuf = w.outBuf[:0]
	}
	if err != nil {
		w.broken.Store(true)
	}
	return err
}

// sendAside sends what emit queued, from outside Paho's own writes (the
// writer's barrier and releases, the reader's PINGRESP, the hold's
// timer). A failed write closes the connection: Paho's reader then fails
// and Paho reconnects, as after a failed write of its own. Callers hold mu.
func (w *wire) sendAside() {
	if w.send() != nil {
		w.Conn.Close() // its error would add nothing to the write's
	}
}

// writeLate queues b for the next send if the stream is between packets,
// else for after the packet being written. Callers hold mu and send.
func (w *wire) writeLate(b []byte) {
	if !w.out.between() {
		w.late = append(w.late, b...)
		return
	}
	w.emit(b)
}

// ping queues a PINGREQ when the writer wants acknowledgements confirmed
// that are written and not yet covered by an unanswered PINGREQ. Callers
// hold mu and send.
func (w *wire) ping() {
	if w.want <= w.offset || w.acks < w.want || len(w.pings) > 0 && w.pings[len(w.pings)-1] >= w.want {
		return
	}
	w.pings = append(w.pings, w.acks)
	w.writeLate([]byte{typePingreq << 4, 0})
}

// acked records that the writer acknowledged the arrival seq (in order).
func (w *wire) acked(seq int64) {
	w.mu.Lock()
	w.sent.push(seq)
	w.mu.Unlock()
}

// barrier asks for every acknowledgement made so far to be confirmed.
func (w *wire) barrier() {
	w.mu.Lock()
	w.want = w.offset + w.sent.n
	w.ping()
	w.sendAside()
	w.mu.Unlock()
}

// confirmed returns the seq of the last arrival whose acknowledgement the
// broker is known to have processed (0: none).
func (w *wire) confirmed() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.confSeq
}

// releases returns the packet ids whose PUBREL arrived since the last call
// and came after no PUBLISH beyond judged, the last arrival the writer has
// judged; the others wait for a later call.
func (w *wire) releases(judged int64) []uint16 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []uint16
	rest := w.asked[:0]
	for _, r := range w.asked {
		if r.after <= judged {
			ids = append(ids, r.id)
		} else {
			rest = append(rest, r)
		}
	}
	w.asked = rest
	return ids
}

// release sends the PUBCOMPs held back for ids, whose releases are
// committed.
func (w *wire) release(ids []uint16) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		for ; w.held[id] > 0; w.held[id]-- {
			w.writeLate([]byte{typePubcomp << 4, 2, byte(id >> 8), byte(id)})
		}
		delete(w.held, id)
	}
	w.sendAside()
}

// closed reports whether the connection is closed or failed: an
// acknowledgement given to Paho now would not be sent.
func (w *wire) closed() bool { return w.broken.Load() }

func (w *wire) Close() error {
	w.broken.Store(true)
	w.mu.Lock()
	if w.hold != nil {
		w.hold.Stop()
	}
	w.mu.Unlock()
	err := w.Conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// framer follows the packets of one direction of an MQTT stream.
type framer struct {
	header byte
	state  uint8 // 0: before a packet; 1: in its remaining length; 2: in its body
	shift  uint
	length int
	left   int
	head   [2]byte // the first bytes of the body
	got    int
}

var errMalformed = errors.New("malformed MQTT packet length")

// next takes from p the bytes of the current packet, up to its end: it
// returns how many, and whether they ended the packet (kind and head then
// describe it until the next call).
func (f *framer) next(p []byte) (n int, end bool, err error) {
	for n < len(p) {
		switch f.state {
		case 0:
			f.header, f.state, f.shift, f.length, f.got = p[n], 1, 0, 0, 0
			n++
		case 1:
			b := p[n]
			n++
			f.length |= int(b&0x7f) << f.shift
			f.shift += 7
			if b&0x80 != 0 {
				if f.shift >= 28 {
					return n, false, errMalformed
				}
				continue
			}
			if f.length == 0 {
				f.state = 0
				return n, true, nil
			}
			f.state, f.left = 2, f.length
		case 2:
			k := min(f.left, len(p)-n)
			for i := 0; i < k && f.got < len(f.head); i++ {
				f.head[f.got] = p[n+i]
				f.got++
			}
			n += k
			f.left -= k
			if f.left == 0 {
				f.state = 0
				return n, true, nil
			}
		}
	}
	return n, false, nil
}

// kind is the type of the packet being (or last) framed.
func (f *framer) kind() byte { return f.header >> 4 }

// between reports whether the stream is between two packets.
func (f *framer) between() bool { return f.state == 0 }

// seqList is a list of increasing numbers kept as runs of consecutive
// ones: the seqs of a connection's acknowledgements, which are mostly
// consecutive, and of which tens of thousands may wait for the broker's
// confirmation during a backlog (its PINGRESP comes after the PUBLISH
// packets it has already queued).
type seqList struct {
	runs []seqRun
	n    int64 // how many numbers
}

type seqRun struct{ first, count int64 }

func (l *seqList) push(seq int64) {
	if k := len(l.runs) - 1; k >= 0 && l.runs[k].first+l.runs[k].count == seq {
		l.runs[k].count++
	} else {
		l.runs = append(l.runs, seqRun{first: seq, count: 1})
	}
	l.n++
}

// drop removes the first k numbers (0 < k <= n) and returns the last of
// them.
func (l *seqList) drop(k int64) int64 {
	l.n -= k
	for {
		r := &l.runs[0]
		if k < r.count {
			r.first += k
			r.count -= k
			return r.first - 1
		}
		k -= r.count
		last := r.first + r.count - 1
		l.runs = l.runs[1:]
		if k == 0 {
			return last
		}
	}
}
