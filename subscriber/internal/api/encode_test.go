package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// marshalPage is the page as encoding/json writes it, the reference of
// writePage.
func marshalPage(t testing.TB, msgs []store.Message, next *string) []byte {
	t.Helper()
	p := struct {
		Messages []Message `json:"messages"`
		Next     *string   `json:"next"`
	}{Messages: []Message{}, Next: next}
	for _, m := range msgs {
		p.Messages = append(p.Messages, NewMessage(m))
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(p); err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf.Bytes()
}

func writtenPage(t testing.TB, msgs []store.Message, next *string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := bufio.NewWriterSize(&buf, 16) // small: writes cross the buffer's end
	writePage(w, msgs, next)
	if err := w.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return buf.Bytes()
}

func TestWritePageMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 24, 10, 0, 0, 123456789, time.FixedZone("x", -7200))
	var ascii []byte
	for b := range 128 {
		ascii = append(ascii, byte(b))
	}
	random := make([]byte, 300<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	payloads := [][]byte{
		nil, {}, []byte("21.5"), ascii, []byte(`<script>"&"</script>\`),
		[]byte("line\u2028para\u2029 é 😀 \u00a0"), []byte("\xff"), []byte("ok\xc3"), {0, 1, 2},
		random, bytes.Repeat([]byte("x"), 256<<10), []byte(strings.Repeat("\u2028", 1000)),
	}
	var msgs []store.Message
	for i, p := range payloads {
		msgs = append(msgs, store.Message{
			ID: int64(1000 - i), Topic: []string{"a/b", `we"ird\topic<&>`, "é/\u2028/+"}[i%3], Payload: p,
			QoS: byte(i % 3), Retained: i%2 == 0, Duplicate: i%4 == 1, ReceivedAt: at.Add(time.Duration(i) * time.Microsecond),
		})
	}
	next := "41"
	for _, tt := range []struct {
		name string
		msgs []store.Message
		next *string
	}{
		{"empty last page", nil, nil},
		{"one", msgs[:1], &next},
		{"all", msgs, nil},
	} {
		got, want := writtenPage(t, tt.msgs, tt.next), marshalPage(t, tt.msgs, tt.next)
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && i < len(want) && got[i] == want[i] {
				i++
			}
			t.Errorf("%s: differs from encoding/json at byte %d:\ngot  %.200q\nwant %.200q", tt.name, i, got[i:], want[i:])
		}
	}
}

func FuzzWriteMessage(f *testing.F) {
	f.Add("a/b", []byte("21.5"))
	f.Add(`t"<`, []byte("\u2028\xff"))
	f.Add("", []byte{0, 0x7f, 0x80})
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		m := []store.Message{{ID: 7, Topic: topic, Payload: payload, QoS: 2, ReceivedAt: time.Unix(1, 2)}}
		if got, want := writtenPage(t, m, nil), marshalPage(t, m, nil); !bytes.Equal(got, want) {
			t.Errorf("topic %q payload %q:\ngot  %q\nwant %q", topic, payload, got, want)
		}
	})
}
