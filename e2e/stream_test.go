package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// sseEvent is one Server-Sent Event of GET /messages/stream.
type sseEvent struct {
	ID, Event, Data string
}

// eventStream is an open GET /messages/stream.
type eventStream struct {
	resp   *http.Response
	events chan sseEvent
	close  context.CancelFunc
}

// openStream opens GET /messages/stream?query on sub, with header pairs.
func openStream(tb testing.TB, sub *harness.Service, query string, header ...string) *eventStream {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sub.URL()+"/messages/stream?"+query, nil)
	if err != nil {
		cancel()
		tb.Fatalf("stream request: %v", err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		tb.Fatalf("GET /messages/stream?%s: %v", query, err)
	}
	s := &eventStream{resp: resp, events: make(chan sseEvent, 1000), close: cancel}
	tb.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	if resp.StatusCode != http.StatusOK {
		return s
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		tb.Errorf("stream Content-Type %q, want text/event-stream", ct)
	}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				if ev.Event != "" || ev.Data != "" {
					s.events <- ev
				}
				ev = sseEvent{}
				continue
			}
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "id":
				ev.ID = value
			case "event":
				ev.Event = value
			case "data":
				ev.Data = value
			}
		}
	}()
	return s
}

// next returns the next message event as a stored row, checking that the
// event's id is the row's.
func (s *eventStream) next(tb testing.TB, d time.Duration) stored {
	tb.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case ev, ok := <-s.events:
		if !ok {
			tb.Fatalf("stream ended, want a message event")
		}
		if ev.Event != "message" {
			tb.Fatalf("event %q (%s), want message", ev.Event, ev.Data)
		}
		var m stored
		if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
			tb.Fatalf("event data %s: %v", ev.Data, err)
		}
		if ev.ID != strconv.FormatInt(m.ID, 10) {
			tb.Errorf("event id %q, message id %d: want the same", ev.ID, m.ID)
		}
		return m
	case <-timer.C:
		tb.Fatalf("no message event within %v", d)
	}
	return stored{}
}

// topics reads n message events and returns their topics and ids.
func (s *eventStream) take(tb testing.TB, n int) (topics []string, ids []int64) {
	tb.Helper()
	for range n {
		m := s.next(tb, 10*time.Second)
		topics, ids = append(topics, m.Topic), append(ids, m.ID)
	}
	return topics, ids
}

func startStreamStack(t *testing.T) (sub, pub *harness.Service) {
	t.Helper()
	b := harness.StartBroker(t)
	sub = startSubscriber(t, b, nil)
	pub = startPublisher(t, b, nil)
	sub.WaitReady(t, 10*time.Second)
	pub.WaitReady(t, 10*time.Second)
	return sub, pub
}

// An HTTP publish shows up on the stream as the same JSON GET /messages
// gives for it, text and binary payloads alike.
func TestStreamLive(t *testing.T) {
	sub, pub := startStreamStack(t)
	s := openStream(t, sub, "topic="+url.QueryEscape("st/live/#"))
	if s.resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", s.resp.StatusCode)
	}
	for k, want := range map[string]string{"Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := s.resp.Header.Get(k); got != want {
			t.Errorf("%s %q, want %q", k, got, want)
		}
	}
	publish(t, pub, `{"topic":"st/live/temp","message":"21.5","qos":1}`)
	publish(t, pub, `{"topic":"st/live/raw","message":"AP8Q","encoding":"base64","qos":2}`)
	got := []stored{s.next(t, 10*time.Second), s.next(t, 10*time.Second)}

	rows := listAll(t, sub, "st/live/#")
	if len(rows) != 2 {
		t.Fatalf("GET /messages has %d rows, want 2", len(rows))
	}
	want := []stored{rows[1], rows[0]} // the stream is oldest first
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stream\n%+v\nwant the rows of GET /messages\n%+v", got, want)
	}
	if got[1].Encoding != "base64" || got[1].Payload != "AP8Q" || got[1].QoS != 2 {
		t.Errorf("binary message %+v, want base64 AP8Q at QoS 2", got[1])
	}
}

// A client that reconnects with Last-Event-ID gets what it missed, once,
// in order, and then the live messages; the header wins over ?after.
func TestStreamResume(t *testing.T) {
	sub, pub := startStreamStack(t)
	const filter = "topic=st%2Fresume%2F%2B"
	first := openStream(t, sub, filter)
	for i := 1; i <= 3; i++ {
		publish(t, pub, fmt.Sprintf(`{"topic":"st/resume/%d","message":"m%d"}`, i, i))
	}
	_, ids := first.take(t, 3)
	first.close()

	for i := 4; i <= 6; i++ {
		publish(t, pub, fmt.Sprintf(`{"topic":"st/resume/%d","message":"m%d"}`, i, i))
	}
	waitStored(t, sub, "st/resume/+", 6, 10*time.Second)

	again := openStream(t, sub, filter+"&after=0", "Last-Event-ID", strconv.FormatInt(ids[2], 10))
	if again.resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", again.resp.StatusCode)
	}
	topics, replayed := again.take(t, 3)
	if want := []string{"st/resume/4", "st/resume/5", "st/resume/6"}; !reflect.DeepEqual(topics, want) {
		t.Errorf("replayed %q, want %q", topics, want)
	}
	for i, id := range replayed {
		if id <= ids[2] || i > 0 && id <= replayed[i-1] {
			t.Errorf("replayed ids %v after %d: want increasing ids above it", replayed, ids[2])
			break
		}
	}
	publish(t, pub, `{"topic":"st/resume/7","message":"m7"}`)
	if m := again.next(t, 10*time.Second); m.Topic != "st/resume/7" {
		t.Errorf("after the replay got %s (id %d), want st/resume/7: a repeat or a gap", m.Topic, m.ID)
	}

	// ?after alone replays as well.
	fromQuery := openStream(t, sub, filter+"&after="+strconv.FormatInt(ids[0], 10))
	topics, _ = fromQuery.take(t, 6)
	if want := []string{"st/resume/2", "st/resume/3", "st/resume/4", "st/resume/5", "st/resume/6", "st/resume/7"}; !reflect.DeepEqual(topics, want) {
		t.Errorf("?after replayed %q, want %q", topics, want)
	}
}

// The filter keeps other topics off the stream; a bad filter or resume
// position is a 400 problem detail.
func TestStreamFilter(t *testing.T) {
	sub, pub := startStreamStack(t)
	s := openStream(t, sub, "topic="+url.QueryEscape("st/f/+/temp"))
	for _, topic := range []string{"st/f/a/temp", "st/f/a/humidity", "st/other", "st/f/a/b/temp", "st/f/b/temp"} {
		publish(t, pub, fmt.Sprintf(`{"topic":%q,"message":"x"}`, topic))
	}
	topics, _ := s.take(t, 2)
	if want := []string{"st/f/a/temp", "st/f/b/temp"}; !reflect.DeepEqual(topics, want) {
		t.Errorf("got %q, want %q", topics, want)
	}
	// A marker shows that nothing else was on its way.
	publish(t, pub, `{"topic":"st/f/z/temp","message":"marker"}`)
	if m := s.next(t, 10*time.Second); m.Topic != "st/f/z/temp" {
		t.Errorf("got %s, want the marker st/f/z/temp", m.Topic)
	}

	for _, q := range []string{"topic=" + url.QueryEscape("st/#/x"), "after=abc"} {
		r := harness.Get(t, sub.URL()+"/messages/stream?"+q)
		var p struct {
			Title  string `json:"title"`
			Status int    `json:"status"`
			Detail string `json:"detail"`
		}
		if r.Status != http.StatusBadRequest || json.Unmarshal(r.Body, &p) != nil || p.Status != 400 || p.Title == "" || p.Detail == "" {
			t.Errorf("GET /messages/stream?%s: status %d body %s; want a 400 problem detail", q, r.Status, r.Body)
		}
	}
}
