package sqlite

import (
	"bytes"
	"math"
	"testing"
)

// A chunk's data decodes into its values and encodes back into the same
// bytes; data of any other length is an error, never a panic.
func FuzzDecodeChunk(f *testing.F) {
	f.Add(encodeChunk(nil, []valueRow{{at: 1764547200000000, message: 7, value: 21.5}, {at: -1, message: 1 << 62, value: math.Copysign(0, -1)}}))
	f.Add([]byte{})
	f.Add(make([]byte, 23))
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, err := decodeChunk(nil, data)
		if len(data)%valueBytes != 0 {
			if err == nil {
				t.Fatalf("%d bytes decoded without error", len(data))
			}
			return
		}
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if len(rows) != len(data)/valueBytes {
			t.Fatalf("%d values from %d bytes", len(rows), len(data))
		}
		if back := encodeChunk(nil, rows); !bytes.Equal(back, data) {
			t.Fatalf("encoded back %x, want %x", back, data)
		}
	})
}
