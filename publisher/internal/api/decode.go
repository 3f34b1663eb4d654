package api

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// MaxBatchMessages is the most messages one POST /publish/batch may carry.
const MaxBatchMessages = 1000

// limits are what decoding needs from the configuration.
type limits struct {
	defaultQoS   byte
	maxPayload   int   // MAX_MESSAGE_BYTES, per decoded payload
	maxBody      int64 // body of POST /publish
	maxBatchBody int64 // body of POST /publish/batch
	// opts are the JSON options of a body: made once, they cost a
	// request more than its decoding otherwise.
	opts json.Options
}

func newLimits(defaultQoS byte, maxPayload int, maxBody, maxBatchBody int64) limits {
	lim := limits{defaultQoS: defaultQoS, maxPayload: maxPayload, maxBody: maxBody, maxBatchBody: maxBatchBody}
	lim.opts = json.JoinOptions(json.RejectUnknownMembers(true),
		json.WithUnmarshalers(json.UnmarshalFromFunc(lim.readMessage)))
	return lim
}

// Bodies are decoded by github.com/go-json-experiment/json, which is strict
// where encoding/json is lenient and a publish must not be: it matches
// names case-sensitively, refuses a duplicate name, invalid UTF-8 and an
// escaped lone surrogate (each would publish a topic or payload the client
// never sent), and here an unknown name too. Each publish object is checked
// as soon as it is read (readMessage), so that the first bad item of a
// batch is the one reported, whatever follows it.

// publishRequest is the JSON publish object; a field that is not set was
// absent or null.
type publishRequest struct {
	Topic    opt[string]
	Message  opt[[]byte]
	QoS      opt[int]
	Retain   opt[bool]
	Encoding opt[string]
}

// opt is a member's value and whether it was given.
type opt[T any] struct {
	v   T
	set bool
}

type batchRequest struct {
	Messages []message.Message `json:"messages"`
}

// decodePublish decodes and validates the body of POST /publish.
func decodePublish(body []byte, lim limits) (message.Message, error) {
	var m message.Message
	err := lim.unmarshal(body, &m)
	return m, err
}

// decodeBatch decodes and validates the body of POST /publish/batch: every
// message is checked before the caller may publish any.
func decodeBatch(body []byte, lim limits) ([]message.Message, error) {
	var req batchRequest
	if err := lim.unmarshal(body, &req); err != nil {
		return nil, err
	}
	switch {
	case req.Messages == nil:
		return nil, badRequestf("messages is required: an array of 1 to %d publish objects", MaxBatchMessages)
	case len(req.Messages) == 0:
		return nil, badRequestf("messages must hold at least one item")
	}
	return req.Messages, nil
}

func (lim limits) unmarshal(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequestf("body is empty, want a JSON object")
	}
	// RFC 8259 section 8.1: JSON text exchanged between systems is UTF-8.
	// Checked first, so that no batch item is blamed for the body.
	if !utf8.Valid(body) {
		return badRequestf("body is not valid UTF-8")
	}
	if err := json.Unmarshal(body, v, lim.opts); err != nil {
		return requestError(err)
	}
	return nil
}

// errTooMany is the batch that holds more than MaxBatchMessages: no item is
// at fault.
var errTooMany = badRequestf("messages holds more than %d items", MaxBatchMessages)

// readMessage reads a publish object, the body of POST /publish or an item
// of a batch, and checks it. It walks the object's values itself: the
// library's reflection over a struct of pointers cost a batch item about
// three times the old hand-written decoder. The values still come from the
// library's decoder, which refuses duplicate names, invalid UTF-8 and lone
// surrogates.
func (lim limits) readMessage(dec *jsontext.Decoder, m *message.Message) error {
	if kind, n := dec.StackIndex(dec.StackDepth()); kind == '[' && n >= MaxBatchMessages {
		return errTooMany
	}
	var req publishRequest
	if err := req.read(dec); err != nil {
		return err
	}
	var err error
	*m, err = req.message(lim)
	return err
}

// read reads one publish object; null is one without members.
func (req *publishRequest) read(dec *jsontext.Decoder) error {
	switch k := dec.PeekKind(); k {
	case 'n', '{':
	case '"', '0', '[', 't', 'f':
		return badRequestf("want a JSON object, got %s", kindName(k))
	default: // a syntax error, which the read reports
		_, err := dec.ReadToken()
		return err
	}
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() == 'n' {
		return err
	}
	for dec.PeekKind() != '}' {
		name, err := memberName(dec)
		if err != nil {
			return err
		}
		switch string(name) {
		case "topic":
			req.Topic, err = readString(dec, "topic")
		case "message":
			req.Message, err = readBytes(dec, "message")
		case "encoding":
			req.Encoding, err = readString(dec, "encoding")
		case "qos":
			req.QoS, err = readQoS(dec)
		case "retain":
			req.Retain, err = readBool(dec, "retain")
		default:
			err = badRequestf("unknown field %q (want topic, message, qos, retain, encoding)", name)
		}
		if err != nil {
			return err
		}
	}
	_, err := dec.ReadToken()
	return err
}

// memberName reads the name of an object's member, unquoted; it copies
// only a name spelled with escapes ("\\u0074opic" is topic).
func memberName(dec *jsontext.Decoder) ([]byte, error) {
	v, err := dec.ReadValue()
	if err != nil || bytes.IndexByte(v, '\\') < 0 {
		return unquoted(v), err
	}
	return jsontext.AppendUnquote(nil, v)
}

// unquoted is a string value without its quotes, valid until the decoder
// reads on.
func unquoted(v jsontext.Value) []byte {
	if len(v) < 2 {
		return nil
	}
	return v[1 : len(v)-1]
}

func readString(dec *jsontext.Decoder, name string) (opt[string], error) {
	v, err := readStringValue(dec, name)
	if err != nil || v == nil {
		return opt[string]{}, err
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return opt[string]{string(unquoted(v)), true}, nil
	}
	b, err := jsontext.AppendUnquote(nil, v)
	return opt[string]{string(b), true}, err
}

// readBytes reads a string member's value, unquoted, in a copy of its own.
func readBytes(dec *jsontext.Decoder, name string) (opt[[]byte], error) {
	v, err := readStringValue(dec, name)
	if err != nil || v == nil {
		return opt[[]byte]{}, err
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return opt[[]byte]{append([]byte{}, unquoted(v)...), true}, nil
	}
	b, err := jsontext.AppendUnquote([]byte{}, v)
	return opt[[]byte]{b, true}, err
}

// readStringValue reads a member's value that must be a string, quoted;
// nil for null.
func readStringValue(dec *jsontext.Decoder, name string) (jsontext.Value, error) {
	v, err := dec.ReadValue()
	switch {
	case err != nil || v.Kind() == 'n':
		return nil, err
	case v.Kind() != '"':
		return nil, badRequestf("%s must be a string, got %s", name, kindName(v.Kind()))
	}
	return v, nil
}

func readBool(dec *jsontext.Decoder, name string) (opt[bool], error) {
	v, err := dec.ReadValue()
	switch {
	case err != nil || v.Kind() == 'n':
		return opt[bool]{}, err
	case v.Kind() != 't' && v.Kind() != 'f':
		return opt[bool]{}, badRequestf("%s must be a boolean, got %s", name, kindName(v.Kind()))
	}
	return opt[bool]{v.Kind() == 't', true}, nil
}

// readQoS takes an integer in any range (ValidateQoS says what is wrong
// with 3), and refuses a fraction or an exponent as the library's int does.
func readQoS(dec *jsontext.Decoder) (opt[int], error) {
	v, err := dec.ReadValue()
	switch {
	case err != nil || v.Kind() == 'n':
		return opt[int]{}, err
	case v.Kind() != '0':
		return opt[int]{}, badRequestf("qos must be a number, got %s", kindName(v.Kind()))
	}
	n, err := strconv.ParseInt(string(v), 10, 0)
	if err != nil {
		return opt[int]{}, badRequestf("qos must be an integer 0, 1 or 2, got %s", v)
	}
	return opt[int]{int(n), true}, nil
}

// kindName names a JSON kind in an error.
func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "nothing"
}

func (req *publishRequest) message(lim limits) (message.Message, error) {
	m := message.Message{QoS: lim.defaultQoS}
	if !req.Topic.set {
		return m, badRequestf("topic is required")
	}
	if err := message.ValidateTopic(req.Topic.v); err != nil {
		return m, err
	}
	m.Topic = req.Topic.v
	if !req.Message.set {
		return m, badRequestf("message is required")
	}
	if req.QoS.set {
		if err := message.ValidateQoS(req.QoS.v); err != nil {
			return m, err
		}
		m.QoS = byte(req.QoS.v)
	}
	m.Retain = req.Retain.v
	encoding := "text"
	if req.Encoding.set {
		encoding = req.Encoding.v
	}
	switch encoding {
	case "text":
		m.Payload = req.Message.v
	case "base64":
		p, err := decodeBase64(string(req.Message.v))
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
func decodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, badRequestf("message is not valid base64: line breaks are not allowed")
	}
	enc := base64.StdEncoding.Strict()
	if len(s)%4 != 0 {
		enc = base64.RawStdEncoding.Strict()
	}
	p, err := enc.DecodeString(s)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return nil, badRequestf("message is not valid base64 (standard alphabet, RFC 4648 section 4): bad input at byte %d", int64(ce))
		}
		return nil, badRequestf("message is not valid base64: %v", err)
	}
	return p, nil
}

// requestError describes an error of the JSON library for the client: a
// 400 that says what is wrong where. Where is the member the library's JSON
// pointer names, and an item of a batch (/messages/<index>/...) is named
// by its index. An error of ours that a publish object was read with
// (readMessage) keeps its own status.
func requestError(err error) error {
	var ptr jsontext.Pointer
	var what error
	var se *json.SemanticError
	var sy *jsontext.SyntacticError
	switch {
	case errors.As(err, &se):
		ptr = se.JSONPointer
		switch status := statusOf(se.Err); {
		case status == 400 || status == 413:
			what = se.Err
		case errors.Is(se.Err, json.ErrUnknownName):
			want := "topic, message, qos, retain, encoding"
			if se.GoType == reflect.TypeFor[batchRequest]() {
				want = "messages"
			}
			what = badRequestf("unknown field %q (want %s)", ptr.LastToken(), want)
		default:
			what = typeError(ptr, se)
		}
	case errors.As(err, &sy):
		ptr = sy.JSONPointer
		switch {
		case errors.Is(sy.Err, jsontext.ErrDuplicateName):
			what = badRequestf("duplicate field %q", ptr.LastToken())
		case errors.Is(sy.Err, io.ErrUnexpectedEOF):
			what = badRequestf("truncated JSON")
		default:
			what = badRequestf("malformed JSON at offset %d: %v", sy.ByteOffset, sy.Err)
		}
	default:
		what = badRequestf("malformed JSON: %v", err)
	}
	if i, ok := itemIndex(ptr); ok && what != errTooMany {
		return &itemError{index: i, err: what}
	}
	return what
}

// typeError says which type the member at ptr must have.
func typeError(ptr jsontext.Pointer, se *json.SemanticError) error {
	got := kindName(se.JSONKind)
	name := ptr.LastToken()
	switch se.GoType {
	case reflect.TypeFor[string]():
		return badRequestf("%s must be a string, got %s", name, got)
	case reflect.TypeFor[int]():
		if se.JSONKind == '0' {
			return badRequestf("%s must be an integer 0, 1 or 2, got %s", name, se.JSONValue)
		}
		return badRequestf("%s must be a number, got %s", name, got)
	case reflect.TypeFor[bool]():
		return badRequestf("%s must be a boolean, got %s", name, got)
	case reflect.TypeFor[[]message.Message]():
		return badRequestf("%s must be an array, got %s", name, got)
	default:
		return badRequestf("want a JSON object, got %s", got)
	}
}

// itemIndex is the batch item a JSON pointer is within: /messages/3/qos is
// in item 3.
func itemIndex(ptr jsontext.Pointer) (int, bool) {
	var tokens []string
	for tok := range ptr.Tokens() {
		if tokens = append(tokens, tok); len(tokens) == 2 {
			break
		}
	}
	if len(tokens) < 2 || tokens[0] != "messages" {
		return 0, false
	}
	i, err := strconv.Atoi(tokens[1])
	return i, err == nil
}
