package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// packets frames stream whole, the reference for framing it in pieces.
func packets(stream []byte) (kinds []byte, heads [][2]byte, err error) {
	var f framer
	for len(stream) > 0 {
		n, end, ferr := f.next(stream)
		stream = stream[n:]
		if ferr != nil {
			return kinds, heads, ferr
		}
		if end {
			kinds, heads = append(kinds, f.kind()), append(heads, f.head)
		}
	}
	return kinds, heads, nil
}

func TestFramer(t *testing.T) {
	long := append([]byte{typePuback << 4, 0x80, 0x01}, bytes.Repeat([]byte{9}, 128)...) // remaining length 128
	tests := []struct {
		name   string
		stream []byte
		kinds  []byte
		err    error
	}{
		{"pubcomp", []byte{0x70, 2, 1, 2}, []byte{typePubcomp}, nil},
		{"pingreq and pingresp", []byte{0xc0, 0, 0xd0, 0}, []byte{typePingreq, typePingresp}, nil},
		{"connack", []byte{0x20, 2, 1, 0}, []byte{typeConnack}, nil},
		{"two-byte length", long, []byte{typePuback}, nil},
		{"length too long", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}, nil, errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kinds, _, err := packets(tt.stream)
			if !errors.Is(err, tt.err) || fmt.Sprint(kinds) != fmt.Sprint(tt.kinds) {
				t.Errorf("kinds %v, err %v; want %v, %v", kinds, err, tt.kinds, tt.err)
			}
		})
	}
}

// FuzzFramer checks that a stream framed in arbitrary pieces gives the
// packets it gives framed whole.
func FuzzFramer(f *testing.F) {
	f.Add([]byte{0x70, 2, 1, 2, 0xc0, 0, 0x30, 3, 0, 1, 'a'}, uint8(3))
	f.Add([]byte{0x20, 2, 1, 0, 0xd0, 0}, uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, cut uint8) {
		wantKinds, wantHeads, wantErr := packets(stream)
		var f framer
		var kinds []byte
		var heads [][2]byte
		var err error
		step := int(cut%7) + 1
		for rest := stream; len(rest) > 0 && err == nil; {
			piece := rest[:min(step, len(rest))]
			rest = rest[len(piece):]
			for len(piece) > 0 {
				n, end, ferr := f.next(piece)
				if n == 0 && ferr == nil {
					t.Fatalf("no progress on % x", piece)
				}
				piece = piece[n:]
				if ferr != nil {
					err = ferr
					break
				}
				if end {
					kinds, heads = append(kinds, f.kind()), append(heads, f.head)
				}
			}
		}
		if (err != nil) != (wantErr != nil) || !bytes.Equal(kinds, wantKinds) || fmt.Sprint(heads) != fmt.Sprint(wantHeads) {
			t.Errorf("pieces of %d: %v %v %v, whole: %v %v %v", step, kinds, heads, err, wantKinds, wantHeads, wantErr)
		}
	})
}

// Paho's packets pass through unchanged but for PUBCOMP, held back until
// released, and an injected PINGREQ goes between packets, never inside one.
func TestWireWritesWholePackets(t *testing.T) {
	w, p := testWire(t, nil, 1, true)
	publish := []byte{0x30, 5, 0, 1, 't', 'h', 'i'}
	puback := []byte{0x40, 2, 0, 9}
	// A PUBLISH written in two pieces, the acknowledgement asked to be
	// confirmed in between: the PINGREQ waits for the end of the PUBLISH.
	mustWrite(t, w, puback)
	w.acked(1)
	mustWrite(t, w, publish[:3])
	w.barrier()
	mustWrite(t, w, append(publish[3:], 0x70, 2, 0, 5))
	mustWrite(t, w, puback)
	want := append(append(append([]byte{}, puback...), publish...), 0xc0, 0)
	want = append(want, puback...)
	if !waitFor(func() bool { return bytes.Equal(p.bytes(), want) }) {
		t.Fatalf("peer got % x, want % x", p.bytes(), want)
	}
	if ids := w.releases(0); fmt.Sprint(ids) != "[5]" {
		t.Fatalf("releases %v, want [5]", ids)
	}
	w.release([]uint16{5})
	want = append(want, 0x70, 2, 0, 5)
	if !waitFor(func() bool { return bytes.Equal(p.bytes(), want) }) {
		t.Fatalf("peer got % x, want % x", p.bytes(), want)
	}
}

func mustWrite(t *testing.T, w *wire, b []byte) {
	t.Helper()
	if n, err := w.Write(b); err != nil || n != len(b) {
		t.Fatalf("write % x: %d, %v", b, n, err)
	}
}

// writesConn is a connection that records each write(2) it is given.
type writesConn struct {
	net.Conn // nil: only Write and Close are used
	mu       sync.Mutex
	writes   [][]byte
}

func (c *writesConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (c *writesConn) Close() error { return nil }

func (c *writesConn) got() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, w := range c.writes {
		parts = append(parts, fmt.Sprintf("% x", w))
	}
	return strings.Join(parts, " | ")
}

// The acknowledgements of a batch leave in one write(2), with the PINGREQ
// that confirms them; any other packet takes waiting ones along, ahead of
// itself; and one that Paho never writes holds the others up no longer
// than maxHold.
func TestWireCoalescesAcknowledgements(t *testing.T) {
	puback := func(id byte) []byte { return []byte{0x40, 2, 0, id} }
	tests := []struct {
		name   string
		expect int
		writes [][]byte
		then   func(w *wire)
		want   string // the write(2) calls, " | " between them
	}{
		{"a batch of three, then its barrier", 3, [][]byte{puback(1), puback(2), puback(3)},
			func(w *wire) { w.acked(1); w.acked(2); w.acked(3); w.barrier() },
			"40 02 00 01 40 02 00 02 40 02 00 03 | c0 00"},
		{"Paho's PINGREQ takes the waiting ones along", 3, [][]byte{puback(1), {0xc0, 0}},
			nil, "40 02 00 01 c0 00"},
		{"a PUBLISH too", 2, [][]byte{puback(1), {0x30, 3, 0, 1, 't'}, puback(2)},
			nil, "40 02 00 01 30 03 00 01 74 | 40 02 00 02"},
		{"an acknowledgement without expect goes at once", 0, [][]byte{puback(1), puback(2)},
			nil, "40 02 00 01 | 40 02 00 02"},
		{"one never written", 3, [][]byte{puback(1), puback(2)},
			func(*wire) { time.Sleep(3 * maxHold) }, "40 02 00 01 40 02 00 02"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &writesConn{}
			w := newWire(c, 1, nil, func() {})
			if tt.expect > 0 {
				w.expect(tt.expect)
			}
			for _, b := range tt.writes {
				mustWrite(t, w, b)
			}
			if tt.then != nil {
				tt.then(w)
			}
			if got := c.got(); got != tt.want {
				t.Errorf("writes %s\nwant   %s", got, tt.want)
			}
		})
	}
}

func TestSeqList(t *testing.T) {
	var l seqList
	var ref []int64
	for _, seq := range []int64{1, 2, 3, 5, 6, 9, 10, 11, 12, 20} {
		l.push(seq)
		ref = append(ref, seq)
	}
	if got := len(l.runs); got != 4 {
		t.Errorf("%d runs, want 4", got)
	}
	for _, k := range []int64{2, 1, 3, 1, 2, 1} {
		got, want := l.drop(k), ref[k-1]
		ref = ref[k:]
		if got != want || l.n != int64(len(ref)) {
			t.Fatalf("drop(%d) = %d with %d left, want %d with %d", k, got, l.n, want, len(ref))
		}
	}
}
