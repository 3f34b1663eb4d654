package api

import (
	"bufio"
	"encoding/base64"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// writePage writes the JSON of a page of GET /messages to w as it goes,
// straight from the stored bytes: besides the rows themselves a page holds
// no copy of its payloads, whole or encoded. The output is what
// encoding/json gives for {"messages": [NewMessage of each], "next": next};
// TestWritePageMatchesEncodingJSON holds it to that. Errors stay in w (see
// bufio.Writer.Flush).
func writePage(w *bufio.Writer, msgs []store.Message, next *string) {
	w.WriteString(`{"messages":[`)
	for i, m := range msgs {
		if i > 0 {
			w.WriteByte(',')
		}
		writeMessage(w, m)
	}
	w.WriteString(`],"next":`)
	if next == nil {
		w.WriteString("null")
	} else {
		writeString(w, []byte(*next))
	}
	w.WriteString("}\n")
}

// writeMessage writes the JSON of NewMessage(m).
func writeMessage(w *bufio.Writer, m store.Message) {
	var num [64]byte
	w.WriteString(`{"id":`)
	w.Write(strconv.AppendInt(num[:0], m.ID, 10))
	w.WriteString(`,"topic":`)
	writeString(w, []byte(m.Topic))
	w.WriteString(`,"payload":`)
	if utf8.Valid(m.Payload) {
		writeString(w, m.Payload)
		w.WriteString(`,"encoding":"text"`)
	} else {
		// The base64 alphabet needs no JSON escaping.
		w.WriteByte('"')
		enc := base64.NewEncoder(base64.StdEncoding, w)
		enc.Write(m.Payload)
		enc.Close()
		w.WriteString(`","encoding":"base64"`)
	}
	w.WriteString(`,"qos":`)
	w.Write(strconv.AppendUint(num[:0], uint64(m.QoS), 10))
	w.WriteString(`,"retained":`)
	w.Write(strconv.AppendBool(num[:0], m.Retained))
	w.WriteString(`,"duplicate":`)
	w.Write(strconv.AppendBool(num[:0], m.Duplicate))
	w.WriteString(`,"received_at":"`)
	w.Write(m.ReceivedAt.UTC().AppendFormat(num[:0], timeFormat))
	w.WriteString(`"}`)
}

const hexDigits = "0123456789abcdef"

// writeString writes s as a JSON string the way encoding/json does: HTML
// characters, U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD.
func writeString(w *bufio.Writer, s []byte) {
	w.WriteByte('"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			w.Write(s[start:i])
			switch b {
			case '"', '\\':
				w.WriteByte('\\')
				w.WriteByte(b)
			case '\b':
				w.WriteString(`\b`)
			case '\f':
				w.WriteString(`\f`)
			case '\n':
				w.WriteString(`\n`)
			case '\r':
				w.WriteString(`\r`)
			case '\t':
				w.WriteString(`\t`)
			default:
				w.WriteString(`\u00`)
				w.WriteByte(hexDigits[b>>4])
				w.WriteByte(hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			w.Write(s[start:i])
			w.WriteString(`\ufffd`)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			w.Write(s[start:i])
			w.WriteString(`\u202`)
			w.WriteByte(hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	w.Write(s[start:])
	w.WriteByte('"')
}

// appendFloat appends f as encoding/json writes a float64: the shortest
// decimal that reads back as f, in exponent form only below 1e-6 and from
// 1e21 on.
func appendFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 becomes e-9, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
