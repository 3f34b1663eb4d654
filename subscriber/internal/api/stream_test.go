package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/sqlite"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

// wait bounds every wait for an event; tests fail on content, not speed.
const wait = 10 * time.Second

type env struct {
	st  *sqlite.Store
	hub *stream.Hub
	url string
}

// lister lets a test act at the moment the handler reads the store.
type lister struct {
	Lister
	mu     sync.Mutex
	calls  int
	before func(call int) // runs before the query
	after  func(call int) // runs after the query
}

func (l *lister) List(ctx context.Context, q store.Query) ([]store.Message, error) {
	l.mu.Lock()
	l.calls++
	n := l.calls
	l.mu.Unlock()
	if l.before != nil {
		l.before(n)
	}
	rows, err := l.Lister.List(ctx, q)
	if l.after != nil {
		l.after(n)
	}
	return rows, err
}

func newEnv(t *testing.T, buffer int, opt streamOptions, wrap func(*env, Lister) Lister) *env {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "messages.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	e := &env{st: st, hub: stream.NewHub(buffer)}
	var src Lister = st
	if wrap != nil {
		src = wrap(e, st)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httptest.NewServer(handleStream(log, src, e.hub, opt))
	t.Cleanup(func() {
		e.hub.Close()
		srv.Close()
	})
	e.url = srv.URL
	return e
}

// commit stores messages on topics and hands them to the hub, as ingest
// does after a commit; it returns their ids.
func (e *env) commit(t *testing.T, topics ...string) []int64 {
	t.Helper()
	ms := e.insert(t, topics...)
	e.hub.Publish(ms)
	return idsOf(ms)
}

// insert stores messages on topics without handing them to the hub.
func (e *env) insert(t *testing.T, topics ...string) []store.Message {
	t.Helper()
	ms := make([]store.Message, len(topics))
	for i, tp := range topics {
		ms[i] = store.Message{Topic: tp, Payload: []byte("p-" + tp), QoS: 1, ReceivedAt: time.Now().UTC(), ClientID: "c"}
	}
	if err := e.st.Insert(context.Background(), ms); err != nil {
		t.Errorf("insert: %v", err)
		return nil
	}
	return ms
}

func idsOf(ms []store.Message) []int64 {
	ids := make([]int64, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

// event is one Server-Sent Event, or a comment when Comment is set.
type event struct {
	ID, Event, Data, Comment string
	Retry                    string
}

// client is an open stream.
type client struct {
	resp   *http.Response
	events chan event
	cancel context.CancelFunc
}

func open(t *testing.T, url string, header ...string) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	c := &client{resp: resp, events: make(chan event, 1000), cancel: cancel}
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	if resp.StatusCode == http.StatusOK {
		go c.read()
	}
	return c
}

// read parses the stream until it ends, then closes c.events.
func (c *client) read() {
	defer close(c.events)
	sc := bufio.NewScanner(c.resp.Body)
	var ev event
	var fields int
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if fields > 0 {
				c.events <- ev
			}
			ev, fields = event{}, 0
			continue
		}
		fields++
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "":
			ev.Comment = value
		case "id":
			ev.ID = value
		case "event":
			ev.Event = value
		case "data":
			ev.Data = value
		case "retry":
			ev.Retry = value
		}
	}
}

// next returns the next event that is neither a comment nor the retry hint.
func (c *client) next(t *testing.T) event {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatalf("stream ended, want another event")
			}
			if ev.Comment != "" || ev.Event == "" && ev.Retry != "" {
				continue
			}
			return ev
		case <-timer.C:
			t.Fatalf("no event within %v", wait)
		}
	}
}

// end waits for the end of the stream; it fails on any further event.
func (c *client) end(t *testing.T) {
	t.Helper()
	select {
	case ev, ok := <-c.events:
		if ok {
			t.Errorf("got %+v, want the end of the stream", ev)
		}
	case <-time.After(wait):
		t.Errorf("stream still open after %v, want its end", wait)
	}
}

// messages reads n message events and returns their ids and topics.
func (c *client) messages(t *testing.T, n int) (ids []int64, topics []string) {
	t.Helper()
	for range n {
		ev := c.next(t)
		if ev.Event != "message" {
			t.Fatalf("event %q (data %s), want message", ev.Event, ev.Data)
		}
		var m struct {
			ID    int64  `json:"id"`
			Topic string `json:"topic"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
			t.Fatalf("data %q: %v", ev.Data, err)
		}
		if ev.ID != strconv.FormatInt(m.ID, 10) {
			t.Errorf("id field %q, data id %d: want equal", ev.ID, m.ID)
		}
		ids, topics = append(ids, m.ID), append(topics, m.Topic)
	}
	return ids, topics
}

// expectNext commits marker and checks that it is the next message: so no
// repeat or stray message was pending behind the expected ones.
func (c *client) expectNext(t *testing.T, e *env, marker string) {
	t.Helper()
	ids := e.commit(t, marker)
	gotIDs, gotTopics := c.messages(t, 1)
	if gotTopics[0] != marker || gotIDs[0] != ids[0] {
		t.Errorf("next message %d %s, want the marker %d %s", gotIDs[0], gotTopics[0], ids[0], marker)
	}
}

func TestStreamHeaders(t *testing.T) {
	e := newEnv(t, 16, streamOptions{Retry: 1500 * time.Millisecond}, nil)
	c := open(t, e.url+"/messages/stream")
	if c.resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", c.resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := c.resp.Header.Get(k); got != want {
			t.Errorf("%s: got %q, want %q", k, got, want)
		}
	}
	select {
	case ev := <-c.events:
		if ev.Retry != "1500" {
			t.Errorf("first event %+v, want the retry hint 1500", ev)
		}
	case <-time.After(wait):
		t.Fatal("no retry hint")
	}
}

func TestStreamBadRequest(t *testing.T) {
	e := newEnv(t, 16, streamOptions{}, nil)
	tests := []struct {
		name   string
		query  string
		header []string
		detail string
	}{
		{"filter with # inside", "?topic=a/%23/b", nil, "topic"},
		{"filter with a+", "?topic=a%2B/b", nil, "topic"},
		{"empty filter", "?topic=", nil, "topic"},
		{"after not a number", "?after=x", nil, "after"},
		{"after negative", "?after=-1", nil, "after"},
		{"Last-Event-ID not a number", "", []string{"Last-Event-ID", "abc"}, "Last-Event-ID"},
		{"header wins over a good after", "?after=3", []string{"Last-Event-ID", "abc"}, "Last-Event-ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := open(t, e.url+"/messages/stream"+tt.query, tt.header...)
			if c.resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", c.resp.StatusCode)
			}
			if ct := c.resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q, want application/problem+json", ct)
			}
			var p struct {
				Title  string `json:"title"`
				Status int    `json:"status"`
				Detail string `json:"detail"`
			}
			if err := json.NewDecoder(c.resp.Body).Decode(&p); err != nil {
				t.Fatalf("body: %v", err)
			}
			if p.Status != 400 || p.Title == "" || !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("problem %+v, want status 400, a title, and a detail naming %s", p, tt.detail)
			}
		})
	}
	if got := e.hub.Clients(); got != 0 {
		t.Errorf("hub has %d clients after refused requests, want 0", got)
	}
}

// Without a resume position the stream is live only and filtered.
func TestStreamLiveFiltered(t *testing.T) {
	e := newEnv(t, 16, streamOptions{}, nil)
	e.commit(t, "home/old")
	c := open(t, e.url+"/messages/stream?topic=home/%2B/temp")
	waitClients(t, e.hub, 1)
	e.commit(t, "home/kitchen/temp", "home/kitchen/humidity", "garden/temp", "home/hall/temp")
	_, topics := c.messages(t, 2)
	if want := []string{"home/kitchen/temp", "home/hall/temp"}; !slices.Equal(topics, want) {
		t.Errorf("got %q, want %q", topics, want)
	}
	c.expectNext(t, e, "home/attic/temp")
}

func waitClients(t *testing.T, h *stream.Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for h.Clients() != n {
		if time.Now().After(deadline) {
			t.Fatalf("hub has %d clients, want %d", h.Clients(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Replay starts after the given id, pages through the store oldest first,
// filters, and goes on live; the header wins over ?after.
func TestStreamReplay(t *testing.T) {
	tests := []struct {
		name   string
		query  string
		header []string
		from   int // index into the committed ids: first one expected
	}{
		{"after 0 is everything", "?after=0", nil, 0},
		{"after", "?after=%d", nil, 3},
		{"Last-Event-ID", "", []string{"Last-Event-ID", "%d"}, 5},
		{"header wins", "?after=1", []string{"Last-Event-ID", "%d"}, 6},
		{"after the newest", "?after=%d", nil, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Pages of 2 rows make every replay cross several pages.
			e := newEnv(t, 64, streamOptions{PageSize: 2}, nil)
			var ids []int64
			for i := range 12 {
				ids = append(ids, e.commit(t, fmt.Sprintf("r/%d", i), "other")[0])
			}
			var resume int64
			if tt.from > 0 {
				resume = ids[tt.from-1]
			}
			query := tt.query
			if strings.Contains(query, "%d") {
				query = fmt.Sprintf(query, resume)
			}
			header := slices.Clone(tt.header)
			if len(header) == 2 {
				header[1] = fmt.Sprintf(header[1], resume)
			}
			c := open(t, e.url+"/messages/stream?topic=r/%2B&"+strings.TrimPrefix(query, "?"), header...)
			if c.resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", c.resp.StatusCode)
			}
			want := ids[tt.from:]
			got, _ := c.messages(t, len(want))
			if !slices.Equal(got, want) {
				t.Errorf("replayed %v, want %v", got, want)
			}
			c.expectNext(t, e, "r/live")
		})
	}
}

// The replay reads the store oldest first in batches bounded by PageBytes,
// each within a turn of the gate, and gives every turn back once it goes
// live; all stored messages arrive once, in order.
func TestStreamReplayBounded(t *testing.T) {
	type read struct {
		q     store.Query
		bytes int64
	}
	var mu sync.Mutex
	var reads []read
	gate := readlimit.New(1, time.Second)
	e := newEnv(t, 64, streamOptions{PageBytes: 10, Gate: gate}, func(e *env, src Lister) Lister {
		return &lister{Lister: listFunc(func(ctx context.Context, q store.Query) ([]store.Message, error) {
			if gate.InUse() != 1 {
				t.Errorf("store read with %d turns of the gate taken, want 1", gate.InUse())
			}
			rows, err := src.List(ctx, q)
			mu.Lock()
			reads = append(reads, read{q, store.PayloadBytes(rows)})
			mu.Unlock()
			return rows, err
		})}
	})
	var ids []int64
	for i := range 9 {
		ids = append(ids, e.commit(t, fmt.Sprintf("b/%d", i))...) // payloads of 5 bytes
	}
	c := open(t, e.url+"/messages/stream?topic=b/%2B&after=0")
	got, _ := c.messages(t, len(ids))
	if !slices.Equal(got, ids) {
		t.Errorf("replayed %v, want %v", got, ids)
	}
	c.expectNext(t, e, "b/live")
	if n := gate.InUse(); n != 0 {
		t.Errorf("%d turns still taken while live, want 0", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reads) != 5 { // 2 rows (10 bytes) a batch, and the short last one
		t.Errorf("%d store reads, want 5: %+v", len(reads), reads)
	}
	for _, r := range reads {
		if !r.q.Oldest || r.q.MaxBytes != 10 || r.bytes > 10 {
			t.Errorf("read %+v of %d bytes: want oldest first within 10 bytes", r.q, r.bytes)
		}
	}
}

// listFunc is a Lister of a function.
type listFunc func(ctx context.Context, q store.Query) ([]store.Message, error)

func (f listFunc) List(ctx context.Context, q store.Query) ([]store.Message, error) { return f(ctx, q) }

// A resume id above every stored id comes from another database (the store
// was replaced while the browser kept its Last-Event-ID): the stream starts
// from the beginning instead of skipping new messages up to that id.
func TestStreamForeignResumeID(t *testing.T) {
	e := newEnv(t, 16, streamOptions{}, nil)
	ids := e.commit(t, "f/1", "f/2")
	c := open(t, e.url+"/messages/stream?topic=f/%2B", "Last-Event-ID", "1000")
	got, _ := c.messages(t, 2)
	if !slices.Equal(got, ids) {
		t.Errorf("got %v, want %v", got, ids)
	}
	c.expectNext(t, e, "f/3")

	empty := newEnv(t, 16, streamOptions{}, nil)
	c = open(t, empty.url+"/messages/stream", "Last-Event-ID", "1000")
	waitClients(t, empty.hub, 1)
	c.expectNext(t, empty, "f/first")
}

// Messages committed while the replay reads the store arrive both from the
// store and from the hub: each is sent once, in order, and none committed
// after the read is lost.
func TestStreamReplayHandoff(t *testing.T) {
	var l *lister
	e := newEnv(t, 64, streamOptions{PageSize: 3}, func(e *env, src Lister) Lister {
		l = &lister{Lister: src}
		return l
	})
	first := e.commit(t, "h/1", "h/2", "h/3", "h/4", "h/5")
	var racing, late []int64
	l.before = func(call int) {
		if call == 1 {
			// Committed after the subscription, before the read: in both.
			racing = e.commit(t, "h/6", "h/7")
		}
	}
	l.after = func(call int) {
		if call == 1 {
			// Committed after the newest page was read: only live.
			late = e.commit(t, "h/8", "h/9")
		}
	}
	c := open(t, fmt.Sprintf("%s/messages/stream?topic=h/%%2B&after=%d", e.url, first[0]))
	want := slices.Concat(first[1:], racing, late)
	got, _ := c.messages(t, len(want))
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (each once, in order)", got, want)
	}
	c.expectNext(t, e, "h/10")
}

// The hub may be fed a while after the commit, as the follower of a shared
// PostgreSQL store feeds it: rows the replay read from the store that the
// hub hands over only later are sent once, in order, and so are the rows
// only the hub carries.
func TestStreamReplayLaggingFeed(t *testing.T) {
	e := newEnv(t, 64, streamOptions{PageSize: 2}, nil)
	first := e.commit(t, "g/1", "g/2")
	lagging := e.insert(t, "g/3", "g/4", "g/5") // stored, not yet on the hub
	c := open(t, fmt.Sprintf("%s/messages/stream?topic=g/%%2B&after=%d", e.url, first[0]))
	waitClients(t, e.hub, 1)
	e.hub.Publish(lagging) // the feed catches up
	later := e.commit(t, "g/6")
	want := slices.Concat(first[1:], idsOf(lagging), later)
	got, _ := c.messages(t, len(want))
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (each once, in order)", got, want)
	}
	c.expectNext(t, e, "g/7")
}

// A client that falls too far behind gets a reconnect event and the end of
// the stream; resuming with Last-Event-ID loses nothing.
func TestStreamSlowClientDropped(t *testing.T) {
	var l *lister
	e := newEnv(t, 2, streamOptions{PageSize: 100}, func(e *env, src Lister) Lister {
		l = &lister{Lister: src}
		return l
	})
	ids := e.commit(t, "s/1", "s/2")
	l.after = func(call int) {
		if call == 1 {
			// More than the buffer arrives while the replay is busy.
			ids = append(ids, e.commit(t, "s/3", "s/4", "s/5")...)
		}
	}
	c := open(t, e.url+"/messages/stream?topic=s/%23&after=0")
	got, _ := c.messages(t, 2)
	if want := ids[:2]; !slices.Equal(got, want) {
		t.Errorf("before the drop got %v, want %v", got, want)
	}
	ev := c.next(t)
	if ev.Event != "reconnect" || !strings.Contains(ev.Data, "behind") {
		t.Errorf("event %q data %s, want a reconnect event saying the client fell behind", ev.Event, ev.Data)
	}
	c.end(t)
	if got := e.hub.Dropped(); got != 1 {
		t.Errorf("Dropped() = %d, want 1", got)
	}

	l.after = nil
	again := open(t, e.url+"/messages/stream?topic=s/%23&after=0", "Last-Event-ID", strconv.FormatInt(got[len(got)-1], 10))
	got, _ = again.messages(t, 3)
	if want := ids[2:]; !slices.Equal(got, want) {
		t.Errorf("after resuming got %v, want %v", got, want)
	}
}

func TestStreamHeartbeat(t *testing.T) {
	e := newEnv(t, 16, streamOptions{Heartbeat: 20 * time.Millisecond}, nil)
	c := open(t, e.url+"/messages/stream")
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case ev := <-c.events:
			if ev.Comment == "ping" {
				return
			}
		case <-timer.C:
			t.Fatalf("no ': ping' comment within %v", wait)
		}
	}
}

// The handler ends when the client leaves, and when the server shuts down.
func TestStreamEnds(t *testing.T) {
	t.Run("client leaves", func(t *testing.T) {
		e := newEnv(t, 16, streamOptions{}, nil)
		c := open(t, e.url+"/messages/stream")
		waitClients(t, e.hub, 1)
		c.cancel()
		waitClients(t, e.hub, 0)
	})
	t.Run("server shuts down", func(t *testing.T) {
		e := newEnv(t, 16, streamOptions{}, nil)
		c := open(t, e.url+"/messages/stream")
		waitClients(t, e.hub, 1)
		e.hub.Close()
		ev := c.next(t)
		if ev.Event != "reconnect" || !strings.Contains(ev.Data, "shutting down") {
			t.Errorf("event %q data %s, want a reconnect event saying the server shuts down", ev.Event, ev.Data)
		}
		c.end(t)
	})
}

// The server's read and write timeouts would cut a long stream; the
// handler lifts them for its own request.
func TestStreamOutlivesServerTimeouts(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "messages.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	defer st.Close()
	hub := stream.NewHub(16)
	srv := httptest.NewUnstartedServer(handleStream(slog.New(slog.NewTextHandler(io.Discard, nil)), st, hub, streamOptions{}))
	srv.Config.WriteTimeout = 100 * time.Millisecond
	srv.Config.ReadTimeout = 100 * time.Millisecond
	srv.Start()
	defer srv.Close()
	defer hub.Close()
	e := &env{st: st, hub: hub, url: srv.URL}
	c := open(t, srv.URL+"/messages/stream")
	waitClients(t, hub, 1)
	time.Sleep(300 * time.Millisecond) // past the server's timeouts
	c.expectNext(t, e, "after/timeout")
}
