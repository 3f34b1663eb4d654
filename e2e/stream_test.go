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

// publishLoad publishes n messages on prefix/<i%10> through the publisher
// from four workers at once, and says how many were not acknowledged.
func publishLoad(pub *harness.Service, prefix string, n int) error {
	var l load
	l.run(context.Background(), pub.URL(), prefix, n, 4)
	if len(l.ackedAt) != n {
		return fmt.Errorf("%s: %d of %d publishes acknowledged (%d refused)", prefix, len(l.ackedAt), n, l.refused)
	}
	return nil
}

// storedIDs waits until filter has n stored rows and returns their ids,
// oldest first.
func storedIDs(tb testing.TB, sub *harness.Service, filter string, n int) []int64 {
	tb.Helper()
	rows := waitStored(tb, sub, filter, n, 60*time.Second)
	if len(rows) != n {
		tb.Fatalf("%s: %d rows stored, want %d", filter, len(rows), n)
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[len(rows)-1-i] = r.ID // GET /messages is newest first
	}
	return ids
}

// Two subscribers in one share group on one PostgreSQL each receive half of
// the messages, and yet the stream of either carries every stored row,
// whichever member stored it, once and in id order: through a cut of the
// streaming member's database connections, and from the middle with
// Last-Event-ID on the other member while messages keep coming.
func TestStreamShareGroup(t *testing.T) {
	db := harness.Postgres(t)
	proxy := harness.StartProxy(t, "127.0.0.1:5432")
	b := harness.StartBroker(t)
	env := map[string]string{"DATABASE_URL": db, "MQTT_SHARE_GROUP": "stream", "MQTT_TOPICS": "shs/#"}
	one := startSubscriber(t, b, withEnv(env, "MQTT_CLIENT_ID", clientID(t, "sub-1"),
		"DATABASE_URL", strings.Replace(db, "127.0.0.1:5432", proxy.Addr(), 1)))
	two := startSubscriber(t, b, withEnv(env, "MQTT_CLIENT_ID", clientID(t, "sub-2")))
	pub := startPublisher(t, b, nil)
	for _, s := range []*harness.Service{one, two, pub} {
		s.WaitReady(t, 10*time.Second)
	}
	const filter = "topic=shs%2F%23"
	live := openStream(t, one, filter)
	if live.resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", live.resp.StatusCode)
	}

	if err := publishLoad(pub, "shs/a", 100); err != nil {
		t.Fatal(err)
	}
	// Member one loses PostgreSQL while two goes on storing its share: one's
	// stream must catch up with those rows once its follower is back.
	proxy.Cut()
	one.WaitLog(t, 10*time.Second, func(l map[string]any) bool {
		return l["msg"] == "stream follower lost postgresql; live streams wait until it is back"
	})
	if err := publishLoad(pub, "shs/b", 100); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	proxy.Restore()
	one.WaitLog(t, 20*time.Second, func(l map[string]any) bool { return l["msg"] == "stream follower reconnected to postgresql" })
	one.WaitReady(t, 30*time.Second)

	want := storedIDs(t, one, "shs/#", 200)
	got := live.ids(t, len(want))
	sameIDs(t, "live stream of member one", got, want)
	for _, s := range []*harness.Service{one, two} {
		arrived := 0
		for _, line := range s.Logs() {
			if line["msg"] == "message arrived" {
				arrived++
			}
		}
		t.Logf("member %s received %d of the %d messages", s.URL(), arrived, len(want))
		if arrived == 0 || arrived == len(want) {
			t.Errorf("member %s received %d of %d messages: the share group did not share, the test proves nothing", s.URL(), arrived, len(want))
		}
	}

	// Resume from the middle on member two while more messages come in.
	mid := want[len(want)/2-1]
	published := make(chan error, 1)
	go func() { published <- publishLoad(pub, "shs/c", 100) }()
	resumed := openStream(t, two, filter, "Last-Event-ID", strconv.FormatInt(mid, 10))
	if resumed.resp.StatusCode != http.StatusOK {
		t.Fatalf("resumed stream: status %d, want 200", resumed.resp.StatusCode)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	all := storedIDs(t, one, "shs/#", 300)
	got = resumed.ids(t, len(all)-len(want)/2)
	sameIDs(t, fmt.Sprintf("stream of member two resumed after %d", mid), got, all[len(want)/2:])
	got = live.ids(t, len(all)-len(want))
	sameIDs(t, "live stream of member one", got, all[len(want):])

	// Nothing more is on its way: the next event on either is a new one.
	publish(t, pub, `{"topic":"shs/marker","message":"end"}`)
	for name, s := range map[string]*eventStream{"one": live, "two": resumed} {
		if m := s.next(t, 10*time.Second); m.Topic != "shs/marker" {
			t.Errorf("stream of member %s: got %s (id %d) after every row, want the marker: a repeat", name, m.Topic, m.ID)
		}
	}
}

// ids returns the ids of the next n message events, or of those that came
// before the stream fell silent for 10s.
func (s *eventStream) ids(tb testing.TB, n int) []int64 {
	tb.Helper()
	var ids []int64
	for len(ids) < n {
		select {
		case ev, ok := <-s.events:
			if !ok {
				tb.Errorf("stream ended after %d of %d events", len(ids), n)
				return ids
			}
			id, err := strconv.ParseInt(ev.ID, 10, 64)
			if ev.Event != "message" || err != nil {
				tb.Fatalf("event %q id %q (%s), want a message", ev.Event, ev.ID, ev.Data)
			}
			ids = append(ids, id)
		case <-time.After(10 * time.Second):
			tb.Errorf("no event within 10s after %d of %d", len(ids), n)
			return ids
		}
	}
	return ids
}

// sameIDs fails unless got is want: every id once, in increasing order.
func sameIDs(tb testing.TB, who string, got, want []int64) {
	tb.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	seen := map[int64]int{}
	for _, id := range got {
		seen[id]++
	}
	var missing, twice []int64
	for _, id := range want {
		if seen[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, n := range seen {
		if n > 1 {
			twice = append(twice, id)
		}
	}
	tb.Errorf("%s: %d ids, want %d in increasing order; missing %v, repeated %v\ngot  %v\nwant %v",
		who, len(got), len(want), missing, twice, got, want)
}
