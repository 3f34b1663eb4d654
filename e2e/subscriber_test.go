package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// subscriberPublisher is a plain MQTT client the subscriber tests publish with.
func subscriberPublisher(tb testing.TB, b *harness.Broker) func(topic string, qos byte, payload []byte) {
	tb.Helper()
	c := harness.Client(tb, b.URL(), clientID(tb, "pubclient"), true)
	return func(topic string, qos byte, payload []byte) {
		tb.Helper()
		harness.Publish(tb, c, topic, qos, false, payload)
	}
}

func arrival(topic string) func(map[string]any) bool {
	return func(l map[string]any) bool { return l["msg"] == "message arrived" && l["topic"] == topic }
}

func TestSubscriberArrivalLogLine(t *testing.T) {
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, map[string]string{"LOG_PAYLOAD_BYTES": "8"})
	sub.WaitReady(t, 15*time.Second)
	pub := subscriberPublisher(t, b)

	pub("e2e/log/temperature", 1, []byte("21.5"))
	l := sub.WaitLog(t, 10*time.Second, arrival("e2e/log/temperature"))
	want := map[string]any{
		"level": "INFO", "topic": "e2e/log/temperature", "qos": float64(1), "retained": false,
		"duplicate": false, "bytes": float64(4), "payload": "21.5",
	}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("log attribute %s = %#v, want %#v (line %v)", k, l[k], v, l)
		}
	}

	pub("e2e/log/long", 0, []byte("0123456789abcdef"))
	l = sub.WaitLog(t, 10*time.Second, arrival("e2e/log/long"))
	if l["payload"] != "01234567" || l["bytes"] != float64(16) || l["qos"] != float64(0) {
		t.Errorf("long payload line: payload %v bytes %v qos %v, want the first 8 bytes, 16, 0", l["payload"], l["bytes"], l["qos"])
	}
}

func TestSubscriberStoresWithWildcardFilterByteExact(t *testing.T) {
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, nil)
	sub.WaitReady(t, 15*time.Second)
	pub := subscriberPublisher(t, b)

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(255 - i)
	}
	pub("e2e/site1/room1/temperature", 1, []byte("21.5"))
	pub("e2e/site1/room2/temperature", 2, binary)
	pub("e2e/site1/room2/humidity", 1, []byte("40"))
	pub("e2e/site2/room1/temperature", 0, []byte("19"))
	pub("e2e/site1/room3/temperature", 1, []byte{})

	got := waitStored(t, sub, "e2e/+/+/temperature", 4, 10*time.Second)
	var topics []string
	for _, m := range got {
		topics = append(topics, m.Topic)
	}
	want := []string{"e2e/site1/room3/temperature", "e2e/site2/room1/temperature", "e2e/site1/room2/temperature", "e2e/site1/room1/temperature"}
	if fmt.Sprint(topics) != fmt.Sprint(want) {
		t.Fatalf("topics newest first = %v, want %v", topics, want)
	}
	checks := []struct {
		m        stored
		payload  []byte
		encoding string
		qos      int
	}{
		{got[0], []byte{}, "text", 1},
		{got[1], []byte("19"), "text", 0},
		{got[2], binary, "base64", 2},
		{got[3], []byte("21.5"), "text", 1},
	}
	for _, c := range checks {
		if !bytes.Equal(c.m.bytes(t), c.payload) || c.m.Encoding != c.encoding || c.m.QoS != c.qos || c.m.Retained || c.m.Duplicate {
			t.Errorf("%s: payload %q encoding %s qos %d retained %v duplicate %v; want %q %s %d false false",
				c.m.Topic, c.m.bytes(t), c.m.Encoding, c.m.QoS, c.m.Retained, c.m.Duplicate, c.payload, c.encoding, c.qos)
		}
		if c.m.ReceivedAt.IsZero() || c.m.ReceivedAt.Location() != time.UTC {
			t.Errorf("%s: received_at %v, want a UTC time", c.m.Topic, c.m.ReceivedAt)
		}
	}
	if got := listAll(t, sub, "e2e/site1/#"); len(got) != 4 {
		t.Errorf("e2e/site1/#: %d messages, want 4", len(got))
	}
	r := harness.Get(t, sub.URL()+"/messages?topic=e2e/%23/x")
	if r.Status != 400 || r.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("bad filter: status %d type %q, want 400 problem+json", r.Status, r.Header.Get("Content-Type"))
	}
}

func TestSubscriberPagingAndTimeRange(t *testing.T) {
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, nil)
	sub.WaitReady(t, 15*time.Second)
	pub := subscriberPublisher(t, b)
	for i := range 25 {
		pub("e2e/page/"+fmt.Sprint(i%3), 1, []byte(fmt.Sprint(i)))
	}
	waitStored(t, sub, "e2e/page/#", 25, 10*time.Second)

	var payloads []string
	var sizes []int
	q := url.Values{"topic": {"e2e/page/+"}, "limit": {"10"}}
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("paging does not end")
		}
		p := list(t, sub, q.Encode())
		sizes = append(sizes, len(p.Messages))
		for _, m := range p.Messages {
			payloads = append(payloads, m.Payload)
		}
		if p.Next == nil {
			break
		}
		q.Set("before", *p.Next)
	}
	if fmt.Sprint(sizes) != "[10 10 5]" {
		t.Errorf("page sizes %v, want [10 10 5]", sizes)
	}
	for i, p := range payloads {
		if want := fmt.Sprint(24 - i); p != want {
			t.Fatalf("message %d of the walk is %q, want %q (newest first, no gap, no repeat): %v", i, p, want, payloads)
		}
	}

	all := listAll(t, sub, "e2e/page/#")
	since, until := all[20].ReceivedAt, all[10].ReceivedAt // oldest first at the end
	p := list(t, sub, url.Values{"topic": {"e2e/page/#"}, "since": {since.Format(time.RFC3339Nano)}, "until": {until.Format(time.RFC3339Nano)}}.Encode())
	for _, m := range p.Messages {
		if m.ReceivedAt.Before(since) || !m.ReceivedAt.Before(until) {
			t.Errorf("%s received %v outside [%v, %v)", m.Payload, m.ReceivedAt, since, until)
		}
	}
	if len(p.Messages) == 0 || p.Messages[len(p.Messages)-1].ID != all[20].ID {
		t.Errorf("since is inclusive: want the page to end with id %d, got %v", all[20].ID, p.Messages)
	}
}

func TestSubscriberPersistentSession(t *testing.T) {
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, map[string]string{"MQTT_QOS": "1"})
	sub.WaitReady(t, 15*time.Second)
	if code := sub.Stop(); code != 0 {
		t.Fatalf("graceful stop exited %d, want 0", code)
	}
	pub := subscriberPublisher(t, b)
	for i := range 5 {
		pub("e2e/offline/"+fmt.Sprint(i), 1, []byte("while away"))
	}
	sub.Restart()
	got := waitStored(t, sub, "e2e/offline/#", 5, 15*time.Second)
	if len(got) != 5 {
		t.Errorf("stored %d, want 5", len(got))
	}
}

func TestSubscriberBrokerDownAtStartThenRestarted(t *testing.T) {
	b := harness.StartBroker(t)
	b.Stop()
	sub := startSubscriber(t, b, nil)
	if code := sub.Status("/readyz"); code != 503 {
		t.Errorf("readyz with the broker down = %d, want 503", code)
	}
	if code := sub.Status("/healthz"); code != 200 {
		t.Errorf("healthz with the broker down = %d, want 200", code)
	}
	b.Start()
	sub.WaitReady(t, 20*time.Second)
	pub := subscriberPublisher(t, b)
	pub("e2e/down/first", 1, []byte("1"))
	waitStored(t, sub, "e2e/down/#", 1, 10*time.Second)

	b.Stop()
	if !harness.Eventually(10*time.Second, func() bool { return sub.Status("/readyz") == 503 }) {
		t.Errorf("readyz stayed %d while the broker was stopped, want 503", sub.Status("/readyz"))
	}
	b.Start()
	sub.WaitReady(t, 20*time.Second)
	pub = subscriberPublisher(t, b)
	pub("e2e/down/second", 1, []byte("2"))
	waitStored(t, sub, "e2e/down/#", 2, 10*time.Second)
}

// TestSubscriberResubscribesWhenBrokerForgetsSession restarts a broker
// without persistence: only a subscription made again on connect brings the
// messages back.
func TestSubscriberResubscribesWhenBrokerForgetsSession(t *testing.T) {
	b := harness.StartBroker(t, harness.WithConfig("persistence false"))
	sub := startSubscriber(t, b, map[string]string{"MQTT_TOPICS": "e2e/resub/#"})
	sub.WaitReady(t, 15*time.Second)
	b.Kill()
	b.Start()
	sub.WaitReady(t, 20*time.Second)
	pub := subscriberPublisher(t, b)
	pub("e2e/resub/x", 1, []byte("after restart"))
	waitStored(t, sub, "e2e/resub/#", 1, 10*time.Second)
}

func TestSubscriberLastWill(t *testing.T) {
	b := harness.StartBroker(t)
	status := "clients/" + clientID(t, "sub") + "/status"
	w := harness.Watch(t, b.URL(), status)
	sub := startSubscriber(t, b, map[string]string{"MQTT_TOPICS": "e2e/will/#"})
	w.WaitFor(t, 15*time.Second, func(m harness.Message) bool { return string(m.Payload) == "online" })
	sub.Kill()
	w.WaitFor(t, 15*time.Second, func(m harness.Message) bool { return string(m.Payload) == "offline" })

	// A later client sees the retained state.
	late := harness.Watch(t, b.URL(), status)
	m := late.WaitFor(t, 5*time.Second, func(harness.Message) bool { return true })
	if string(m.Payload) != "offline" || !m.Retained {
		t.Errorf("retained status = %q retained %v, want offline, retained", m.Payload, m.Retained)
	}

	// A graceful stop says offline itself. Wait for the restarted
	// subscriber's own online first: the earlier one is still in the list.
	n := len(w.Messages())
	sub.Restart()
	if !harness.Eventually(15*time.Second, func() bool {
		for _, m := range w.Messages()[n:] {
			if string(m.Payload) == "online" {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no online status after the restart: %v", w.Messages())
	}
	n = len(w.Messages())
	if code := sub.Stop(); code != 0 {
		t.Errorf("graceful stop exited %d, want 0", code)
	}
	if !harness.Eventually(5*time.Second, func() bool {
		msgs := w.Messages()
		return len(msgs) > n && string(msgs[len(msgs)-1].Payload) == "offline"
	}) {
		t.Errorf("no offline status after a graceful stop: %v", w.Messages())
	}
}

func TestSubscriberShareGroup(t *testing.T) {
	b := harness.StartBroker(t)
	env := map[string]string{"MQTT_SHARE_GROUP": "e2e-workers", "MQTT_TOPICS": "e2e/shared/#"}
	one := startSubscriber(t, b, withEnv(env, "MQTT_CLIENT_ID", clientID(t, "one")))
	two := startSubscriber(t, b, withEnv(env, "MQTT_CLIENT_ID", clientID(t, "two")))
	one.WaitReady(t, 15*time.Second)
	two.WaitReady(t, 15*time.Second)
	pub := subscriberPublisher(t, b)
	const n = 20
	for i := range n {
		pub("e2e/shared/"+fmt.Sprint(i), 1, []byte(fmt.Sprint(i)))
	}
	var a, c []stored
	if !harness.Eventually(10*time.Second, func() bool {
		a, c = listAll(t, one, "#"), listAll(t, two, "#")
		return len(a)+len(c) >= n
	}) {
		t.Fatalf("stored %d + %d, want %d in all", len(a), len(c), n)
	}
	seen := map[string]int{}
	for _, m := range append(a, c...) {
		seen[m.Payload]++
	}
	for i := range n {
		if seen[fmt.Sprint(i)] != 1 {
			t.Errorf("message %d stored %d times across the group, want once", i, seen[fmt.Sprint(i)])
		}
	}
	if len(a) == 0 || len(c) == 0 {
		t.Errorf("the group split %d / %d; want both members to take part", len(a), len(c))
	}
}

func TestSubscriberInvalidConfigExits2(t *testing.T) {
	bin := harness.Subscriber(t)
	db := "sqlite:" + filepath.Join(t.TempDir(), "m.db")
	tests := []struct{ name, value string }{
		{"MQTT_QOS", "3"},
		{"MQTT_TOPICS", "a/#/b"},
		{"MQTT_SHARE_GROUP", "a/b"},
		{"MQTT_BROKER", "ftp://127.0.0.1:1"},
		{"DATABASE_URL", "mysql://127.0.0.1/x"},
		{"RETENTION", "soon"},
		{"LOG_PAYLOAD_BYTES", "-1"},
		{"LOG_FORMAT", "xml"},
		{"HTTP_ADDR", "8081"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"DATABASE_URL": db, "MQTT_BROKER": "tcp://127.0.0.1:1", tt.name: tt.value}
			code, _, stderr := harness.Run(t, bin, env)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tt.name) {
				t.Errorf("%s=%s: exit %d, stderr %q; want 2 and one line naming %s", tt.name, tt.value, code, stderr, tt.name)
			}
		})
	}
}

func TestSubscriberHealthcheckCommand(t *testing.T) {
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, nil)
	if code, out, errOut := harness.Run(t, harness.Subscriber(t), map[string]string{"HTTP_ADDR": sub.Addr()}, "healthcheck"); code != 0 {
		t.Errorf("healthcheck of a running subscriber: exit %d %s %s", code, out, errOut)
	}
	port := harness.FreePort(t)
	if code, _, _ := harness.Run(t, harness.Subscriber(t), map[string]string{"HTTP_ADDR": fmt.Sprintf(":%d", port)}, "healthcheck"); code != 1 {
		t.Errorf("healthcheck of nothing: exit %d, want 1", code)
	}
}

// TestSubscriberRedeliveries puts the subscriber's acknowledgement in each
// of the states docs/delivery.md distinguishes, then makes the broker
// redeliver the message (DUP set) on a new connection:
//
//   - QoS 1, the PUBACK lost on the way while the connection lived: the
//     subscriber cannot tell a redelivery from a new message that took the
//     free packet id, and stores it again, flagged duplicate;
//   - QoS 1, the commit done only after the connection ended (the store was
//     away), so the PUBACK never left: a redelivery for sure, acknowledged
//     and not stored again;
//   - QoS 2, the PUBREC lost: the packet id is held until PUBREL, so the
//     redelivery is recognised exactly, acknowledged and not stored again.
func TestSubscriberRedeliveries(t *testing.T) {
	tests := []struct {
		name      string
		qos       byte
		storeAway bool // cut the subscriber off PostgreSQL instead of losing its acknowledgement
		rows      []string
		dropped   float64
		flagged   float64
	}{
		{"qos 1, puback lost", 1, false, []string{"after", "once(dup)", "once"}, 0, 1},
		{"qos 1, committed after the connection ended", 1, true, []string{"after", "once"}, 1, 0},
		{"qos 2, pubrec lost", 2, false, []string{"after", "once"}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := harness.StartBroker(t)
			link := startAckDropper(t, b.Addr())
			env := map[string]string{"MQTT_BROKER": "tcp://" + link.Addr(), "MQTT_QOS": "2", "MQTT_TOPICS": "e2e/dedup/#"}
			var db *harness.Proxy
			if tt.storeAway {
				db = harness.StartProxy(t, "127.0.0.1:5432")
				env["DATABASE_URL"] = strings.Replace(harness.Postgres(t), "127.0.0.1:5432", db.Addr(), 1)
			}
			sub := startSubscriber(t, b, env)
			sub.WaitReady(t, 15*time.Second)
			pub := subscriberPublisher(t, b)

			if tt.storeAway {
				db.Cut()
				pub("e2e/dedup/a", tt.qos, []byte("once"))
				sub.WaitLog(t, 10*time.Second, arrival("e2e/dedup/a"))
				sub.WaitLog(t, 10*time.Second, func(l map[string]any) bool { return strings.HasPrefix(fmt.Sprint(l["msg"]), "commit failed") })
				link.closeAll() // the subscriber reconnects; the broker redelivers
				// It connects again only once it can record the connection.
				db.Restore()
				sub.WaitLog(t, 20*time.Second, func(l map[string]any) bool {
					return l["msg"] == "message arrived" && l["topic"] == "e2e/dedup/a" && l["duplicate"] == true
				})
			} else {
				link.dropUpstream.Store(true) // from now on nothing reaches the broker
				pub("e2e/dedup/a", tt.qos, []byte("once"))
				waitStored(t, sub, "e2e/dedup/#", 1, 10*time.Second)
				link.dropUpstream.Store(false)
				link.closeAll() // the subscriber reconnects; the broker redelivers
				sub.WaitLog(t, 20*time.Second, func(l map[string]any) bool {
					return l["msg"] == "message arrived" && l["topic"] == "e2e/dedup/a" && l["duplicate"] == true
				})
			}
			pub("e2e/dedup/b", tt.qos, []byte("after"))
			got := waitStored(t, sub, "e2e/dedup/#", len(tt.rows), 20*time.Second)
			var rows []string
			for _, r := range got {
				rows = append(rows, r.Payload+map[bool]string{true: "(dup)"}[r.Duplicate])
			}
			if fmt.Sprint(rows) != fmt.Sprint(tt.rows) {
				t.Errorf("stored %v, want %v", rows, tt.rows)
			}
			if got := metric(t, sub, "subscriber_duplicates_dropped_total"); got != tt.dropped {
				t.Errorf("subscriber_duplicates_dropped_total = %v, want %v", got, tt.dropped)
			}
			if got := metric(t, sub, "subscriber_duplicates_stored_total"); got != tt.flagged {
				t.Errorf("subscriber_duplicates_stored_total = %v, want %v", got, tt.flagged)
			}
		})
	}
}

// metric reads one unlabelled sample from /metrics.
func metric(tb testing.TB, sub *harness.Service, name string) float64 {
	tb.Helper()
	r := harness.Get(tb, sub.URL()+"/metrics")
	for line := range strings.SplitSeq(string(r.Body), "\n") {
		var v float64
		if strings.HasPrefix(line, name+" ") {
			if _, err := fmt.Sscanf(line, name+" %g", &v); err == nil {
				return v
			}
		}
	}
	tb.Fatalf("%s not in /metrics", name)
	return 0
}

// ackDropper forwards TCP to a broker and can swallow everything the client
// sends (its acknowledgements) while still delivering the broker's packets.
type ackDropper struct {
	ln           net.Listener
	target       string
	dropUpstream atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startAckDropper(tb testing.TB, target string) *ackDropper {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	d := &ackDropper{ln: ln, target: target}
	d.wg.Add(1)
	go d.accept()
	tb.Cleanup(func() {
		ln.Close()
		d.closeAll()
		d.wg.Wait()
	})
	return d
}

func (d *ackDropper) Addr() string { return d.ln.Addr().String() }

func (d *ackDropper) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

func (d *ackDropper) accept() {
	defer d.wg.Done()
	for {
		in, err := d.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", d.target)
		if err != nil {
			in.Close()
			continue
		}
		d.mu.Lock()
		d.conns = append(d.conns, in, out)
		d.mu.Unlock()
		d.wg.Add(2)
		go func() {
			defer d.wg.Done()
			_, _ = io.Copy(out, dropping{in, &d.dropUpstream})
			out.Close()
		}()
		go func() {
			defer d.wg.Done()
			_, _ = io.Copy(in, out)
			in.Close()
		}()
	}
}

// dropping reads from r and discards what it read while drop is set.
type dropping struct {
	r    io.Reader
	drop *atomic.Bool
}

func (d dropping) Read(p []byte) (int, error) {
	for {
		n, err := d.r.Read(p)
		if err != nil || !d.drop.Load() {
			return n, err
		}
	}
}

// The subscriber says why it cannot connect: a wrong password, a port that
// does not speak MQTT. The reason is logged (at WARN, then rate-limited)
// and /readyz answers 503 with it.
func TestSubscriberSaysWhyItCannotConnect(t *testing.T) {
	passwd := harness.Need(t, "mosquitto_passwd")
	dir := t.TempDir()
	file := filepath.Join(dir, "passwd")
	if out, err := exec.Command(passwd, "-c", "-b", file, "subscriber", "right").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	b := harness.StartBroker(t, harness.WithConfig("allow_anonymous false", "password_file "+file))
	// A port that accepts and closes without a word of MQTT. It reads the
	// CONNECT first: closed with the CONNECT unread, the connection is
	// reset, and the client may see "connection reset by peer" instead of
	// the end of the stream.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Read(make([]byte, 4096))
			}()
		}
	}()
	tests := []struct {
		name, broker, password, reason string
	}{
		{"wrong password", b.URL(), "wrong", "not Authorized"},
		{"not an MQTT port", "tcp://" + ln.Addr().String(), "right", "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := startSubscriber(t, b, map[string]string{
				"MQTT_BROKER": tt.broker, "MQTT_USERNAME": "subscriber", "MQTT_PASSWORD": tt.password,
			})
			l := sub.WaitLog(t, 15*time.Second, func(l map[string]any) bool {
				return l["msg"] == "connection attempt failed" && l["level"] == "WARN"
			})
			if err := fmt.Sprint(l["err"]); !strings.Contains(err, tt.reason) {
				t.Errorf("logged reason %q, want it to say %q", err, tt.reason)
			}
			r := harness.Get(t, sub.URL()+"/readyz")
			if r.Status != 503 || !strings.Contains(string(r.Body), tt.reason) {
				t.Errorf("/readyz: %d %s; want 503 saying %q", r.Status, r.Body, tt.reason)
			}
			// Later failures are not logged at WARN again for a while.
			time.Sleep(3 * time.Second)
			warns := 0
			for _, l := range sub.Logs() {
				if l["msg"] == "connection attempt failed" && l["level"] == "WARN" {
					warns++
				}
			}
			if warns != 1 {
				t.Errorf("%d WARN lines about failed connection attempts in 3 s, want 1", warns)
			}
		})
	}
}
