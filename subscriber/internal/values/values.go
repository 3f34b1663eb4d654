// Package values finds the numbers in a message's payload: the readings
// that GET /series charts and GET /topics shows. A payload that is a JSON
// number has the field "value"; a JSON object has one field per numeric
// member, named by its dotted path ({"env": {"hum": 41}} gives "env.hum").
// Everything else (text, binary, JSON without numbers) has no values.
//
// The rules are strict so that they never guess: the whole payload must be
// valid JSON (RFC 8259) and valid UTF-8, or it has no values at all; a
// string that looks like a number ("21.5" in quotes) is a string; arrays and
// what they hold are ignored; a number too large for a float64 (1e400) is
// left out, one too small to be told from zero is zero.
package values

import (
	"strconv"
	"unicode/utf8"
)

// Value is one number of a payload.
type Value struct {
	Field  string
	Number float64
}

// Bounds on what one payload gives, so that a large or hostile payload
// costs the store no more than a handful of rows.
const (
	// MaxFields is the most values one payload gives: the first MaxFields
	// distinct fields, in the order they appear.
	MaxFields = 64
	// MaxDepth is how deep in nested objects a member still gives a field:
	// a path has at most MaxDepth parts.
	MaxDepth = 8
	// MaxFieldBytes is the longest field name; members with longer paths
	// give none.
	MaxFieldBytes = 200
	// maxNesting is how deep objects and arrays may nest at all: a payload
	// nested deeper is not read (it has no values).
	maxNesting = 1000
)

// ValueField is the field of a payload that is a bare number.
const ValueField = "value"

// Extract appends the values of payload to dst and returns it. Within a
// payload each field comes once: where an object repeats a key (or two
// paths spell the same field, {"a.b": 1, "a": {"b": 2}}), the last one
// wins, as in JavaScript's JSON.parse.
func Extract(dst []Value, payload []byte) []Value {
	start := skipSpace(payload, 0)
	if start == len(payload) {
		return dst
	}
	// Most payloads that are not JSON are told by their first byte.
	if c := payload[start]; c != '{' && c != '-' && (c < '0' || c > '9') {
		return dst
	}
	if !utf8.Valid(payload) {
		return dst
	}
	p := parser{in: payload, pos: start, out: dst, base: len(dst)}
	if payload[start] == '{' {
		if !p.object(0, true) {
			return dst
		}
	} else {
		n, valid, usable := p.number()
		if !valid {
			return dst
		}
		if usable {
			p.add(ValueField, n)
		}
	}
	if skipSpace(payload, p.pos) != len(payload) {
		return dst // trailing bytes: not JSON
	}
	return p.out
}

// parser reads one JSON text, collecting the numbers of objects.
type parser struct {
	in   []byte
	pos  int
	out  []Value
	base int    // out[base:] are this payload's values
	path []byte // the dotted path of the member being read
	key  []byte // scratch for decoding keys
}

func skipSpace(in []byte, i int) int {
	for i < len(in) {
		switch in[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// add records field = n: a field already seen takes the new number.
func (p *parser) add(field string, n float64) {
	if n == 0 {
		n = 0 // -0 reads as 0 everywhere
	}
	for i := p.base; i < len(p.out); i++ {
		if p.out[i].Field == field {
			p.out[i].Number = n
			return
		}
	}
	if len(p.out)-p.base < MaxFields {
		p.out = append(p.out, Value{Field: field, Number: n})
	}
}

// value reads any JSON value at p.pos. depth is how many containers hold
// it; collect says whether numbers of objects in it give fields.
func (p *parser) value(depth int, collect bool) bool {
	if p.pos >= len(p.in) {
		return false
	}
	switch c := p.in[p.pos]; {
	case c == '{':
		return p.object(depth, collect)
	case c == '[':
		return p.array(depth)
	case c == '"':
		return p.skipString()
	case c == '-' || c >= '0' && c <= '9':
		_, valid, _ := p.number()
		return valid
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	}
	return false
}

func (p *parser) literal(s string) bool {
	if len(p.in)-p.pos < len(s) || string(p.in[p.pos:p.pos+len(s)]) != s {
		return false
	}
	p.pos += len(s)
	return true
}

// object reads an object whose '{' is at p.pos. Its members are at depth+1.
func (p *parser) object(depth int, collect bool) bool {
	depth++
	if depth > maxNesting {
		return false
	}
	collect = collect && depth <= MaxDepth
	p.pos = skipSpace(p.in, p.pos+1)
	if p.pos < len(p.in) && p.in[p.pos] == '}' {
		p.pos++
		return true
	}
	for {
		if p.pos >= len(p.in) || p.in[p.pos] != '"' {
			return false
		}
		key, ok := p.readKey()
		if !ok {
			return false
		}
		p.pos = skipSpace(p.in, p.pos)
		if p.pos >= len(p.in) || p.in[p.pos] != ':' {
			return false
		}
		p.pos = skipSpace(p.in, p.pos+1)
		// The member's path, while its value is read.
		outer, size := len(p.path), len(key)
		if outer > 0 {
			size += outer + 1
		}
		member := collect && usableKey(key) && size <= MaxFieldBytes
		if member {
			if outer > 0 {
				p.path = append(p.path, '.')
			}
			p.path = append(p.path, key...)
		}
		if p.pos < len(p.in) && (p.in[p.pos] == '-' || p.in[p.pos] >= '0' && p.in[p.pos] <= '9') {
			n, valid, usable := p.number()
			if !valid {
				return false
			}
			if member && usable {
				p.add(string(p.path), n)
			}
		} else if !p.value(depth, member) {
			return false
		}
		p.path = p.path[:outer]
		if more, ok := p.next('}'); !more {
			return ok
		}
	}
}

// usableKey reports whether a member named key gives a field: not empty,
// and no control character (a field is stored as text, which in
// PostgreSQL cannot hold U+0000).
func usableKey(key []byte) bool {
	if len(key) == 0 {
		return false
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// next reads what follows a member or an element: a comma, after which
// more follow, or close, which ends them; ok is false for anything else.
func (p *parser) next(close byte) (more, ok bool) {
	p.pos = skipSpace(p.in, p.pos)
	if p.pos >= len(p.in) {
		return false, false
	}
	switch p.in[p.pos] {
	case ',':
		p.pos = skipSpace(p.in, p.pos+1)
		return true, true
	case close:
		p.pos++
		return false, true
	}
	return false, false
}

// array reads an array whose '[' is at p.pos; nothing in it gives a field.
func (p *parser) array(depth int) bool {
	depth++
	if depth > maxNesting {
		return false
	}
	p.pos = skipSpace(p.in, p.pos+1)
	if p.pos < len(p.in) && p.in[p.pos] == ']' {
		p.pos++
		return true
	}
	for {
		if !p.value(depth, false) {
			return false
		}
		if more, ok := p.next(']'); !more {
			return ok
		}
	}
}

// skipString reads a string whose '"' is at p.pos without decoding it.
func (p *parser) skipString() bool {
	i := p.pos + 1
	for i < len(p.in) {
		switch c := p.in[i]; {
		case c == '"':
			p.pos = i + 1
			return true
		case c == '\\':
			n := escapeLen(p.in[i:])
			if n == 0 {
				return false
			}
			i += n
		case c < 0x20:
			return false
		default:
			i++
		}
	}
	return false
}

// escapeLen is the length of the valid escape sequence at the start of s
// (which starts with a backslash), or 0.
func escapeLen(s []byte) int {
	if len(s) < 2 {
		return 0
	}
	switch s[1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if len(s) < 6 {
			return 0
		}
		for _, c := range s[2:6] {
			if hexValue(c) < 0 {
				return 0
			}
		}
		return 6
	}
	return 0
}

// unescape is the byte a two-character escape stands for.
func unescape(c byte) byte {
	switch c {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return c // '"', '\\' and '/' stand for themselves
}

func hexValue(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

func hex4(s []byte) rune {
	return hexValue(s[0])<<12 | hexValue(s[1])<<8 | hexValue(s[2])<<4 | hexValue(s[3])
}

// readKey decodes the string at p.pos into p.key and returns it (valid
// until the next key). A lone surrogate escape decodes as U+FFFD, as
// encoding/json does.
func (p *parser) readKey() ([]byte, bool) {
	k := p.key[:0]
	i := p.pos + 1
	for i < len(p.in) {
		c := p.in[i]
		switch {
		case c == '"':
			p.pos = i + 1
			p.key = k
			return k, true
		case c < 0x20:
			return nil, false
		case c != '\\':
			k = append(k, c)
			i++
			continue
		}
		n := escapeLen(p.in[i:])
		if n == 0 {
			return nil, false
		}
		if n == 2 {
			k = append(k, unescape(p.in[i+1]))
			i += 2
			continue
		}
		r := hex4(p.in[i+2:])
		i += 6
		if r >= 0xD800 && r < 0xDC00 && escapeLen(p.in[i:]) == 6 && p.in[i+1] == 'u' {
			if lo := hex4(p.in[i+2:]); lo >= 0xDC00 && lo < 0xE000 {
				r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
				i += 6
			}
		}
		if r >= 0xD800 && r < 0xE000 {
			r = utf8.RuneError
		}
		k = utf8.AppendRune(k, r)
	}
	return nil, false
}

// number reads a number at p.pos (RFC 8259 section 6). valid is false for
// what is not a JSON number; usable is false for a valid number beyond the
// float64 range (1e400), which is read and left out.
func (p *parser) number() (n float64, valid, usable bool) {
	in, i := p.in, p.pos
	if i < len(in) && in[i] == '-' {
		i++
	}
	switch {
	case i < len(in) && in[i] == '0':
		i++
	case i < len(in) && in[i] >= '1' && in[i] <= '9':
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
	default:
		return 0, false, false
	}
	if i < len(in) && in[i] == '.' {
		i++
		d := i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if i == d {
			return 0, false, false
		}
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		d := i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if i == d {
			return 0, false, false
		}
	}
	text := in[p.pos:i]
	p.pos = i
	// The grammar is checked above, so the only error left is ErrRange:
	// beyond float64. (Below its smallest, ParseFloat rounds to zero.)
	n, err := strconv.ParseFloat(string(text), 64)
	return n, true, err == nil
}
