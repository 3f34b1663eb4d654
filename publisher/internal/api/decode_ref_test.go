package api

// The decoder the publisher had before decode.go, kept as the reference
// that FuzzDecodeAgainstReference compares the current one with: same
// acceptance, same status, same batch index, same messages.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

// The decoder below walks the JSON itself instead of unmarshalling into a
// struct, because encoding/json is lenient where a publish must not be: it
// matches keys case-insensitively, keeps the last of duplicate keys and turns
// invalid UTF-8 and lone surrogate escapes into U+FFFD, which would publish a
// topic or payload the client never sent.

// refDecodePublish decodes and validates the body of POST /publish.
func refDecodePublish(body []byte, lim limits) (message.Message, error) {
	dec, err := refNewDecoder(body)
	if err != nil {
		return message.Message{}, err
	}
	m, err := refReadPublish(dec, lim)
	if err != nil {
		return message.Message{}, err
	}
	return m, refExpectEnd(dec)
}

// refDecodeBatch decodes and validates the body of POST /publish/batch: every
// message is checked before the caller may publish any.
func refDecodeBatch(body []byte, lim limits) ([]message.Message, error) {
	dec, err := refNewDecoder(body)
	if err != nil {
		return nil, err
	}
	var msgs []message.Message
	seen := false
	err = refReadObject(dec, func(key string) error {
		if key != "messages" {
			return badRequestf("unknown field %q (want messages)", key)
		}
		seen = true
		tok, err := dec.Token()
		if err != nil {
			return refSyntaxError(err)
		}
		if tok == nil {
			return badRequestf("messages must be an array, got null")
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return badRequestf("messages must be an array, got %s", refKindOfToken(tok))
		}
		for i := 0; dec.More(); i++ {
			if i == MaxBatchMessages {
				return badRequestf("messages holds more than %d items", MaxBatchMessages)
			}
			m, err := refReadPublish(dec, lim)
			if err != nil {
				return &itemError{index: i, err: err}
			}
			msgs = append(msgs, m)
		}
		if _, err := dec.Token(); err != nil {
			return refSyntaxError(err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := refExpectEnd(dec); err != nil {
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

func refNewDecoder(body []byte) (*json.Decoder, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequestf("body is empty, want a JSON object")
	}
	// RFC 8259 section 8.1: JSON text exchanged between systems is UTF-8.
	if !utf8.Valid(body) {
		return nil, badRequestf("body is not valid UTF-8")
	}
	return json.NewDecoder(bytes.NewReader(body)), nil
}

func refExpectEnd(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return badRequestf("unexpected data after the JSON object at offset %d", dec.InputOffset())
	}
	return nil
}

// refReadObject reads one JSON object, calling field for each key with the
// decoder positioned at its value; field must consume the value.
func refReadObject(dec *json.Decoder, field func(key string) error) error {
	tok, err := dec.Token()
	if err != nil {
		return refSyntaxError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return badRequestf("want a JSON object, got %s", refKindOfToken(tok))
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return refSyntaxError(err)
		}
		key, ok := tok.(string)
		if !ok {
			return badRequestf("malformed JSON at offset %d", dec.InputOffset())
		}
		if seen[key] {
			return badRequestf("duplicate field %q", key)
		}
		seen[key] = true
		if err := field(key); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return refSyntaxError(err)
	}
	return nil
}

// refPublishRequest is the JSON publish object; nil means absent or null.
type refPublishRequest struct {
	topic    *string
	message  *string
	qos      *int
	retain   *bool
	encoding *string
}

func refReadPublish(dec *json.Decoder, lim limits) (message.Message, error) {
	var req refPublishRequest
	err := refReadObject(dec, func(key string) error {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return refSyntaxError(err)
		}
		var err error
		switch key {
		case "topic":
			req.topic, err = refStringValue(key, raw)
		case "message":
			req.message, err = refStringValue(key, raw)
		case "qos":
			req.qos, err = refIntValue(key, raw)
		case "retain":
			req.retain, err = refBoolValue(key, raw)
		case "encoding":
			req.encoding, err = refStringValue(key, raw)
		default:
			err = badRequestf("unknown field %q (want topic, message, qos, retain, encoding)", key)
		}
		return err
	})
	if err != nil {
		return message.Message{}, err
	}
	return req.refToMessage(lim)
}

func (req refPublishRequest) refToMessage(lim limits) (message.Message, error) {
	m := message.Message{QoS: lim.defaultQoS}
	if req.topic == nil {
		return m, badRequestf("topic is required")
	}
	if err := message.ValidateTopic(*req.topic); err != nil {
		return m, err
	}
	m.Topic = *req.topic
	if req.message == nil {
		return m, badRequestf("message is required")
	}
	if req.qos != nil {
		if err := message.ValidateQoS(*req.qos); err != nil {
			return m, err
		}
		m.QoS = byte(*req.qos)
	}
	if req.retain != nil {
		m.Retain = *req.retain
	}
	encoding := "text"
	if req.encoding != nil {
		encoding = *req.encoding
	}
	switch encoding {
	case "text":
		m.Payload = []byte(*req.message)
	case "base64":
		p, err := refDecodeBase64(*req.message)
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
func refDecodeBase64(s string) ([]byte, error) {
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

func refStringValue(key string, raw json.RawMessage) (*string, error) {
	if refIsNull(raw) {
		return nil, nil
	}
	if raw[0] != '"' {
		return nil, badRequestf("%s must be a string, got %s", key, refKindOfValue(raw))
	}
	if err := refCheckSurrogates(raw); err != nil {
		return nil, badRequestf("%s: %v", key, err)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, badRequestf("%s: %v", key, err)
	}
	return &s, nil
}

func refIntValue(key string, raw json.RawMessage) (*int, error) {
	if refIsNull(raw) {
		return nil, nil
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return nil, badRequestf("%s must be a number, got %s", key, refKindOfValue(raw))
	}
	n, err := strconv.Atoi(string(raw))
	if err != nil {
		return nil, badRequestf("%s must be an integer 0, 1 or 2, got %s", key, raw)
	}
	return &n, nil
}

func refBoolValue(key string, raw json.RawMessage) (*bool, error) {
	switch string(raw) {
	case "null":
		return nil, nil
	case "true", "false":
		b := string(raw) == "true"
		return &b, nil
	}
	return nil, badRequestf("%s must be a boolean, got %s", key, refKindOfValue(raw))
}

func refIsNull(raw json.RawMessage) bool { return string(raw) == "null" }

// refCheckSurrogates refuses \u escapes of UTF-16 surrogates that do not form
// a pair: they encode no character, and encoding/json would silently turn
// them into U+FFFD. raw is a syntactically valid JSON string.
func refCheckSurrogates(raw []byte) error {
	for i := 1; i < len(raw)-1; i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if raw[i] != 'u' {
			continue // a one-character escape, \\ included
		}
		r := refHex4(raw[i+1 : i+5])
		i += 4
		switch {
		case r >= 0xd800 && r <= 0xdbff:
			if i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
				if lo := refHex4(raw[i+3 : i+7]); lo >= 0xdc00 && lo <= 0xdfff {
					i += 6
					continue
				}
			}
			return fmt.Errorf("unpaired surrogate \\u%04x is not a character", r)
		case r >= 0xdc00 && r <= 0xdfff:
			return fmt.Errorf("unpaired surrogate \\u%04x is not a character", r)
		}
	}
	return nil
}

func refHex4(b []byte) rune {
	n, err := strconv.ParseUint(string(b), 16, 16)
	if err != nil {
		return -1
	}
	return rune(n)
}

func refKindOfValue(raw json.RawMessage) string {
	switch raw[0] {
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

func refKindOfToken(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			return "an array"
		}
		return "an object"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	default:
		return "a number"
	}
}

// refSyntaxError turns a decoder error into a 400 with the offset, or passes a
// body-size error through.
func refSyntaxError(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return badRequestf("malformed JSON at offset %d: %v", se.Offset, se)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequestf("truncated JSON")
	default:
		return badRequestf("malformed JSON: %v", err)
	}
}
