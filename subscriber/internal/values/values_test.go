package values

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestExtract(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    []Value
	}{
		// Numbers in every form JSON has.
		{"integer", `1`, []Value{{"value", 1}}},
		{"zero", `0`, []Value{{"value", 0}}},
		{"negative zero reads as zero", `-0`, []Value{{"value", 0}}},
		{"negative exponent form", `-2.5e3`, []Value{{"value", -2500}}},
		{"capital E and plus", `1.5E+2`, []Value{{"value", 150}}},
		{"fraction", `21.5`, []Value{{"value", 21.5}}},
		{"surrounding whitespace", " \t\r\n21.5\n", []Value{{"value", 21.5}}},
		{"largest float64", `1.7976931348623157e308`, []Value{{"value", math.MaxFloat64}}},
		{"huge exponent is left out", `1e400`, nil},
		{"huge negative exponent is left out", `-1e400`, nil},
		{"tiny exponent is zero", `1e-400`, []Value{{"value", 0}}},
		{"smallest subnormal", `5e-324`, []Value{{"value", 5e-324}}},
		{"many digits", `3.14159265358979323846264338327950288419716939937510`, []Value{{"value", math.Pi}}},
		{"object", `{"temp": 22.4, "hum": 41}`, []Value{{"temp", 22.4}, {"hum", 41}}},
		{"nested object", `{"temp": 22.4, "env": {"hum": 41, "co2": {"ppm": 415}}}`,
			[]Value{{"temp", 22.4}, {"env.hum", 41}, {"env.co2.ppm", 415}}},
		{"zero member", `{"a": 0, "b": -0.0}`, []Value{{"a", 0}, {"b", 0}}},
		{"non-numbers ignored", `{"on": true, "off": false, "none": null, "name": "x", "n": 3}`, []Value{{"n", 3}}},
		{"arrays ignored", `{"list": [1, 2, {"x": 3}], "n": 4}`, []Value{{"n", 4}}},
		{"huge member left out, others kept", `{"a": 1e999, "b": 2}`, []Value{{"b", 2}}},
		{"empty object", `{}`, nil},
		{"repeated key: the last wins", `{"a": 1, "b": 2, "a": 3}`, []Value{{"a", 3}, {"b", 2}}},
		{"same field spelled twice: the last wins", `{"a.b": 1, "a": {"b": 2}}`, []Value{{"a.b", 2}}},
		{"escaped key", `{"t\u00e9mp\"x": 1, "a\/b": 2}`, []Value{{"témp\"x", 1}, {"a/b", 2}}},
		{"surrogate pair key", `{"\ud83c\udf21": 5}`, []Value{{"🌡", 5}}},
		{"lone surrogate key", `{"\ud83c": 5}`, []Value{{"\ufffd", 5}}},
		{"empty key gives no field", `{"": 1, "a": {"": 2}, "b": 3}`, []Value{{"b", 3}}},
		{"control character in a key gives no field", `{"a\u0000b": 1, "c\nd": 2, "e": 3}`, []Value{{"e", 3}}},
		{"unicode key", `{"température": 21, "日本": {"値": 2}}`, []Value{{"température", 21}, {"日本.値", 2}}},

		// Strings that look like numbers are strings.
		{"quoted number", `"21.5"`, nil},
		{"quoted number member", `{"t": "21.5"}`, nil},

		// Not JSON: no values at all.
		{"empty", ``, nil},
		{"blank", "  \n", nil},
		{"text", `temperature=21.5`, nil},
		{"NaN", `NaN`, nil},
		{"Infinity", `Infinity`, nil},
		{"negative Infinity", `-Infinity`, nil},
		{"NaN member", `{"a": 1, "b": NaN}`, nil},
		{"leading plus", `+1`, nil},
		{"leading zero", `01`, nil},
		{"bare fraction", `.5`, nil},
		{"trailing dot", `1.`, nil},
		{"bare minus", `-`, nil},
		{"exponent without digits", `1e`, nil},
		{"hex", `0x10`, nil},
		{"number then text", `21.5 C`, nil},
		{"two numbers", `1 2`, nil},
		{"truncated object", `{"a": 1, "b": 2`, nil},
		{"trailing comma", `{"a": 1,}`, nil},
		{"single quotes", `{'a': 1}`, nil},
		{"unquoted key", `{a: 1}`, nil},
		{"bad escape", `{"a\x": 1}`, nil},
		{"raw control character in a string", "{\"a\": \"x\ty\", \"b\": 1}", nil},
		{"top-level array", `[1, 2, 3]`, nil},
		{"top-level true", `true`, nil},
		{"byte order mark", "\ufeff{\"a\": 1}", nil},
		{"invalid UTF-8 in a string", "{\"a\": 1, \"b\": \"\xff\"}", nil},
		{"invalid UTF-8 in a key", "{\"\xc3\x28\": 1}", nil},
		{"invalid UTF-8 after the value", "1 \xff", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Extract(nil, []byte(tt.payload))
			if !equal(got, tt.want) {
				t.Errorf("Extract(%q) = %v, want %v", tt.payload, got, tt.want)
			}
		})
	}
}

func equal(a, b []Value) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Field != b[i].Field || a[i].Number != b[i].Number || math.Signbit(a[i].Number) != math.Signbit(b[i].Number) {
			return false
		}
	}
	return true
}

func TestExtractNesting(t *testing.T) {
	// nested wraps {"n": 1} in depth-1 objects named l1, l2, ...
	nested := func(depth int) string {
		s := `{"n": 1}`
		for d := depth - 1; d >= 1; d-- {
			s = fmt.Sprintf(`{"l%d": %s}`, d, s)
		}
		return s
	}
	path := func(depth int) string {
		var parts []string
		for d := 1; d < depth; d++ {
			parts = append(parts, "l"+strconv.Itoa(d))
		}
		return strings.Join(append(parts, "n"), ".")
	}
	tests := []struct {
		name    string
		payload string
		want    []Value
	}{
		{"at the depth bound", nested(MaxDepth), []Value{{path(MaxDepth), 1}}},
		{"past the depth bound: no field", nested(MaxDepth + 1), nil},
		{"past the depth bound, beside a shallow member", `{"a": 2, "deep": ` + nested(MaxDepth) + `}`, []Value{{"a", 2}}},
		{"deep arrays within the nesting bound", strings.Repeat("[", maxNesting-1) + strings.Repeat("]", maxNesting-1), nil},
		{"deep arrays in an object, within the bound", `{"a": 1, "x": ` + strings.Repeat("[", maxNesting-1) + strings.Repeat("]", maxNesting-1) + `}`, []Value{{"a", 1}}},
		{"nested past the nesting bound: not read", `{"a": 1, "x": ` + strings.Repeat("[", maxNesting) + strings.Repeat("]", maxNesting) + `}`, nil},
		{"a quarter of a million brackets", strings.Repeat("[", 256<<10), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Extract(nil, []byte(tt.payload)); !equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestExtractBounds(t *testing.T) {
	t.Run("field count", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("{")
		for i := range MaxFields + 10 {
			fmt.Fprintf(&b, `"f%03d": %d,`, i, i)
		}
		b.WriteString(`"f000": -1}`) // a field already kept takes its new number
		got := Extract(nil, []byte(b.String()))
		if len(got) != MaxFields {
			t.Fatalf("%d values, want %d", len(got), MaxFields)
		}
		if got[0] != (Value{"f000", -1}) || got[MaxFields-1] != (Value{fmt.Sprintf("f%03d", MaxFields-1), MaxFields - 1}) {
			t.Errorf("first and last %v %v, want f000=-1 and the %dth field", got[0], got[MaxFields-1], MaxFields)
		}
	})
	t.Run("field length", func(t *testing.T) {
		long := strings.Repeat("k", MaxFieldBytes)
		got := Extract(nil, []byte(`{"`+long+`": 1, "`+long[1:]+`": 2, "a": {"`+long[1:]+`": 3}}`))
		want := []Value{{long, 1}, {long[1:], 2}}
		if !equal(got, want) {
			t.Errorf("got %d values, want the fields of %d and %d bytes only", len(got), MaxFieldBytes, MaxFieldBytes-1)
		}
	})
	t.Run("appends to dst", func(t *testing.T) {
		dst := []Value{{"x", 9}}
		got := Extract(dst, []byte(`{"x": 1}`))
		if !equal(got, []Value{{"x", 9}, {"x", 1}}) {
			t.Errorf("got %v, want the earlier value kept and this payload's added", got)
		}
		if got := Extract(dst, []byte(`{"x": 1`)); !equal(got, dst) {
			t.Errorf("invalid payload: got %v, want dst unchanged", got)
		}
	})
}

// bigPayload is an object of about size bytes: numeric members, strings,
// arrays and nested objects.
func bigPayload(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"temp": 21.5, "env": {"hum": 41}, "samples": [`)
	for i := 0; b.Len() < size-200; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"t": %d, "v": %d.25, "label": "sample %d"}`, i, i, i)
	}
	b.WriteString(`], "note": "end", "last": -7e-3}`)
	return b.Bytes()
}

func TestExtractLargePayload(t *testing.T) {
	p := bigPayload(256 << 10)
	if len(p) < 250<<10 || len(p) > 256<<10 {
		t.Fatalf("payload of %d bytes, want about 256 KiB", len(p))
	}
	got := Extract(nil, p)
	want := []Value{{"temp", 21.5}, {"env.hum", 41}, {"last", -7e-3}}
	if !equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// Cut anywhere, it is not JSON any more.
	if got := Extract(nil, p[:len(p)-1]); len(got) != 0 {
		t.Errorf("truncated: got %v, want nothing", got)
	}
}

func BenchmarkExtract(b *testing.B) {
	for _, bb := range []struct {
		name    string
		payload []byte
	}{
		{"text", []byte("seq=1234 value=21.5")},
		{"number", []byte("21.5")},
		{"object", []byte(`{"temperature":21.5,"humidity":40}`)},
		{"256KiB", bigPayload(256 << 10)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			var dst []Value
			b.SetBytes(int64(len(bb.payload)))
			b.ReportAllocs()
			for b.Loop() {
				dst = Extract(dst[:0], bb.payload)
			}
		})
	}
}

// reference computes the values of payload with encoding/json's tokenizer,
// following the package's rules, independently of its parser. ok is false
// where the rules say the payload is not read at all.
func reference(payload []byte) (vals []Value, ok bool) {
	if !utf8.Valid(payload) || !json.Valid(payload) {
		return nil, false
	}
	add := func(field string, n float64) {
		if n == 0 {
			n = 0
		}
		for i := range vals {
			if vals[i].Field == field {
				vals[i].Number = n
				return
			}
		}
		if len(vals) < MaxFields {
			vals = append(vals, Value{field, n})
		}
	}
	number := func(tok json.Number) (float64, bool) {
		n, err := strconv.ParseFloat(string(tok), 64)
		return n, err == nil || !errors.Is(err, strconv.ErrRange)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, false
	}
	switch tok := tok.(type) {
	case json.Number:
		if n, ok := number(tok); ok && !math.IsInf(n, 0) {
			add(ValueField, n)
		}
		return vals, true
	case json.Delim:
		if tok != '{' {
			// A top-level array has no values, but is still read up
			// to the nesting bound.
			return nil, depth(payload) <= maxNesting
		}
	default:
		return nil, true
	}
	// Walk the object: frames of (is object, path length, usable).
	type frame struct {
		object bool
		path   string
		usable bool
		key    string // the pending key of an object frame
		hasKey bool
	}
	stack := []frame{{object: true, usable: true}}
	for len(stack) > 0 {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		top := &stack[len(stack)-1]
		if top.object && !top.hasKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			top.key, top.hasKey = tok.(string), true
			continue
		}
		// A value: of the pending key, or an array element.
		field, usable := "", false
		if top.object {
			top.hasKey = false
			usable = top.usable && len(stack) <= MaxDepth && top.key != "" && !strings.ContainsFunc(top.key, func(r rune) bool { return r < 0x20 || r == 0x7f })
			field = top.key
			if top.path != "" {
				field = top.path + "." + top.key
			}
			usable = usable && len(field) <= MaxFieldBytes
		}
		switch tok := tok.(type) {
		case json.Delim:
			switch tok {
			case '{':
				stack = append(stack, frame{object: true, path: field, usable: usable})
			case '[':
				stack = append(stack, frame{})
			default: // ']'
				stack = stack[:len(stack)-1]
			}
		case json.Number:
			if n, ok := number(tok); ok && usable && !math.IsInf(n, 0) {
				add(field, n)
			}
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return vals, depth(payload) <= maxNesting
}

// depth is the deepest nesting of objects and arrays in a valid JSON text.
func depth(payload []byte) int {
	d, deepest, inString, escaped := 0, 0, false, false
	for _, c := range payload {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			d++
			deepest = max(deepest, d)
		case c == '}' || c == ']':
			d--
		}
	}
	return deepest
}

func FuzzExtract(f *testing.F) {
	for _, s := range []string{
		`21.5`, `-2.5e3`, `0`, `1e400`, `1e-400`, `"21.5"`, `NaN`, `{"temp": 22.4, "env": {"hum": 41}}`,
		`{"a": [1, {"b": 2}], "c": {"d": {"e": -0}}}`, `{"a": 1, "a": 2}`, `{"a.b": 1, "a": {"b": 2}}`,
		`{"\ud83c": 1, "\u0000": 2}`, "{\"a\": \"\xff\"}", `{"a": 1,}`, `[[[[]]]]`, `{"": {"x": 1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got := Extract(nil, payload)
		for _, v := range got {
			if math.IsNaN(v.Number) || math.IsInf(v.Number, 0) || math.Signbit(v.Number) && v.Number == 0 {
				t.Errorf("%q gave the number %v for %q", payload, v.Number, v.Field)
			}
			if v.Field == "" || len(v.Field) > MaxFieldBytes || !utf8.ValidString(v.Field) ||
				strings.ContainsFunc(v.Field, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Errorf("%q gave the field %q", payload, v.Field)
			}
		}
		if len(got) > MaxFields {
			t.Errorf("%q gave %d values, more than %d", payload, len(got), MaxFields)
		}
		want, ok := reference(payload)
		if !ok && len(got) > 0 {
			t.Fatalf("%q is not read by the rules, yet gave %v", payload, got)
		}
		if ok && !equal(got, want) {
			t.Fatalf("Extract(%q) = %v, the reference gives %v", payload, got, want)
		}
	})
}
