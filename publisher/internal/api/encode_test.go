package api

import (
	"bytes"
	"encoding/json"
	"testing"
)

// The hand-written answers are byte for byte what encoding/json writes.
func TestMarshalMatchesEncodingJSON(t *testing.T) {
	topics := []string{
		"living/room1/temperature", "", `quote " and \ backslash`, "<b>&amp;</b>",
		"caf\u00e9/\U0001F600", "line\u2028para\u2029", "ctl \x00\x01\b\f\n\r\t\x1f\x7f",
		"bad \xff utf-8 \xc3", "\u00e9\u0301",
	}
	var values []any
	for i, topic := range topics {
		values = append(values, publishResponse{Topic: topic, QoS: byte(i % 3), Retain: i%2 == 0, Bytes: i * 1000})
	}
	results := make([]batchResult, len(topics))
	for i, topic := range topics {
		results[i] = batchResult{Index: i, Topic: topic, QoS: byte(i % 3), Retain: i%2 == 1, Bytes: i,
			Acknowledged: i%3 != 0, Status: 200 + i, Error: topics[(i+3)%len(topics)]}
	}
	values = append(values,
		batchResponse{Acknowledged: 7, Results: results},
		batchResponse{Acknowledged: 0, Results: []batchResult{}},
		batchResponse{},
	)
	for _, v := range values {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		var got bytes.Buffer
		if err := marshal(&got, v); err != nil {
			t.Fatalf("marshal(%+v) = %v", v, err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("marshal(%+v)\n got %s\nwant %s", v, got.Bytes(), want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"a/b", "<>&\"\\", "\u2028\xff\x00", "caf\u00e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}
