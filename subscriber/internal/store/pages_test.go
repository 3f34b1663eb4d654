package store

import (
	"bytes"
	"testing"
)

// A page's data decodes into its records and encodes back into the same
// bytes when they are in order, one per packet id; data that is not whole
// records of the page's ids is an error, never a panic.
func FuzzDecodePage(f *testing.F) {
	p := new(Page)
	p.Set(Delivery{PacketID: 0x1230, QoS: 2, Conn: 3, Seq: 1 << 40, MessageID: 7, Hash: 1 << 63, Pending: true})
	p.Set(Delivery{PacketID: 0x123f, QoS: 1, Conn: 1, Seq: 2, Hash: 42})
	f.Add(int64(0x123), p.Encode(nil))
	f.Add(int64(0), []byte{})
	f.Add(int64(1), make([]byte, RecordSize))
	f.Fuzz(func(t *testing.T, no int64, data []byte) {
		p, err := DecodePage(no, data)
		if len(data)%RecordSize != 0 {
			if err == nil {
				t.Fatalf("%d bytes decoded without error", len(data))
			}
			return
		}
		if err != nil {
			return
		}
		n := 0
		inOrder := true
		for i := 0; i+RecordSize <= len(data); i += RecordSize {
			if i > 0 && bytes.Compare(data[i:i+2], data[i-RecordSize:i-RecordSize+2]) <= 0 {
				inOrder = false
			}
			n++
		}
		back := p.Encode(nil)
		if inOrder && !bytes.Equal(back, data) {
			t.Fatalf("encoded back %x, want %x", back, data)
		}
		again, err := DecodePage(no, back)
		if err != nil || *again != *p {
			t.Fatalf("decoded again %+v, %v, want %+v", again, err, p)
		}
		if got := len(back) / RecordSize; got > n {
			t.Fatalf("%d records from %d", got, n)
		}
	})
}
