package api

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"unicode/utf8"
)

// The answers to a successful publish are written by hand, byte for byte
// what encoding/json writes for publishResponse and batchResponse (a test
// holds them to it): reflection over the same few fields was a visible
// share of a publish's CPU.

// buffers holds the buffers answers are encoded into; w.Write copies out.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func appendPublishResponse(b []byte, r publishResponse) []byte {
	b = append(b, `{"topic":`...)
	b = appendString(b, r.Topic)
	b = append(b, `,"qos":`...)
	b = strconv.AppendUint(b, uint64(r.QoS), 10)
	b = append(b, `,"retain":`...)
	b = strconv.AppendBool(b, r.Retain)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, int64(r.Bytes), 10)
	return append(b, '}')
}

func appendBatchResponse(b []byte, r batchResponse) []byte {
	b = append(b, `{"acknowledged":`...)
	b = strconv.AppendInt(b, int64(r.Acknowledged), 10)
	b = append(b, `,"results":`...)
	if r.Results == nil {
		return append(b, "null}"...)
	}
	b = append(b, '[')
	for i, res := range r.Results {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(res.Index), 10)
		b = append(b, `,"topic":`...)
		b = appendString(b, res.Topic)
		b = append(b, `,"qos":`...)
		b = strconv.AppendUint(b, uint64(res.QoS), 10)
		b = append(b, `,"retain":`...)
		b = strconv.AppendBool(b, res.Retain)
		b = append(b, `,"bytes":`...)
		b = strconv.AppendInt(b, int64(res.Bytes), 10)
		b = append(b, `,"acknowledged":`...)
		b = strconv.AppendBool(b, res.Acknowledged)
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(res.Status), 10)
		if res.Error != "" {
			b = append(b, `,"error":`...)
			b = appendString(b, res.Error)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// appendString appends s as a JSON string the way encoding/json does:
// HTML-safe, U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// marshal encodes v into buf as writeJSON sends it, with the final newline.
func marshal(buf *bytes.Buffer, v any) error {
	switch v := v.(type) {
	case publishResponse:
		buf.Write(appendPublishResponse(buf.AvailableBuffer(), v))
	case batchResponse:
		buf.Write(appendBatchResponse(buf.AvailableBuffer(), v))
	default:
		return json.NewEncoder(buf).Encode(v) // adds the newline
	}
	buf.WriteByte('\n')
	return nil
}
