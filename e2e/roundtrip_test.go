package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// An HTTP publish at each QoS ends up stored, and reads back through a
// wildcard filter byte for byte, binary payloads included.
func TestRoundTripQoS(t *testing.T) {
	_, sub, pub := startStack(t, nil)
	roundTripQoS(t, sub, pub)
}

func roundTripQoS(t *testing.T, sub, pub *harness.Service) {
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	for qos := 0; qos <= 2; qos++ {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			text := fmt.Sprintf("rt/qos%d/temperature", qos)
			got := publish(t, pub, publishBody(t, text, "21.5", qos))
			if got["topic"] != text || got["qos"] != float64(qos) || got["retain"] != false || got["bytes"] != float64(4) {
				t.Errorf("publish answer %v, want topic %s, qos %d, retain false, bytes 4", got, text, qos)
			}
			bin := fmt.Sprintf("rt/qos%d/raw", qos)
			publish(t, pub, mustJSON(t, map[string]any{
				"topic": bin, "qos": qos, "encoding": "base64",
				"message": base64.StdEncoding.EncodeToString(binary),
			}))

			rows := waitStored(t, sub, fmt.Sprintf("rt/qos%d/+", qos), 2, 10*time.Second)
			if len(rows) != 2 {
				t.Fatalf("stored %d messages, want 2: %+v", len(rows), rows)
			}
			// Newest first: the binary one was published last.
			if rows[0].Topic != bin || rows[1].Topic != text {
				t.Fatalf("order %s, %s; want %s, %s", rows[0].Topic, rows[1].Topic, bin, text)
			}
			if rows[0].Encoding != "base64" || !bytes.Equal(rows[0].bytes(t), binary) {
				t.Errorf("binary payload: encoding %s, bytes %x; want base64 of 00..ff", rows[0].Encoding, rows[0].bytes(t))
			}
			if rows[1].Encoding != "text" || rows[1].Payload != "21.5" {
				t.Errorf("text payload: encoding %s, payload %q; want text 21.5", rows[1].Encoding, rows[1].Payload)
			}
			for _, r := range rows {
				if r.QoS != qos || r.Retained || r.Duplicate {
					t.Errorf("%s: qos %d retained %v duplicate %v; want qos %d, not retained, not duplicate", r.Topic, r.QoS, r.Retained, r.Duplicate, qos)
				}
				if time.Since(r.ReceivedAt) > time.Minute || r.ReceivedAt.Location() != time.UTC {
					t.Errorf("%s: received_at %v, want a recent UTC time", r.Topic, r.ReceivedAt)
				}
			}
		})
	}
}

// A retained publish reaches a subscriber that connects afterwards, stored
// with retained: true.
func TestRoundTripRetained(t *testing.T) {
	roundTripRetained(t, harness.StartBroker(t))
}

func roundTripRetained(t *testing.T, b broker) {
	pub := startPublisher(t, b, nil)
	pub.WaitReady(t, 10*time.Second)
	got := publish(t, pub, `{"topic":"rt/retained/state","message":"on","qos":1,"retain":true}`)
	if got["retain"] != true {
		t.Errorf("publish answer retain %v, want true", got["retain"])
	}

	sub := startSubscriber(t, b, map[string]string{"MQTT_TOPICS": "rt/retained/#"})
	rows := waitStored(t, sub, "rt/#", 1, 10*time.Second)
	if r := rows[0]; r.Topic != "rt/retained/state" || r.Payload != "on" || !r.Retained || r.QoS != 1 {
		t.Errorf("stored %+v, want rt/retained/state on, retained, qos 1", r)
	}
}

// A batch is published in order and every item is stored.
func TestRoundTripBatch(t *testing.T) {
	_, sub, pub := startStack(t, nil)

	var items []map[string]any
	for i := range 50 {
		items = append(items, map[string]any{"topic": fmt.Sprintf("batch/%d/v", i%5), "message": fmt.Sprint(i), "qos": i % 3})
	}
	r := harness.PostJSON(t, pub.URL()+"/publish/batch", mustJSON(t, map[string]any{"messages": items}))
	if r.Status != 200 {
		t.Fatalf("POST /publish/batch: status %d, body %s", r.Status, r.Body)
	}
	var answer struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(r.Body, &answer); err != nil || len(answer.Results) != len(items) {
		t.Fatalf("batch answer %s: %d results (%v), want %d", r.Body, len(answer.Results), err, len(items))
	}
	for i, res := range answer.Results {
		if res["topic"] != items[i]["topic"] {
			t.Errorf("result %d topic %v, want %v", i, res["topic"], items[i]["topic"])
		}
	}

	rows := waitStored(t, sub, "batch/+/v", len(items), 10*time.Second)
	if len(rows) != len(items) {
		t.Fatalf("stored %d, want %d", len(rows), len(items))
	}
	// One publisher connection keeps the order of its publishes per QoS, so
	// compare the payloads per QoS level, oldest first.
	seen := map[int][]string{}
	for i := len(rows) - 1; i >= 0; i-- {
		seen[rows[i].QoS] = append(seen[rows[i].QoS], rows[i].Payload)
	}
	for qos := 0; qos <= 2; qos++ {
		var want []string
		for i := range items {
			if i%3 == qos {
				want = append(want, fmt.Sprint(i))
			}
		}
		if fmt.Sprint(seen[qos]) != fmt.Sprint(want) {
			t.Errorf("qos %d payloads in stored order %v, want %v", qos, seen[qos], want)
		}
	}
}

// Paging with the cursor gives every message once, newest first, and ends
// with a null cursor.
func TestRoundTripPaging(t *testing.T) {
	_, sub, pub := startStack(t, nil)

	const n = 25
	for i := range n {
		publish(t, pub, publishBody(t, fmt.Sprintf("page/%02d", i), fmt.Sprint(i), 1))
	}
	waitStored(t, sub, "page/#", n, 10*time.Second)

	var ids []int64
	var payloads []string
	q := url.Values{"topic": {"page/+"}, "limit": {"10"}}
	for pages := 1; ; pages++ {
		p := list(t, sub, q.Encode())
		for _, m := range p.Messages {
			ids = append(ids, m.ID)
			payloads = append(payloads, m.Payload)
		}
		if p.Next == nil {
			if pages != 3 {
				t.Errorf("%d pages, want 3", pages)
			}
			break
		}
		if pages > 3 {
			t.Fatalf("more than 3 pages of 10 for %d messages", n)
		}
		q.Set("before", *p.Next)
	}
	if len(ids) != n {
		t.Fatalf("paged through %d messages, want %d", len(ids), n)
	}
	for i := range ids {
		if i > 0 && ids[i] >= ids[i-1] {
			t.Errorf("ids not strictly decreasing at %d: %v", i, ids)
		}
		if want := fmt.Sprint(n - 1 - i); payloads[i] != want {
			t.Errorf("position %d payload %s, want %s", i, payloads[i], want)
		}
	}
}

// Both services start while the broker is down, say so on /readyz, refuse
// publishes at once, and connect by themselves when it comes up; a broker
// restart is the same again.
func TestRoundTripBrokerDownAtStartAndRestart(t *testing.T) {
	b := harness.StartBroker(t)
	b.Stop()
	sub := startSubscriber(t, b, nil)
	pub := startPublisher(t, b, nil)

	for _, s := range []*harness.Service{sub, pub} {
		if got := s.Status("/healthz"); got != 200 {
			t.Errorf("%s /healthz = %d while the broker is down, want 200", s.URL(), got)
		}
		if got := s.Status("/readyz"); got != 503 {
			t.Errorf("%s /readyz = %d while the broker is down, want 503", s.URL(), got)
		}
	}
	start := time.Now()
	r := harness.PostJSON(t, pub.URL()+"/publish", `{"topic":"down/t","message":"x"}`)
	took := time.Since(start)
	t.Logf("publish while the broker is down answered %d in %v", r.Status, took)
	if r.Status != 503 {
		t.Errorf("publish while the broker is down: %d %s, want 503", r.Status, r.Body)
	}
	if took > time.Second {
		t.Errorf("publish while the broker is down took %v, want an answer at once", took)
	}

	b.Start()
	for round, restart := range []func(){func() {}, func() { b.Stop(); b.Start() }} {
		restart()
		sub.WaitReady(t, 20*time.Second)
		pub.WaitReady(t, 20*time.Second)
		topic := fmt.Sprintf("down/round%d", round)
		publish(t, pub, publishBody(t, topic, "up", 1))
		rows := waitStored(t, sub, topic, 1, 10*time.Second)
		if rows[0].Payload != "up" {
			t.Errorf("round %d stored %q, want up", round, rows[0].Payload)
		}
	}
}
