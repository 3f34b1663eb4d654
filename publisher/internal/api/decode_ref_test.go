package api

// The hand-written JSON decoder the publisher had before decode.go used
// github.com/go-json-experiment/json, kept as the reference that
// FuzzDecodeAgainstReference compares the current one with: the same
// bodies accepted as the same messages, the same status, and the same batch
// index for every body that is well-formed JSON. It was itself proven
// against a decoder on encoding/json's tokens.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// refMaxDepth bounds the nesting of a value the decoder skips, as
// encoding/json does.
const refMaxDepth = 10000

// The decoder below walks the JSON itself instead of unmarshalling into a
// struct, because encoding/json is lenient where a publish must not be: it
// matches keys case-insensitively, keeps the last of duplicate keys and turns
// invalid UTF-8 and lone surrogate escapes into U+FFFD, which would publish a
// topic or payload the client never sent. It reads each value once, in one
// pass over the body (RFC 8259 grammar), and a text payload without escapes
// is a slice of the body rather than a copy; the body is never reused.

// refDecodePublish decodes and validates the body of POST /publish.
func refDecodePublish(body []byte, lim limits) (message.Message, error) {
	s, err := refNewScanner(body)
	if err != nil {
		return message.Message{}, err
	}
	m, err := s.refReadPublish(lim)
	if err != nil {
		return message.Message{}, err
	}
	return m, s.refExpectEnd()
}

// refDecodeBatch decodes and validates the body of POST /publish/batch: every
// message is checked before the caller may publish any.
func refDecodeBatch(body []byte, lim limits) ([]message.Message, error) {
	s, err := refNewScanner(body)
	if err != nil {
		return nil, err
	}
	if err := s.refObjectStart(); err != nil {
		return nil, err
	}
	var msgs []message.Message
	seen := false
	for first := true; ; first = false {
		key, done, err := s.refNextKey(first)
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
		if string(key) != "messages" {
			return nil, s.refUnknownField(key, "messages")
		}
		if seen {
			return nil, badRequestf("duplicate field %q", key)
		}
		seen = true
		if msgs, err = s.refReadMessages(lim); err != nil {
			return nil, err
		}
	}
	if err := s.refExpectEnd(); err != nil {
		return nil, err
	}
	if !seen {
		return nil, badRequestf("messages is required")
	}
	if len(msgs) == 0 {
		return nil, badRequestf("messages must hold at least one item")
	}
	return msgs, nil
}

// refReadMessages reads the array of publish objects of a batch.
func (s *refScanner) refReadMessages(lim limits) ([]message.Message, error) {
	switch c, err := s.refPeek(); {
	case err != nil:
		return nil, err
	case c == 'n':
		if err := s.refLiteral("null"); err != nil {
			return nil, err
		}
		return nil, badRequestf("messages must be an array, got null")
	case c != '[':
		if err := s.refSkipValue(); err != nil {
			return nil, err
		}
		return nil, badRequestf("messages must be an array, got %s", refKindOf(c))
	}
	s.i++
	// The harness's and most clients' items are about 64 bytes each.
	msgs := make([]message.Message, 0, min(max(len(s.b)/64, 1), MaxBatchMessages))
	s.refWs()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return msgs, nil
	}
	for i := 0; ; i++ {
		if i == MaxBatchMessages {
			return nil, badRequestf("messages holds more than %d items", MaxBatchMessages)
		}
		// Where the body ends or the array is closed wrongly before a first
		// item, no item is at fault; after a ',' the next one is.
		c, err := s.refPeek()
		switch {
		case i == 0 && err != nil:
			return nil, err
		case i == 0 && c == '}':
			return nil, s.refSyntaxf(s.i, "invalid character %s looking for beginning of value", refQuoteChar(c))
		case err != nil:
			return nil, &itemError{index: i, err: err}
		}
		m, err := s.refReadPublish(lim)
		if err != nil {
			return nil, &itemError{index: i, err: err}
		}
		msgs = append(msgs, m)
		c, err = s.refPeek()
		if err != nil {
			return nil, err
		}
		s.i++
		switch c {
		case ',':
		case ']':
			return msgs, nil
		case '}':
			return nil, s.refSyntaxf(s.i-1, "invalid character %s after array element", refQuoteChar(c))
		default:
			// Anything else is read as the start of a next item, which is
			// at fault (unless there may be no next item).
			if i+1 == MaxBatchMessages {
				return nil, badRequestf("messages holds more than %d items", MaxBatchMessages)
			}
			return nil, &itemError{index: i + 1, err: s.refSyntaxf(s.i-1, "invalid character %s after array element", refQuoteChar(c))}
		}
	}
}

// Bits of refPublishRequest.seen, one per field.
const (
	refFieldTopic = 1 << iota
	refFieldMessage
	refFieldQoS
	refFieldRetain
	refFieldEncoding
)

// refPublishRequest is the JSON publish object as read; a field is absent or
// null unless its bit is set in has.
type refPublishRequest struct {
	seen     int // fields present, null or not: a second one is a duplicate
	has      int // fields present and not null
	topic    string
	message  []byte
	qos      int
	retain   bool
	encoding string
}

func (s *refScanner) refReadPublish(lim limits) (message.Message, error) {
	var req refPublishRequest
	if err := s.refObjectStart(); err != nil {
		return message.Message{}, err
	}
	for first := true; ; first = false {
		key, done, err := s.refNextKey(first)
		if err != nil {
			return message.Message{}, err
		}
		if done {
			break
		}
		var bit int
		var name string
		switch string(key) {
		case "topic":
			bit, name = refFieldTopic, "topic"
		case "message":
			bit, name = refFieldMessage, "message"
		case "qos":
			bit, name = refFieldQoS, "qos"
		case "retain":
			bit, name = refFieldRetain, "retain"
		case "encoding":
			bit, name = refFieldEncoding, "encoding"
		default:
			return message.Message{}, s.refUnknownField(key, "topic, message, qos, retain, encoding")
		}
		if req.seen&bit != 0 {
			return message.Message{}, badRequestf("duplicate field %q", name)
		}
		req.seen |= bit
		present, err := s.refReadField(&req, name, bit)
		if err != nil {
			return message.Message{}, err
		}
		if present {
			req.has |= bit
		}
	}
	return req.refToMessage(lim)
}

// refReadField reads the value of one known field into req; present is false
// for null.
func (s *refScanner) refReadField(req *refPublishRequest, key string, bit int) (present bool, err error) {
	c, err := s.refPeek()
	if err != nil {
		return false, err
	}
	if c == 'n' {
		return false, s.refLiteral("null")
	}
	switch bit {
	case refFieldTopic, refFieldMessage, refFieldEncoding:
		if c != '"' {
			break
		}
		v, err := s.refStr()
		if err != nil {
			return false, badRequestf("%s: %v", key, err)
		}
		switch bit {
		case refFieldTopic:
			req.topic = string(v)
		case refFieldMessage:
			req.message = v
		default:
			req.encoding = string(v)
		}
		return true, nil
	case refFieldQoS:
		if c != '-' && (c < '0' || c > '9') {
			break
		}
		start := s.i
		if err := s.refNumber(); err != nil {
			return false, err
		}
		raw := s.b[start:s.i]
		n, err := strconv.Atoi(string(raw))
		if err != nil {
			return false, badRequestf("%s must be an integer 0, 1 or 2, got %s", key, raw)
		}
		req.qos = n
		return true, nil
	case refFieldRetain:
		if c != 't' && c != 'f' {
			break
		}
		lit := "false"
		if c == 't' {
			lit = "true"
		}
		if err := s.refLiteral(lit); err != nil {
			return false, err
		}
		req.retain = c == 't'
		return true, nil
	}
	// The wrong type: the value must still be well-formed JSON, so that a
	// syntax error is reported as such.
	if err := s.refSkipValue(); err != nil {
		return false, err
	}
	want := map[int]string{refFieldQoS: "a number", refFieldRetain: "a boolean"}[bit]
	if want == "" {
		want = "a string"
	}
	return false, badRequestf("%s must be %s, got %s", key, want, refKindOf(c))
}

func (req *refPublishRequest) refToMessage(lim limits) (message.Message, error) {
	m := message.Message{QoS: lim.defaultQoS}
	if req.has&refFieldTopic == 0 {
		return m, badRequestf("topic is required")
	}
	if err := message.ValidateTopic(req.topic); err != nil {
		return m, err
	}
	m.Topic = req.topic
	if req.has&refFieldMessage == 0 {
		return m, badRequestf("message is required")
	}
	if req.has&refFieldQoS != 0 {
		if err := message.ValidateQoS(req.qos); err != nil {
			return m, err
		}
		m.QoS = byte(req.qos)
	}
	m.Retain = req.retain
	encoding := "text"
	if req.has&refFieldEncoding != 0 {
		encoding = req.encoding
	}
	switch encoding {
	case "text":
		m.Payload = req.message
		if m.Payload == nil {
			m.Payload = []byte{}
		}
	case "base64":
		p, err := refDecodeBase64(req.message)
		if err != nil {
			return m, err
		}
		m.Payload = p
	default:
		return m, badRequestf("unknown encoding %q (want text or base64)", encoding)
	}
	if len(m.Payload) > lim.maxPayload {
		return m, tooLargef("payload is %d bytes, more than MAX_MESSAGE_BYTES (%d)", len(m.Payload), lim.maxPayload)
	}
	return m, nil
}

// refDecodeBase64 accepts the standard alphabet of RFC 4648 section 4, padded
// or not. It refuses the URL-safe alphabet, whitespace and line breaks
// (which the standard library would skip) and non-zero padding bits, so
// that one payload has one spelling.
func refDecodeBase64(s []byte) ([]byte, error) {
	if bytes.ContainsAny(s, "\r\n") {
		return nil, badRequestf("message is not valid base64: line breaks are not allowed")
	}
	enc := base64.StdEncoding.Strict()
	if len(s)%4 != 0 {
		enc = base64.RawStdEncoding.Strict()
	}
	p := make([]byte, enc.DecodedLen(len(s)))
	n, err := enc.Decode(p, s)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return nil, badRequestf("message is not valid base64 (standard alphabet, RFC 4648 section 4): bad input at byte %d", int64(ce))
		}
		return nil, badRequestf("message is not valid base64: %v", err)
	}
	return p[:n], nil
}

// refScanner reads JSON from a body that is valid UTF-8.
type refScanner struct {
	b []byte
	i int
}

func refNewScanner(body []byte) (refScanner, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return refScanner{}, badRequestf("body is empty, want a JSON object")
	}
	// RFC 8259 section 8.1: JSON text exchanged between systems is UTF-8.
	if !utf8.Valid(body) {
		return refScanner{}, badRequestf("body is not valid UTF-8")
	}
	return refScanner{b: body}, nil
}

func (s *refScanner) refWs() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// refPeek skips whitespace and returns the next byte without consuming it.
func (s *refScanner) refPeek() (byte, error) {
	s.refWs()
	if s.i >= len(s.b) {
		return 0, refTruncated()
	}
	return s.b[s.i], nil
}

func refTruncated() error { return badRequestf("truncated JSON") }

func (s *refScanner) refSyntaxf(offset int, format string, args ...any) error {
	return badRequestf("malformed JSON at offset %d: %s", offset, fmt.Sprintf(format, args...))
}

func (s *refScanner) refExpectEnd() error {
	s.refWs()
	if s.i != len(s.b) {
		return badRequestf("unexpected data after the JSON object at offset %d", s.i)
	}
	return nil
}

// refObjectStart consumes the '{' of an object.
func (s *refScanner) refObjectStart() error {
	c, err := s.refPeek()
	if err != nil {
		return err
	}
	if c != '{' {
		if err := s.refSkipValue(); err != nil {
			return err
		}
		return badRequestf("want a JSON object, got %s", refKindOf(c))
	}
	s.i++
	return nil
}

// refNextKey reads the next key of an object and the ':' after it, or the
// object's end (done). A key but the first must follow a ','.
func (s *refScanner) refNextKey(first bool) (key []byte, done bool, err error) {
	c, err := s.refPeek()
	if err != nil {
		return nil, false, err
	}
	if c == '}' && first {
		s.i++
		return nil, true, nil
	}
	if !first {
		switch c {
		case '}':
			s.i++
			return nil, true, nil
		case ',':
			s.i++
		default:
			return nil, false, s.refSyntaxf(s.i, "invalid character %s after object key:value pair", refQuoteChar(c))
		}
		if c, err = s.refPeek(); err != nil {
			return nil, false, err
		}
	}
	if c != '"' {
		return nil, false, s.refSyntaxf(s.i, "invalid character %s looking for beginning of object key string", refQuoteChar(c))
	}
	k, err := s.refStr()
	if err != nil {
		// encoding/json would have turned a bad escape into U+FFFD and
		// refused the key as unknown; a 400 either way.
		return nil, false, badRequestf("field name: %v", err)
	}
	if c, err = s.refPeek(); err != nil {
		return nil, false, err
	}
	if c != ':' {
		return nil, false, s.refSyntaxf(s.i, "invalid character %s after object key", refQuoteChar(c))
	}
	s.i++
	return k, false, nil
}

// refUnknownField consumes the value of an unknown key (so that a syntax
// error in it is reported as such) and returns the error naming the key.
func (s *refScanner) refUnknownField(key []byte, want string) error {
	if err := s.refSkipValue(); err != nil {
		return err
	}
	return badRequestf("unknown field %q (want %s)", key, want)
}

// refStr reads a JSON string at s.i (which is '"'). Without escapes the result
// is a slice of the body. It refuses escapes of UTF-16 surrogates that do
// not form a pair: they encode no character, and encoding/json would
// silently turn them into U+FFFD.
func (s *refScanner) refStr() ([]byte, error) {
	s.i++ // the opening quote
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := s.b[start:s.i:s.i]
			s.i++
			return v, nil
		case c == '\\':
			return s.refStrEscaped(start)
		case c < 0x20:
			return nil, s.refSyntaxf(s.i, "invalid character %s in string literal", refQuoteChar(c))
		}
		s.i++
	}
	return nil, refTruncated()
}

// refStrEscaped continues refStr from the first backslash, copying.
func (s *refScanner) refStrEscaped(start int) ([]byte, error) {
	out := make([]byte, s.i-start, s.i-start+16)
	copy(out, s.b[start:s.i])
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return out, nil
		case c < 0x20:
			return nil, s.refSyntaxf(s.i, "invalid character %s in string literal", refQuoteChar(c))
		case c != '\\':
			out = append(out, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			return nil, refTruncated()
		}
		e := s.b[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, err := s.refHex4()
			if err != nil {
				return nil, err
			}
			if utf16.IsSurrogate(r) {
				if r >= 0xdc00 || s.i+1 >= len(s.b) || s.b[s.i] != '\\' || s.b[s.i+1] != 'u' {
					if s.i >= len(s.b) {
						return nil, refTruncated()
					}
					return nil, fmt.Errorf("unpaired surrogate \\u%04x is not a character", r)
				}
				save := s.i
				s.i += 2
				lo, err := s.refHex4()
				if err != nil {
					return nil, err
				}
				if lo < 0xdc00 || lo > 0xdfff {
					s.i = save
					return nil, fmt.Errorf("unpaired surrogate \\u%04x is not a character", r)
				}
				r = utf16.DecodeRune(r, lo)
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, s.refSyntaxf(s.i-1, "invalid character %s in string escape code", refQuoteChar(e))
		}
	}
	return nil, refTruncated()
}

// refHex4 reads the four hex digits of a \u escape.
func (s *refScanner) refHex4() (rune, error) {
	var r rune
	for k := 0; k < 4; k++ {
		if s.i >= len(s.b) {
			return 0, refTruncated()
		}
		c := s.b[s.i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, s.refSyntaxf(s.i, "invalid character %s in \\u hexadecimal character escape", refQuoteChar(c))
		}
		r = r<<4 | rune(d)
		s.i++
	}
	return r, nil
}

// refNumber reads a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *refScanner) refNumber() error {
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i >= len(s.b):
		return refTruncated()
	case s.b[s.i] == '0':
		s.i++
	case s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.refDigits()
	default:
		return s.refSyntaxf(s.i, "invalid character %s in numeric literal", refQuoteChar(s.b[s.i]))
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if err := s.refSomeDigits(); err != nil {
			return err
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if err := s.refSomeDigits(); err != nil {
			return err
		}
	}
	return nil
}

func (s *refScanner) refDigits() {
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
}

func (s *refScanner) refSomeDigits() error {
	if s.i >= len(s.b) {
		return refTruncated()
	}
	if c := s.b[s.i]; c < '0' || c > '9' {
		return s.refSyntaxf(s.i, "invalid character %s in numeric literal", refQuoteChar(c))
	}
	s.refDigits()
	return nil
}

// refLiteral reads true, false or null.
func (s *refScanner) refLiteral(lit string) error {
	for k := 0; k < len(lit); k++ {
		if s.i >= len(s.b) {
			return refTruncated()
		}
		if s.b[s.i] != lit[k] {
			return s.refSyntaxf(s.i, "invalid character %s in literal %s (expecting %s)", refQuoteChar(s.b[s.i]), lit, refQuoteChar(lit[k]))
		}
		s.i++
	}
	return nil
}

// refSkipValue reads any JSON value, checking its syntax, without keeping it.
// It does not recurse, so nesting costs no stack.
func (s *refScanner) refSkipValue() error {
	var stack []byte // the open '{' and '['
	for {
		c, err := s.refPeek()
		if err != nil {
			return err
		}
		// A value.
		switch {
		case c == '{' || c == '[':
			if len(stack) == refMaxDepth {
				return badRequestf("malformed JSON at offset %d: nested deeper than %d", s.i, refMaxDepth)
			}
			stack = append(stack, c)
			s.i++
			if c, err = s.refPeek(); err != nil {
				return err
			}
			if c == '}' && stack[len(stack)-1] == '{' || c == ']' && stack[len(stack)-1] == '[' {
				s.i++
				stack = stack[:len(stack)-1]
				break
			}
			if stack[len(stack)-1] == '{' {
				if err := s.refSkipKey(); err != nil {
					return err
				}
			}
			continue
		case c == '"':
			if _, err := s.refStr(); err != nil {
				return badRequestf("%v", err)
			}
		case c == '-' || c >= '0' && c <= '9':
			if err := s.refNumber(); err != nil {
				return err
			}
		case c == 't':
			err = s.refLiteral("true")
		case c == 'f':
			err = s.refLiteral("false")
		case c == 'n':
			err = s.refLiteral("null")
		default:
			return s.refSyntaxf(s.i, "invalid character %s looking for beginning of value", refQuoteChar(c))
		}
		if err != nil {
			return err
		}
		// After a value: close containers or go on to the next element.
		for {
			if len(stack) == 0 {
				return nil
			}
			c, err := s.refPeek()
			if err != nil {
				return err
			}
			top := stack[len(stack)-1]
			if c == ',' {
				s.i++
				if top == '{' {
					if _, err := s.refPeek(); err != nil {
						return err
					}
					if err := s.refSkipKey(); err != nil {
						return err
					}
				}
				break
			}
			if c == '}' && top == '{' || c == ']' && top == '[' {
				s.i++
				stack = stack[:len(stack)-1]
				continue
			}
			return s.refSyntaxf(s.i, "invalid character %s after %s", refQuoteChar(c), map[byte]string{'{': "object key:value pair", '[': "array element"}[top])
		}
	}
}

// refSkipKey reads `"key" :` inside a skipped object.
func (s *refScanner) refSkipKey() error {
	if s.b[s.i] != '"' {
		return s.refSyntaxf(s.i, "invalid character %s looking for beginning of object key string", refQuoteChar(s.b[s.i]))
	}
	if _, err := s.refStr(); err != nil {
		return badRequestf("%v", err)
	}
	c, err := s.refPeek()
	if err != nil {
		return err
	}
	if c != ':' {
		return s.refSyntaxf(s.i, "invalid character %s after object key", refQuoteChar(c))
	}
	s.i++
	return nil
}

// refKindOf names the kind of the JSON value starting with c.
func refKindOf(c byte) string {
	switch c {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// refQuoteChar formats c the way encoding/json's syntax errors do.
func refQuoteChar(c byte) string {
	switch c {
	case '\'':
		return `'\''`
	case '"':
		return `'"'`
	}
	q := strconv.Quote(string(rune(c)))
	return "'" + q[1:len(q)-1] + "'"
}
