package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/telemetry-stack/mqtt-stack/publisher/internal/message"
)

var testLimits = newLimits(1, 16, 1<<20, 1<<20)

func TestDecodePublish(t *testing.T) {
	tests := []struct {
		name string
		body string
		want message.Message
	}{
		{"defaults", `{"topic":"a/b","message":"21.5"}`, message.Message{Topic: "a/b", Payload: []byte("21.5"), QoS: 1}},
		{"everything", `{"topic":"a","message":"x","qos":2,"retain":true,"encoding":"text"}`, message.Message{Topic: "a", Payload: []byte("x"), QoS: 2, Retain: true}},
		{"qos 0", `{"topic":"a","message":"x","qos":0}`, message.Message{Topic: "a", Payload: []byte("x")}},
		{"nulls take defaults", `{"topic":"a","message":"x","qos":null,"retain":null,"encoding":null}`, message.Message{Topic: "a", Payload: []byte("x"), QoS: 1}},
		{"empty payload", `{"topic":"a","message":""}`, message.Message{Topic: "a", Payload: []byte{}, QoS: 1}},
		{"base64 padded", `{"topic":"a","message":"AP8=","encoding":"base64"}`, message.Message{Topic: "a", Payload: []byte{0, 0xff}, QoS: 1}},
		{"base64 unpadded", `{"topic":"a","message":"AP8","encoding":"base64"}`, message.Message{Topic: "a", Payload: []byte{0, 0xff}, QoS: 1}},
		{"base64 empty", `{"topic":"a","message":"","encoding":"base64"}`, message.Message{Topic: "a", Payload: []byte{}, QoS: 1}},
		{"escapes", `{"topic":"caf\u00e9/\ud83d\ude00","message":"a\"\\\n\u0000"}`, message.Message{Topic: "café/😀", Payload: []byte("a\"\\\n\x00"), QoS: 1}},
		{"names with escapes", `{"\u0074opic":"a","m\u0065ssage":"x","q\u006fs":2}`, message.Message{Topic: "a", Payload: []byte("x"), QoS: 2}},
		{"whitespace around", " \n\t{ \"topic\" : \"a\" , \"message\" : \"x\" } \n", message.Message{Topic: "a", Payload: []byte("x"), QoS: 1}},
		{"payload at the limit", `{"topic":"a","message":"0123456789abcdef"}`, message.Message{Topic: "a", Payload: []byte("0123456789abcdef"), QoS: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodePublish([]byte(tt.body), testLimits)
			if err != nil {
				t.Fatalf("decodePublish(%s) = %v", tt.body, err)
			}
			if got.Topic != tt.want.Topic || !bytes.Equal(got.Payload, tt.want.Payload) || got.QoS != tt.want.QoS || got.Retain != tt.want.Retain {
				t.Errorf("decodePublish(%s) = %+v, want %+v", tt.body, got, tt.want)
			}
		})
	}
}

func TestDecodePublishErrors(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantDetail string
	}{
		{"empty body", ``, 400, "empty"},
		{"blank body", "  \n", 400, "empty"},
		{"not JSON", `hello`, 400, "malformed JSON"},
		{"truncated", `{"topic":"a","message":"x"`, 400, "truncated"},
		{"truncated string", `{"topic":"a","mess`, 400, "truncated"},
		{"array", `[1,2]`, 400, "want a JSON object, got an array"},
		{"string", `"topic"`, 400, "want a JSON object, got a string"},
		{"null", `null`, 400, "topic is required"},
		{"trailing garbage", `{"topic":"a","message":"x"}x`, 400, "after top-level value"},
		{"two objects", `{"topic":"a","message":"x"}{}`, 400, "after top-level value"},
		{"unknown field", `{"topic":"a","message":"x","colour":"red"}`, 400, `unknown field "colour"`},
		{"field in other case", `{"Topic":"a","message":"x"}`, 400, `unknown field "Topic"`},
		{"duplicate field", `{"topic":"a","topic":"b","message":"x"}`, 400, `duplicate field "topic"`},
		{"missing topic", `{"message":"x"}`, 400, "topic is required"},
		{"null topic", `{"topic":null,"message":"x"}`, 400, "topic is required"},
		{"missing message", `{"topic":"a"}`, 400, "message is required"},
		{"topic number", `{"topic":1,"message":"x"}`, 400, "topic must be a string, got a number"},
		{"message object", `{"topic":"a","message":{}}`, 400, "message must be a string, got an object"},
		{"empty topic", `{"topic":"","message":"x"}`, 400, "topic must not be empty"},
		{"plus", `{"topic":"a/+","message":"x"}`, 400, "wildcard '+'"},
		{"hash", `{"topic":"a/#","message":"x"}`, 400, "wildcard '#'"},
		{"dollar", `{"topic":"$SYS/x","message":"x"}`, 400, `start with "$"`},
		{"U+0000", `{"topic":"a\u0000","message":"x"}`, 400, "U+0000"},
		{"control character", `{"topic":"a\u0001","message":"x"}`, 400, "control character"},
		{"too long topic", `{"topic":"` + strings.Repeat("a", 65536) + `","message":"x"}`, 400, "longer than 65535"},
		{"raw invalid UTF-8", "{\"topic\":\"a\xff\",\"message\":\"x\"}", 400, "not valid UTF-8"},
		{"lone high surrogate", `{"topic":"a\ud800","message":"x"}`, 400, "surrogate"},
		{"lone low surrogate", `{"topic":"a\udc00b","message":"x"}`, 400, "surrogate"},
		{"reversed pair", `{"topic":"\ude00\ud83d","message":"x"}`, 400, "surrogate"},
		{"surrogate in message", `{"topic":"a","message":"\ud800"}`, 400, "surrogate"},
		{"qos 3", `{"topic":"a","message":"x","qos":3}`, 400, "qos must be 0, 1 or 2"},
		{"qos -1", `{"topic":"a","message":"x","qos":-1}`, 400, "qos must be 0, 1 or 2"},
		{"qos string", `{"topic":"a","message":"x","qos":"1"}`, 400, "qos must be a number, got a string"},
		{"qos fraction", `{"topic":"a","message":"x","qos":1.5}`, 400, "integer"},
		{"qos exponent", `{"topic":"a","message":"x","qos":1e0}`, 400, "integer"},
		{"qos huge", `{"topic":"a","message":"x","qos":99999999999999999999}`, 400, "integer"},
		{"retain string", `{"topic":"a","message":"x","retain":"true"}`, 400, "retain must be a boolean"},
		{"retain number", `{"topic":"a","message":"x","retain":1}`, 400, "retain must be a boolean"},
		{"unknown encoding", `{"topic":"a","message":"x","encoding":"hex"}`, 400, `unknown encoding "hex"`},
		{"encoding case", `{"topic":"a","message":"x","encoding":"BASE64"}`, 400, "unknown encoding"},
		{"bad base64", `{"topic":"a","message":"!!!!","encoding":"base64"}`, 400, "not valid base64"},
		{"url-safe base64", `{"topic":"a","message":"_-8=","encoding":"base64"}`, 400, "not valid base64"},
		{"base64 with newline", `{"topic":"a","message":"AP8=\n","encoding":"base64"}`, 400, "line breaks"},
		{"base64 bad padding", `{"topic":"a","message":"AP8==","encoding":"base64"}`, 400, "not valid base64"},
		{"base64 nonzero padding bits", `{"topic":"a","message":"AP9=","encoding":"base64"}`, 400, "not valid base64"},
		{"payload over the limit", `{"topic":"a","message":"0123456789abcdefX"}`, 413, "more than MAX_MESSAGE_BYTES (16)"},
		{"base64 payload over the limit", `{"topic":"a","encoding":"base64","message":"` + base64.StdEncoding.EncodeToString(make([]byte, 17)) + `"}`, 413, "more than MAX_MESSAGE_BYTES"},
		{"deep nesting", `{"topic":"a","message":"x","extra":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodePublish([]byte(tt.body), testLimits)
			if err == nil {
				t.Fatalf("decodePublish(%.60s) succeeded, want %d", tt.body, tt.wantStatus)
			}
			if got := statusOf(err); got != tt.wantStatus {
				t.Errorf("decodePublish(%.60s) = %v: status %d, want %d", tt.body, err, got, tt.wantStatus)
			}
			if !strings.Contains(err.Error(), tt.wantDetail) {
				t.Errorf("decodePublish(%.60s) = %q, want it to contain %q", tt.body, err, tt.wantDetail)
			}
		})
	}
}

func TestDecodeBatch(t *testing.T) {
	got, err := decodeBatch([]byte(`{"messages":[{"topic":"a","message":"1"},{"topic":"b","message":"Ag==","encoding":"base64","qos":0,"retain":true}]}`), testLimits)
	if err != nil {
		t.Fatalf("decodeBatch: %v", err)
	}
	if len(got) != 2 || got[0].Topic != "a" || string(got[0].Payload) != "1" || got[0].QoS != 1 ||
		got[1].Topic != "b" || !bytes.Equal(got[1].Payload, []byte{2}) || got[1].QoS != 0 || !got[1].Retain {
		t.Errorf("decodeBatch = %+v, want a/1 qos 1 and b/0x02 qos 0 retained", got)
	}

	items := func(n int) string {
		return `{"messages":[` + strings.TrimSuffix(strings.Repeat(`{"topic":"t","message":"x"},`, n), ",") + `]}`
	}
	if got, err := decodeBatch([]byte(items(MaxBatchMessages)), testLimits); err != nil || len(got) != MaxBatchMessages {
		t.Errorf("decodeBatch of %d items = %d items, %v; want them all", MaxBatchMessages, len(got), err)
	}

	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantIndex  int // -1: none
		wantDetail string
	}{
		{"no items", `{"messages":[]}`, 400, -1, "at least one"},
		{"too many items", items(MaxBatchMessages + 1), 400, -1, "more than 1000"},
		{"missing messages", `{}`, 400, -1, "messages is required"},
		{"messages null", `{"messages":null}`, 400, -1, "messages is required"},
		{"messages object", `{"messages":{}}`, 400, -1, "must be an array, got an object"},
		{"unknown field", `{"messages":[{"topic":"a","message":"x"}],"dry_run":true}`, 400, -1, `unknown field "dry_run"`},
		{"bad item", `{"messages":[{"topic":"a","message":"x"},{"topic":"a","message":"x"},{"topic":"b/#","message":"x"}]}`, 400, 2, "messages[2]: topic must not contain the wildcard"},
		{"item not an object", `{"messages":[{"topic":"a","message":"x"},7]}`, 400, 1, "messages[1]: want a JSON object"},
		{"oversized item", `{"messages":[{"topic":"a","message":"0123456789abcdefX"}]}`, 413, 0, "messages[0]: payload is 17 bytes"},
		{"trailing garbage", `{"messages":[{"topic":"a","message":"x"}]}]`, 400, -1, "after top-level value"},
		{"item in other case", `{"messages":[{"topic":"a","message":"x"},{"Topic":"a","message":"x"}]}`, 400, 1, `messages[1]: unknown field "Topic"`},
		{"duplicate in an item", `{"messages":[{"topic":"a","message":"x","message":"y"}]}`, 400, 0, `messages[0]: duplicate field "message"`},
		{"item with a wrong type", `{"messages":[{"topic":"a","message":"x","qos":"1"}]}`, 400, 0, "messages[0]: qos must be a number, got a string"},
		{"item not UTF-8", "{\"messages\":[{\"topic\":\"a\xff\",\"message\":\"x\"}]}", 400, -1, "not valid UTF-8"},
		{"messages not an array", `{"messages":"x"}`, 400, -1, "messages must be an array, got a string"},
		{"truncated", `{"messages":[{"topic":"a","message":"x"}`, 400, -1, "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeBatch([]byte(tt.body), testLimits)
			if err == nil {
				t.Fatalf("decodeBatch(%.60s) succeeded, want %d", tt.body, tt.wantStatus)
			}
			if got := statusOf(err); got != tt.wantStatus {
				t.Errorf("decodeBatch(%.60s) = %v: status %d, want %d", tt.body, err, got, tt.wantStatus)
			}
			if !strings.Contains(err.Error(), tt.wantDetail) {
				t.Errorf("decodeBatch(%.60s) = %q, want it to contain %q", tt.body, err, tt.wantDetail)
			}
			p := newProblem(httpRequest(t), err)
			switch {
			case tt.wantIndex < 0 && p.Index != nil:
				t.Errorf("problem index %d, want none", *p.Index)
			case tt.wantIndex >= 0 && (p.Index == nil || *p.Index != tt.wantIndex):
				t.Errorf("problem index %v, want %d", p.Index, tt.wantIndex)
			}
		})
	}
}

func httpRequest(tb testing.TB) *http.Request {
	tb.Helper()
	r, err := http.NewRequest(http.MethodPost, "http://127.0.0.1/publish/batch", nil)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// FuzzDecodePublish checks that any body either decodes to a message that
// obeys every rule, or fails with a 400 or 413; and that a decoded message
// survives being encoded again.
func FuzzDecodePublish(f *testing.F) {
	for _, s := range []string{
		`{"topic":"a/b","message":"21.5"}`,
		`{"topic":"a","message":"AP8=","encoding":"base64","qos":2,"retain":true}`,
		`{"topic":"a\ud83d\ude00","message":"\u0000"}`,
		`{"topic":"a\ud800","message":"x"}`,
		`{"topic":"a","message":"x"}x`,
		`{"topic":"a","topic":"b","message":"x"}`,
		`{"topic":"$SYS","message":"x","qos":3}`,
		`[`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := decodePublish(body, testLimits)
		if err != nil {
			if s := statusOf(err); s != 400 && s != 413 {
				t.Fatalf("decodePublish(%q) = %v with status %d, want 400 or 413", body, err, s)
			}
			return
		}
		if err := message.ValidateTopic(m.Topic); err != nil {
			t.Fatalf("decodePublish(%q) accepted topic %q: %v", body, m.Topic, err)
		}
		if m.QoS > 2 || len(m.Payload) > testLimits.maxPayload {
			t.Fatalf("decodePublish(%q) accepted qos %d, %d bytes", body, m.QoS, len(m.Payload))
		}
		again, err := json.Marshal(map[string]any{
			"topic": m.Topic, "message": base64.StdEncoding.EncodeToString(m.Payload),
			"encoding": "base64", "qos": m.QoS, "retain": m.Retain,
		})
		if err != nil {
			t.Fatal(err)
		}
		m2, err := decodePublish(again, testLimits)
		if err != nil || m2.Topic != m.Topic || !bytes.Equal(m2.Payload, m.Payload) || m2.QoS != m.QoS || m2.Retain != m.Retain {
			t.Fatalf("re-encoded %s decodes to %+v, %v; want %+v", again, m2, err, m)
		}
	})
}

// FuzzDecodeBatch checks that any batch body either decodes to 1..1000
// valid messages or fails with a 400 or 413.
func FuzzDecodeBatch(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"topic":"a","message":"1"},{"topic":"b","message":"Ag==","encoding":"base64"}]}`,
		`{"messages":[]}`,
		`{"messages":[{"topic":"a/#","message":"1"}]}`,
		`{"messages":null}`,
		`{"messages":[1]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, err := decodeBatch(body, testLimits)
		if err != nil {
			if s := statusOf(err); s != 400 && s != 413 {
				t.Fatalf("decodeBatch(%q) = %v with status %d, want 400 or 413", body, err, s)
			}
			return
		}
		if len(msgs) < 1 || len(msgs) > MaxBatchMessages {
			t.Fatalf("decodeBatch(%q) = %d messages", body, len(msgs))
		}
		for i, m := range msgs {
			if err := message.ValidateTopic(m.Topic); err != nil || m.QoS > 2 || len(m.Payload) > testLimits.maxPayload {
				t.Fatalf("decodeBatch(%q) accepted item %d %+v (%v)", body, i, m, err)
			}
		}
	})
}

func BenchmarkDecodePublish(b *testing.B) {
	lim := newLimits(1, 262144, 2<<20, 16<<20)
	for _, size := range []int{16, 4096, 262144} {
		text := []byte(fmt.Sprintf(`{"topic":"living/room1/temperature","message":%q,"qos":1}`, strings.Repeat("x", size)))
		b64 := []byte(fmt.Sprintf(`{"topic":"living/room1/raw","message":%q,"encoding":"base64"}`, base64.StdEncoding.EncodeToString(make([]byte, size))))
		for name, body := range map[string][]byte{"text": text, "base64": b64} {
			b.Run(fmt.Sprintf("%s/%d", name, size), func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := decodePublish(body, lim); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkDecodeBatch(b *testing.B) {
	lim := newLimits(1, 262144, 2<<20, 16<<20)
	body := []byte(`{"messages":[` + strings.TrimSuffix(strings.Repeat(`{"topic":"living/room1/temperature","message":"21.5","qos":1},`, MaxBatchMessages), ",") + `]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeBatch(body, lim); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecodeAgainstReference checks that the decoder accepts and refuses
// exactly what the reference (the hand-written decoder it replaced,
// decode_ref_test.go) does, as the same messages and with the same status.
// The batch index must be the same too where the body is well-formed JSON:
// in a malformed one the reference blamed the item after the last one read
// ("messages[1]" for `[{...} 0`), the library names the item its JSON
// pointer is in, and none for a syntax error between items.
func FuzzDecodeAgainstReference(f *testing.F) {
	for _, s := range []string{
		`{"topic":"a/b","message":"21.5"}`,
		`{"topic":"a","message":"AP8=","encoding":"base64","qos":2,"retain":true}`,
		`{"topic":"a\ud83d\ude00","message":"\u0000\"\\\/\b\f\n\r\t"}`,
		`{"topic":"a\ud800","message":"x"}`,
		`{"topic":"a","message":"x"}x`,
		`{"topic":"a","topic":"b","message":"x"}`,
		`{"topic":"$SYS","message":"x","qos":3}`,
		`{"topic":"a","message":"x","qos":-0,"retain":null,"x":[1,{"a":[true,false,null,"s",-1.5e+3]}]}`,
		`{"messages":[{"topic":"a","message":"1"},{"topic":"b","message":"Ag==","encoding":"base64"}]}`,
		`{"messages":[{"topic":"a","message":"1"},{"topic":"b/#","message":"x"}]}`,
		`{"messages":null}`, `{"messages":[1]}`, `{"messages":[]}`,
		`{"topic" : "a" , "message" : "x" , }`, `{,}`, `{"qos":01}`, `{"qos":1.}`,
		`[`, `null`, ``, ` `, `{}`, `{"a":}`,
	} {
		f.Add([]byte(s))
	}
	same := func(t *testing.T, what string, body []byte, got, want []message.Message, gotErr, wantErr error) {
		t.Helper()
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("%s(%q) = %v, reference %v", what, body, gotErr, wantErr)
		}
		if gotErr != nil {
			if g, w := statusOf(gotErr), statusOf(wantErr); g != w {
				t.Fatalf("%s(%q) = %v (%d), reference %v (%d)", what, body, gotErr, g, wantErr, w)
			}
			var gi, wi *itemError
			if !jsontext.Value(body).IsValid() {
				return
			}
			if errors.As(gotErr, &gi) != errors.As(wantErr, &wi) || gi != nil && gi.index != wi.index {
				t.Fatalf("%s(%q) = %v, reference %v: not the same item", what, body, gotErr, wantErr)
			}
			return
		}
		if len(got) != len(want) {
			t.Fatalf("%s(%q) = %d messages, reference %d", what, body, len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.Topic != w.Topic || !bytes.Equal(g.Payload, w.Payload) || g.QoS != w.QoS || g.Retain != w.Retain {
				t.Fatalf("%s(%q)[%d] = %+v, reference %+v", what, body, i, g, w)
			}
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := decodePublish(body, testLimits)
		rm, rerr := refDecodePublish(body, testLimits)
		same(t, "decodePublish", body, []message.Message{m}, []message.Message{rm}, err, rerr)
		msgs, err := decodeBatch(body, testLimits)
		rmsgs, rerr := refDecodeBatch(body, testLimits)
		same(t, "decodeBatch", body, msgs, rmsgs, err, rerr)
	})
}
