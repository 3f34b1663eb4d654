package api

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

// MaxBatchMessages is the most messages one POST /publish/batch may carry.
const MaxBatchMessages = 1000

// maxDepth bounds the nesting of a value the decoder skips, as
// encoding/json does.
const maxDepth = 10000

// limits are what decoding needs from the configuration.
type limits struct {
	defaultQoS   byte
	maxPayload   int   // MAX_MESSAGE_BYTES, per decoded payload
	maxBody      int64 // body of POST /publish
	maxBatchBody int64 // body of POST /publish/batch
}

// The decoder below walks the JSON itself instead of unmarshalling into a
// struct, because encoding/json is lenient where a publish must not be: it
// matches keys case-insensitively, keeps the last of duplicate keys and turns
// invalid UTF-8 and lone surrogate escapes into U+FFFD, which would publish a
// topic or payload the client never sent. It reads each value once, in one
// pass over the body (RFC 8259 grammar), and a text payload without escapes
// is a slice of the body rather than a copy; the body is never reused.

// decodePublish decodes and validates the body of POST /publish.
func decodePublish(body []byte, lim limits) (message.Message, error) {
	s, err := newScanner(body)
	if err != nil {
		return message.Message{}, err
	}
	m, err := s.readPublish(lim)
	if err != nil {
		return message.Message{}, err
	}
	return m, s.expectEnd()
}

// decodeBatch decodes and validates the body of POST /publish/batch: every
// message is checked before the caller may publish any.
func decodeBatch(body []byte, lim limits) ([]message.Message, error) {
	s, err := newScanner(body)
	if err != nil {
		return nil, err
	}
	if err := s.objectStart(); err != nil {
		return nil, err
	}
	var msgs []message.Message
	seen := false
	for first := true; ; first = false {
		key, done, err := s.nextKey(first)
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
		if string(key) != "messages" {
			return nil, s.unknownField(key, "messages")
		}
		if seen {
			return nil, badRequestf("duplicate field %q", key)
		}
		seen = true
		if msgs, err = s.readMessages(lim); err != nil {
			return nil, err
		}
	}
	if err := s.expectEnd(); err != nil {
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

// readMessages reads the array of publish objects of a batch.
func (s *scanner) readMessages(lim limits) ([]message.Message, error) {
	switch c, err := s.peek(); {
	case err != nil:
		return nil, err
	case c == 'n':
		if err := s.literal("null"); err != nil {
			return nil, err
		}
		return nil, badRequestf("messages must be an array, got null")
	case c != '[':
		if err := s.skipValue(); err != nil {
			return nil, err
		}
		return nil, badRequestf("messages must be an array, got %s", kindOf(c))
	}
	s.i++
	// The harness's and most clients' items are about 64 bytes each.
	msgs := make([]message.Message, 0, min(max(len(s.b)/64, 1), MaxBatchMessages))
	s.ws()
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
		c, err := s.peek()
		switch {
		case i == 0 && err != nil:
			return nil, err
		case i == 0 && c == '}':
			return nil, s.syntaxf(s.i, "invalid character %s looking for beginning of value", quoteChar(c))
		case err != nil:
			return nil, &itemError{index: i, err: err}
		}
		m, err := s.readPublish(lim)
		if err != nil {
			return nil, &itemError{index: i, err: err}
		}
		msgs = append(msgs, m)
		c, err = s.peek()
		if err != nil {
			return nil, err
		}
		s.i++
		switch c {
		case ',':
		case ']':
			return msgs, nil
		case '}':
			return nil, s.syntaxf(s.i-1, "invalid character %s after array element", quoteChar(c))
		default:
			// Anything else is read as the start of a next item, which is
			// at fault (unless there may be no next item).
			if i+1 == MaxBatchMessages {
				return nil, badRequestf("messages holds more than %d items", MaxBatchMessages)
			}
			return nil, &itemError{index: i + 1, err: s.syntaxf(s.i-1, "invalid character %s after array element", quoteChar(c))}
		}
	}
}

// Bits of publishRequest.seen, one per field.
const (
	fieldTopic = 1 << iota
	fieldMessage
	fieldQoS
	fieldRetain
	fieldEncoding
)

// publishRequest is the JSON publish object as read; a field is absent or
// null unless its bit is set in has.
type publishRequest struct {
	seen     int // fields present, null or not: a second one is a duplicate
	has      int // fields present and not null
	topic    string
	message  []byte
	qos      int
	retain   bool
	encoding string
}

func (s *scanner) readPublish(lim limits) (message.Message, error) {
	var req publishRequest
	if err := s.objectStart(); err != nil {
		return message.Message{}, err
	}
	for first := true; ; first = false {
		key, done, err := s.nextKey(first)
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
			bit, name = fieldTopic, "topic"
		case "message":
			bit, name = fieldMessage, "message"
		case "qos":
			bit, name = fieldQoS, "qos"
		case "retain":
			bit, name = fieldRetain, "retain"
		case "encoding":
			bit, name = fieldEncoding, "encoding"
		default:
			return message.Message{}, s.unknownField(key, "topic, message, qos, retain, encoding")
		}
		if req.seen&bit != 0 {
			return message.Message{}, badRequestf("duplicate field %q", name)
		}
		req.seen |= bit
		present, err := s.readField(&req, name, bit)
		if err != nil {
			return message.Message{}, err
		}
		if present {
			req.has |= bit
		}
	}
	return req.toMessage(lim)
}

// readField reads the value of one known field into req; present is false
// for null.
func (s *scanner) readField(req *publishRequest, key string, bit int) (present bool, err error) {
	c, err := s.peek()
	if err != nil {
		return false, err
	}
	if c == 'n' {
		return false, s.literal("null")
	}
	switch bit {
	case fieldTopic, fieldMessage, fieldEncoding:
		if c != '"' {
			break
		}
		v, err := s.str()
		if err != nil {
			return false, badRequestf("%s: %v", key, err)
		}
		switch bit {
		case fieldTopic:
			req.topic = string(v)
		case fieldMessage:
			req.message = v
		default:
			req.encoding = string(v)
		}
		return true, nil
	case fieldQoS:
		if c != '-' && (c < '0' || c > '9') {
			break
		}
		start := s.i
		if err := s.number(); err != nil {
			return false, err
		}
		raw := s.b[start:s.i]
		n, err := strconv.Atoi(string(raw))
		if err != nil {
			return false, badRequestf("%s must be an integer 0, 1 or 2, got %s", key, raw)
		}
		req.qos = n
		return true, nil
	case fieldRetain:
		if c != 't' && c != 'f' {
			break
		}
		lit := "false"
		if c == 't' {
			lit = "true"
		}
		if err := s.literal(lit); err != nil {
			return false, err
		}
		req.retain = c == 't'
		return true, nil
	}
	// The wrong type: the value must still be well-formed JSON, so that a
	// syntax error is reported as such.
	if err := s.skipValue(); err != nil {
		return false, err
	}
	want := map[int]string{fieldQoS: "a number", fieldRetain: "a boolean"}[bit]
	if want == "" {
		want = "a string"
	}
	return false, badRequestf("%s must be %s, got %s", key, want, kindOf(c))
}

func (req *publishRequest) toMessage(lim limits) (message.Message, error) {
	m := message.Message{QoS: lim.defaultQoS}
	if req.has&fieldTopic == 0 {
		return m, badRequestf("topic is required")
	}
	if err := message.ValidateTopic(req.topic); err != nil {
		return m, err
	}
	m.Topic = req.topic
	if req.has&fieldMessage == 0 {
		return m, badRequestf("message is required")
	}
	if req.has&fieldQoS != 0 {
		if err := message.ValidateQoS(req.qos); err != nil {
			return m, err
		}
		m.QoS = byte(req.qos)
	}
	m.Retain = req.retain
	encoding := "text"
	if req.has&fieldEncoding != 0 {
		encoding = req.encoding
	}
	switch encoding {
	case "text":
		m.Payload = req.message
		if m.Payload == nil {
			m.Payload = []byte{}
		}
	case "base64":
		p, err := decodeBase64(req.message)
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

// decodeBase64 accepts the standard alphabet of RFC 4648 section 4, padded
// or not. It refuses the URL-safe alphabet, whitespace and line breaks
// (which the standard library would skip) and non-zero padding bits, so
// that one payload has one spelling.
func decodeBase64(s []byte) ([]byte, error) {
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

// scanner reads JSON from a body that is valid UTF-8.
type scanner struct {
	b []byte
	i int
}

func newScanner(body []byte) (scanner, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return scanner{}, badRequestf("body is empty, want a JSON object")
	}
	// RFC 8259 section 8.1: JSON text exchanged between systems is UTF-8.
	if !utf8.Valid(body) {
		return scanner{}, badRequestf("body is not valid UTF-8")
	}
	return scanner{b: body}, nil
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte without consuming it.
func (s *scanner) peek() (byte, error) {
	s.ws()
	if s.i >= len(s.b) {
		return 0, truncated()
	}
	return s.b[s.i], nil
}

func truncated() error { return badRequestf("truncated JSON") }

func (s *scanner) syntaxf(offset int, format string, args ...any) error {
	return badRequestf("malformed JSON at offset %d: %s", offset, fmt.Sprintf(format, args...))
}

func (s *scanner) expectEnd() error {
	s.ws()
	if s.i != len(s.b) {
		return badRequestf("unexpected data after the JSON object at offset %d", s.i)
	}
	return nil
}

// objectStart consumes the '{' of an object.
func (s *scanner) objectStart() error {
	c, err := s.peek()
	if err != nil {
		return err
	}
	if c != '{' {
		if err := s.skipValue(); err != nil {
			return err
		}
		return badRequestf("want a JSON object, got %s", kindOf(c))
	}
	s.i++
	return nil
}

// nextKey reads the next key of an object and the ':' after it, or the
// object's end (done). A key but the first must follow a ','.
func (s *scanner) nextKey(first bool) (key []byte, done bool, err error) {
	c, err := s.peek()
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
			return nil, false, s.syntaxf(s.i, "invalid character %s after object key:value pair", quoteChar(c))
		}
		if c, err = s.peek(); err != nil {
			return nil, false, err
		}
	}
	if c != '"' {
		return nil, false, s.syntaxf(s.i, "invalid character %s looking for beginning of object key string", quoteChar(c))
	}
	k, err := s.str()
	if err != nil {
		// encoding/json would have turned a bad escape into U+FFFD and
		// refused the key as unknown; a 400 either way.
		return nil, false, badRequestf("field name: %v", err)
	}
	if c, err = s.peek(); err != nil {
		return nil, false, err
	}
	if c != ':' {
		return nil, false, s.syntaxf(s.i, "invalid character %s after object key", quoteChar(c))
	}
	s.i++
	return k, false, nil
}

// unknownField consumes the value of an unknown key (so that a syntax
// error in it is reported as such) and returns the error naming the key.
func (s *scanner) unknownField(key []byte, want string) error {
	if err := s.skipValue(); err != nil {
		return err
	}
	return badRequestf("unknown field %q (want %s)", key, want)
}

// str reads a JSON string at s.i (which is '"'). Without escapes the result
// is a slice of the body. It refuses escapes of UTF-16 surrogates that do
// not form a pair: they encode no character, and encoding/json would
// silently turn them into U+FFFD.
func (s *scanner) str() ([]byte, error) {
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
			return s.strEscaped(start)
		case c < 0x20:
			return nil, s.syntaxf(s.i, "invalid character %s in string literal", quoteChar(c))
		}
		s.i++
	}
	return nil, truncated()
}

// strEscaped continues str from the first backslash, copying.
func (s *scanner) strEscaped(start int) ([]byte, error) {
	out := make([]byte, s.i-start, s.i-start+16)
	copy(out, s.b[start:s.i])
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return out, nil
		case c < 0x20:
			return nil, s.syntaxf(s.i, "invalid character %s in string literal", quoteChar(c))
		case c != '\\':
			out = append(out, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			return nil, truncated()
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
			r, err := s.hex4()
			if err != nil {
				return nil, err
			}
			if utf16.IsSurrogate(r) {
				if r >= 0xdc00 || s.i+1 >= len(s.b) || s.b[s.i] != '\\' || s.b[s.i+1] != 'u' {
					if s.i >= len(s.b) {
						return nil, truncated()
					}
					return nil, fmt.Errorf("unpaired surrogate \\u%04x is not a character", r)
				}
				save := s.i
				s.i += 2
				lo, err := s.hex4()
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
			return nil, s.syntaxf(s.i-1, "invalid character %s in string escape code", quoteChar(e))
		}
	}
	return nil, truncated()
}

// hex4 reads the four hex digits of a \u escape.
func (s *scanner) hex4() (rune, error) {
	var r rune
	for k := 0; k < 4; k++ {
		if s.i >= len(s.b) {
			return 0, truncated()
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
			return 0, s.syntaxf(s.i, "invalid character %s in \\u hexadecimal character escape", quoteChar(c))
		}
		r = r<<4 | rune(d)
		s.i++
	}
	return r, nil
}

// number reads a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i >= len(s.b):
		return truncated()
	case s.b[s.i] == '0':
		s.i++
	case s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.digits()
	default:
		return s.syntaxf(s.i, "invalid character %s in numeric literal", quoteChar(s.b[s.i]))
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if err := s.someDigits(); err != nil {
			return err
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if err := s.someDigits(); err != nil {
			return err
		}
	}
	return nil
}

func (s *scanner) digits() {
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
}

func (s *scanner) someDigits() error {
	if s.i >= len(s.b) {
		return truncated()
	}
	if c := s.b[s.i]; c < '0' || c > '9' {
		return s.syntaxf(s.i, "invalid character %s in numeric literal", quoteChar(c))
	}
	s.digits()
	return nil
}

// literal reads true, false or null.
func (s *scanner) literal(lit string) error {
	for k := 0; k < len(lit); k++ {
		if s.i >= len(s.b) {
			return truncated()
		}
		if s.b[s.i] != lit[k] {
			return s.syntaxf(s.i, "invalid character %s in literal %s (expecting %s)", quoteChar(s.b[s.i]), lit, quoteChar(lit[k]))
		}
		s.i++
	}
	return nil
}

// skipValue reads any JSON value, checking its syntax, without keeping it.
// It does not recurse, so nesting costs no stack.
func (s *scanner) skipValue() error {
	var stack []byte // the open '{' and '['
	for {
		c, err := s.peek()
		if err != nil {
			return err
		}
		// A value.
		switch {
		case c == '{' || c == '[':
			if len(stack) == maxDepth {
				return badRequestf("malformed JSON at offset %d: nested deeper than %d", s.i, maxDepth)
			}
			stack = append(stack, c)
			s.i++
			if c, err = s.peek(); err != nil {
				return err
			}
			if c == '}' && stack[len(stack)-1] == '{' || c == ']' && stack[len(stack)-1] == '[' {
				s.i++
				stack = stack[:len(stack)-1]
				break
			}
			if stack[len(stack)-1] == '{' {
				if err := s.skipKey(); err != nil {
					return err
				}
			}
			continue
		case c == '"':
			if _, err := s.str(); err != nil {
				return badRequestf("%v", err)
			}
		case c == '-' || c >= '0' && c <= '9':
			if err := s.number(); err != nil {
				return err
			}
		case c == 't':
			err = s.literal("true")
		case c == 'f':
			err = s.literal("false")
		case c == 'n':
			err = s.literal("null")
		default:
			return s.syntaxf(s.i, "invalid character %s looking for beginning of value", quoteChar(c))
		}
		if err != nil {
			return err
		}
		// After a value: close containers or go on to the next element.
		for {
			if len(stack) == 0 {
				return nil
			}
			c, err := s.peek()
			if err != nil {
				return err
			}
			top := stack[len(stack)-1]
			if c == ',' {
				s.i++
				if top == '{' {
					if _, err := s.peek(); err != nil {
						return err
					}
					if err := s.skipKey(); err != nil {
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
			return s.syntaxf(s.i, "invalid character %s after %s", quoteChar(c), map[byte]string{'{': "object key:value pair", '[': "array element"}[top])
		}
	}
}

// skipKey reads `"key" :` inside a skipped object.
func (s *scanner) skipKey() error {
	if s.b[s.i] != '"' {
		return s.syntaxf(s.i, "invalid character %s looking for beginning of object key string", quoteChar(s.b[s.i]))
	}
	if _, err := s.str(); err != nil {
		return badRequestf("%v", err)
	}
	c, err := s.peek()
	if err != nil {
		return err
	}
	if c != ':' {
		return s.syntaxf(s.i, "invalid character %s after object key", quoteChar(c))
	}
	s.i++
	return nil
}

// kindOf names the kind of the JSON value starting with c.
func kindOf(c byte) string {
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

// quoteChar formats c the way encoding/json's syntax errors do.
func quoteChar(c byte) string {
	switch c {
	case '\'':
		return `'\''`
	case '"':
		return `'"'`
	}
	q := strconv.Quote(string(rune(c)))
	return "'" + q[1:len(q)-1] + "'"
}
