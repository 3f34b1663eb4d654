package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// A fault test publishes a stream of QoS 1 and 2 messages through the
// publisher while it injects a fault, then counts, for each QoS, what the
// publisher acknowledged (200) and what the subscriber stored: missing
// (acknowledged, not stored), stored twice (unflagged: the subscriber did
// not notice; flagged: duplicate: true), and new messages stored flagged.
// It runs with unique payloads, where every row can be told apart, and
// with one payload on one topic, where only the counts can: a message that
// looks like an earlier one is still a new message.

// faultBroker is a broker of the test's own that a fault can stop, kill
// and start again.
type faultBroker interface {
	broker
	Stop()
	Kill()
	Start()
}

// faultBrokers are the brokers every fault test runs on. NATS redelivers
// unacknowledged messages when its ack_wait runs out (not at the
// reconnect, as MQTT 3.1.1 asks): 2 s keeps the tests short. After a
// restart of its own NATS sends them under new packet ids (against
// section 4.4; docs/delivery.md): renumbers. It also gives a freed packet
// id to the next message at once, where Mosquitto takes the next of 65535:
// reusesIDs.
var faultBrokers = []struct {
	name                 string
	renumbers, reusesIDs bool
	start                func(tb testing.TB) faultBroker
}{
	{"mosquitto", false, false, func(tb testing.TB) faultBroker { return harness.StartBroker(tb) }},
	{"nats", true, true, func(tb testing.TB) faultBroker { return harness.StartNATS(tb, harness.WithMQTTAckWait(2*time.Second)) }},
}

// brokerCase is one broker and payload kind of a fault test.
type brokerCase struct {
	faultBroker
	identical bool
	renumbers bool // the broker renumbers packet ids after its own restart
	reusesIDs bool // the broker gives a freed packet id to the next message at once
}

// forEachBroker runs test once per broker and payload kind.
func forEachBroker(t *testing.T, test func(t *testing.T, b brokerCase)) {
	for _, fb := range faultBrokers {
		for _, identical := range []bool{false, true} {
			name := fb.name + "/unique"
			if identical {
				name = fb.name + "/identical"
			}
			t.Run(name, func(t *testing.T) {
				test(t, brokerCase{faultBroker: fb.start(t), identical: identical, renumbers: fb.renumbers, reusesIDs: fb.reusesIDs})
			})
		}
	}
}

// outcome is what one publish request got.
type outcome int

const (
	confirmed outcome = iota // 200: must be stored once
	unsent                   // 503 not connected: never left the publisher
	maybeSent                // any other failure: may have reached the broker
)

// load publishes messages and records each one's outcome.
type load struct {
	identical bool
	mu        sync.Mutex
	outcome   map[string]outcome   // unique payloads
	ackedAt   map[string]time.Time // unique payloads
	counts    [3][3]int            // identical payloads: [qos][outcome]
	slowest   time.Duration        // the longest a 503 "not connected" took
	refused   int
	pace      time.Duration // each worker's pause after a request; 0: none

	// slowestLost is the longest a 503 for a connection lost during the
	// wait took, and lostWithin what it may take (0: a second): the
	// publisher answers it as soon as it sees the connection go, which is
	// at once when the broker dies, later when the broker holds the
	// connection and closes it (NATS, when JetStream cannot store).
	slowestLost, lostWithin time.Duration

	failingSince time.Time     // the start of the first failed request since the last 200
	outage       time.Duration // the longest stretch from a failed request to the next 200
}

// payload and topic of message i.
func (l *load) message(prefix string, i int) (topic, payload string, qos int) {
	qos = 1 + i%2
	if l.identical {
		return prefix + "/same", "21.5", qos
	}
	return fmt.Sprintf("%s/%d", prefix, i%10), fmt.Sprintf("%s-%06d", prefix, i), qos
}

// run publishes n messages from workers goroutines and returns when all
// were tried or ctx ends.
func (l *load) run(ctx context.Context, pubURL, prefix string, n, workers int) {
	l.outcome, l.ackedAt = map[string]outcome{}, map[string]time.Time{}
	client := &http.Client{Timeout: 10 * time.Second}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				topic, payload, qos := l.message(prefix, i)
				body := fmt.Sprintf(`{"topic":%q,"message":%q,"qos":%d}`, topic, payload, qos)
				start := time.Now()
				resp, err := client.Post(pubURL+"/publish", "application/json", bytes.NewBufferString(body))
				took := time.Since(start)
				status, answer := 0, []byte(nil)
				if err == nil {
					answer, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				o := maybeSent
				switch {
				case status == http.StatusOK:
					o = confirmed
				case status == http.StatusServiceUnavailable && bytes.Contains(answer, []byte("not connected")):
					o = unsent
				}
				l.mu.Lock()
				if l.identical {
					l.counts[qos][o]++
				} else {
					l.outcome[payload] = o
					if o == confirmed {
						l.ackedAt[payload] = time.Now()
					}
				}
				switch {
				case o == unsent:
					l.slowest = max(l.slowest, took)
				case status == http.StatusServiceUnavailable:
					l.slowestLost = max(l.slowestLost, took)
				}
				if o != confirmed {
					l.refused++
					if l.failingSince.IsZero() {
						l.failingSince = start
					}
				} else if !l.failingSince.IsZero() {
					l.outage = max(l.outage, time.Since(l.failingSince))
					l.failingSince = time.Time{}
				}
				l.mu.Unlock()
				if o != confirmed {
					time.Sleep(20 * time.Millisecond)
				}
				time.Sleep(l.pace)
			}
		})
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

// tally is what a fault test counts for one QoS.
type tally struct {
	acked, maybe, rows, missing, twice, flagged, newFlagged, unflaggedTwice int
	excused                                                                 int // missing, within the broker's snapshot window
	unconfirmedTwice                                                        int // of unflaggedTwice, publishes not answered 200 (unique payloads only)
}

func (c tally) String() string {
	return fmt.Sprintf("%d acknowledged (%d more not confirmed), %d rows, %d missing (%d within the broker's snapshot window), %d stored twice (%d flagged, %d unflagged, %d of them not confirmed), %d new messages flagged",
		c.acked, c.maybe, c.rows, c.missing, c.excused, c.twice, c.flagged, c.unflaggedTwice, c.unconfirmedTwice, c.newFlagged)
}

// count compares what l acknowledged with the rows stored. lost may excuse
// a missing unique message, given when it was acknowledged.
func (l *load) count(rows []stored, lost func(time.Time) bool) [3]tally {
	var t [3]tally
	if l.identical {
		var plain, flagged [3]int
		for _, r := range rows {
			if r.Duplicate {
				flagged[r.QoS]++
			} else {
				plain[r.QoS]++
			}
		}
		for q := 1; q <= 2; q++ {
			c := &t[q]
			c.acked, c.maybe = l.counts[q][confirmed], l.counts[q][maybeSent]
			c.rows, c.flagged = plain[q]+flagged[q], flagged[q]
			// Only counts tell identical messages apart: each figure is
			// what the rows prove at least.
			c.missing = max(c.acked-c.rows, 0)
			c.newFlagged = max(c.acked-plain[q], 0) - c.missing
			// A publish not confirmed may be stored twice: the
			// publisher's client sends it again after the reconnect.
			c.unflaggedTwice = max(plain[q]-c.acked-2*c.maybe, 0)
			c.twice = max(c.rows-c.acked-2*c.maybe, 0)
		}
		return t
	}
	type seen struct{ plain, flagged int }
	by := map[string]*seen{}
	for _, r := range rows {
		s := by[r.Payload]
		if s == nil {
			s = &seen{}
			by[r.Payload] = s
		}
		if r.Duplicate {
			s.flagged++
		} else {
			s.plain++
		}
	}
	for p, o := range l.outcome {
		var q int
		fmt.Sscanf(p[strings.LastIndexByte(p, '-')+1:], "%d", &q)
		q = 1 + q%2
		c := &t[q]
		s := by[p]
		if s == nil {
			s = &seen{}
		}
		switch o {
		case confirmed:
			c.acked++
		case maybeSent:
			c.maybe++
		}
		c.rows += s.plain + s.flagged
		c.flagged += s.flagged
		// A publish not confirmed may be stored twice: the publisher's
		// client sends it again after the reconnect (unconfirmedTwice).
		c.twice += max(s.plain+s.flagged-1, 0)
		c.unflaggedTwice += max(s.plain-1, 0)
		if o != confirmed {
			c.unconfirmedTwice += max(s.plain-1, 0)
		}
		if o == confirmed && s.plain+s.flagged == 0 {
			if lost != nil && lost(l.ackedAt[p]) {
				c.excused++
			} else {
				c.missing++
			}
		}
		if o == confirmed && s.plain == 0 && s.flagged > 0 {
			c.newFlagged++
		}
	}
	return t
}

// audit waits until every acknowledged message of prefix is stored (or d
// passes), logs the tallies and returns them.
func audit(tb testing.TB, sub *harness.Service, prefix string, l *load, d time.Duration, lost func(time.Time) bool) [3]tally {
	tb.Helper()
	var t [3]tally
	harness.Eventually(d, func() bool {
		t = l.count(listAll(tb, sub, prefix+"/#"), lost)
		return t[1].missing+t[2].missing == 0
	})
	// The last rows may still be on their way: wait for them to settle.
	time.Sleep(200 * time.Millisecond)
	t = l.count(listAll(tb, sub, prefix+"/#"), lost)
	for q := 1; q <= 2; q++ {
		tb.Logf("%s QoS %d: %v", prefix, q, t[q])
	}
	tb.Logf("%s: %d refused; the slowest 503 not connected in %v, the slowest 503 connection lost in %v", prefix, l.refused, l.slowest.Round(time.Millisecond), l.slowestLost.Round(time.Millisecond))
	if t[1].acked+t[2].acked == 0 {
		tb.Errorf("%s: no publish was acknowledged: the test proved nothing", prefix)
	}
	if l.slowest > time.Second {
		tb.Errorf("%s: a 503 not connected took %v; it must be answered at once", prefix, l.slowest)
	}
	if within := cmp.Or(l.lostWithin, time.Second); l.slowestLost > within {
		tb.Errorf("%s: a 503 connection lost took %v; want within %v", prefix, l.slowestLost, within)
	}
	return t
}

// requireExact fails the test unless nothing was missing, nothing stored
// twice unflagged, no new message flagged, and, when qos2Exact, no QoS 2
// message flagged either: section 4.3.3 makes QoS 2 exactly once on a
// broker that keeps its packet ids.
func requireExact(tb testing.TB, prefix string, t [3]tally, qos2Exact bool) {
	tb.Helper()
	for q := 1; q <= 2; q++ {
		if t[q].missing > 0 {
			tb.Errorf("%s QoS %d: %d acknowledged messages missing", prefix, q, t[q].missing)
		}
		// A publish answered 503 may be stored twice: the publisher's
		// client sends it again after the reconnect.
		if n := t[q].unflaggedTwice - t[q].unconfirmedTwice; n > 0 {
			tb.Errorf("%s QoS %d: %d acknowledged messages stored twice without duplicate: true", prefix, q, n)
		}
		if t[q].newFlagged > 0 {
			tb.Errorf("%s QoS %d: %d new messages stored with duplicate: true", prefix, q, t[q].newFlagged)
		}
	}
	if qos2Exact && t[2].flagged > 0 {
		tb.Errorf("%s QoS 2: %d rows flagged duplicate; QoS 2 is exactly once", prefix, t[2].flagged)
	}
}

// during runs the load in the background while fault injects its faults.
func during(t *testing.T, pub *harness.Service, prefix string, identical bool, n int, fault func()) *load {
	t.Helper()
	l := &load{identical: identical}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx, pub.URL(), prefix, n, 4)
	}()
	fault()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		cancel()
		<-done
		t.Errorf("the load did not finish within 3 minutes")
	}
	return l
}

// startFaultStack runs b with a subscriber (with subEnv) and a publisher,
// and waits until both are ready.
func startFaultStack(t *testing.T, b faultBroker, subEnv map[string]string) (*harness.Service, *harness.Service) {
	t.Helper()
	sub := startSubscriber(t, b, subEnv)
	pub := startPublisher(t, b, nil)
	sub.WaitReady(t, 20*time.Second)
	pub.WaitReady(t, 20*time.Second)
	return sub, pub
}

// SIGKILL the subscriber again and again during a stream: every message the
// publisher acknowledged is stored once it is back.
func TestFaultSubscriberKilled(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b brokerCase) {
		sub, pub := startFaultStack(t, b, nil)
		const kills = 3
		l := during(t, pub, "kill", b.identical, 3000, func() {
			for range kills {
				// Killed while it stores, not while it connects: a
				// process that dies between CONNECT and CONNACK leaves
				// its ledger uncertain, and then even QoS 2 redeliveries
				// are flagged (docs/delivery.md, rule 4). NATS holds a
				// client that reconnects within a second for a second
				// without CONNACK.
				sub.WaitReady(t, 10*time.Second)
				time.Sleep(400 * time.Millisecond)
				sub.Kill()
				time.Sleep(300 * time.Millisecond)
				sub.Restart()
			}
		})
		sub.WaitReady(t, 20*time.Second)
		tallies := audit(t, sub, "kill", l, 60*time.Second, nil)
		if b.identical && b.reusesIDs {
			// History B of docs/delivery.md ("What MQTT 3.1.1 cannot
			// tell"): the broker read a PUBACK the subscriber had not yet
			// seen confirmed when it was killed, gave the freed id to a
			// new message with the same content, and sends that one again
			// after the restart. The two cannot be told apart, and the
			// new one is stored flagged. Only identical payloads show it,
			// only at QoS 1, and only as many as acknowledgements were
			// unconfirmed at the kills: a handful at this rate, where a
			// fault in the ledger would flag hundreds.
			const window = 5 * kills
			if n := tallies[1].newFlagged; n > 0 {
				t.Logf("kill QoS 1: %d new messages flagged in the window of docs/delivery.md (at most %d)", n, window)
				if n > window {
					t.Errorf("kill QoS 1: %d new messages flagged, more than the %d the window explains", n, window)
				}
				tallies[1].newFlagged = 0
			}
		}
		requireExact(t, "kill", tallies, true)
	})
}

// Restart the broker gracefully, twice, during a stream: the publisher
// refuses at once while it is down, and every message it acknowledged is
// stored.
func TestFaultBrokerRestarted(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b brokerCase) {
		sub, pub := startFaultStack(t, b, nil)
		l := during(t, pub, "restart", b.identical, 3000, func() {
			for range 2 {
				time.Sleep(500 * time.Millisecond)
				b.Stop()
				time.Sleep(500 * time.Millisecond)
				b.Start()
			}
		})
		sub.WaitReady(t, 30*time.Second)
		tallies := audit(t, sub, "restart", l, 60*time.Second, nil)
		if !b.renumbers {
			// Mosquitto 2.0 sends a QoS 2 PUBLISH again, although it
			// had the PUBREC, when a client reconnects twice before it
			// resent the PUBREL (docs/delivery.md): flagged, not exact.
			requireExact(t, "restart", tallies, false)
			return
		}
		// A restarted NATS sends again, under new packet ids and even
		// twice on one connection, messages whose acknowledgement it had
		// processed (docs/delivery.md): only the content can tie them to
		// what was stored. Nothing may be lost; the duplicates are counted.
		for q := 1; q <= 2; q++ {
			if tallies[q].missing > 0 {
				t.Errorf("restart QoS %d: %d acknowledged messages missing", q, tallies[q].missing)
			}
		}
	})
}

// SIGKILL the broker, twice, during a stream. Mosquitto 2.0 acknowledges a
// message before it saves it (every autosave_interval, 1 s here and in
// mosquitto.conf), so a killed Mosquitto forgets what it acknowledged since
// its last snapshot and had not yet handed to the subscriber, and may hand
// again what the subscriber had stored. The test measures it, and holds
// Mosquitto to its window: a missing message must have been acknowledged
// within autosave_interval (plus the time a snapshot takes) before a kill.
func TestFaultBrokerKilled(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b brokerCase) {
		sub, pub := startFaultStack(t, b, nil)
		var kills []time.Time
		l := during(t, pub, "sigkill", b.identical, 3000, func() {
			for range 2 {
				time.Sleep(700 * time.Millisecond)
				kills = append(kills, time.Now())
				b.Kill()
				time.Sleep(500 * time.Millisecond)
				b.Start()
			}
		})
		sub.WaitReady(t, 30*time.Second)
		mosquitto, _ := b.faultBroker.(*harness.Broker)
		tallies := audit(t, sub, "sigkill", l, 10*time.Second, func(acked time.Time) bool {
			if mosquitto == nil {
				return false
			}
			// What a killed Mosquitto forgets: what it acknowledged since
			// the last snapshot it began before the kill (its log gives
			// the second).
			for _, k := range kills {
				if !acked.After(k) && !acked.Before(lastSnapshot(t, mosquitto.LogPath(), k)) {
					return true
				}
			}
			return false
		})
		if b.identical || tallies[1].missing+tallies[2].missing == 0 {
			return
		}
		// Missing beyond the last snapshot (one that had begun may not
		// have been written whole when the kill came): the subscriber
		// must never have had them; one it received and did not store
		// would be its own loss.
		arrived := map[string]bool{}
		for _, line := range sub.Logs() {
			if line["msg"] == "message arrived" {
				arrived[fmt.Sprint(line["payload"])] = true
			}
		}
		stored := map[string]bool{}
		for _, r := range listAll(t, sub, "sigkill/#") {
			stored[r.Payload] = true
		}
		lostByBroker := 0
		for p, o := range l.outcome {
			switch {
			case o != confirmed || stored[p]:
			case arrived[p]:
				t.Errorf("%s arrived at the subscriber and was not stored", p)
			default:
				lostByBroker++
			}
		}
		t.Logf("%d acknowledged messages never reached the subscriber (the killed broker forgot them)", lostByBroker)
	})
}

// lastSnapshot is the start of the second in which Mosquitto last began to
// save its database before before (from its log, "<unix seconds>: Saving
// in-memory database"), or the zero time.
func lastSnapshot(tb testing.TB, logPath string, before time.Time) time.Time {
	tb.Helper()
	data, err := os.ReadFile(logPath)
	if err != nil {
		tb.Fatalf("read mosquitto log: %v", err)
	}
	var last time.Time
	for line := range strings.SplitSeq(string(data), "\n") {
		sec, rest, ok := strings.Cut(line, ": ")
		if !ok || !strings.HasPrefix(rest, "Saving in-memory database") {
			continue
		}
		n, err := strconv.ParseInt(sec, 10, 64)
		if err != nil {
			continue
		}
		if at := time.Unix(n, 0); !at.After(before) && at.After(last) {
			last = at
		}
	}
	return last
}

// Cut the subscriber off PostgreSQL during a stream: it must not acknowledge
// what it could not commit, say so on /readyz, and store everything once the
// database is back.
func TestFaultStoreUnavailable(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b brokerCase) {
		db := harness.Postgres(t)
		proxy := harness.StartProxy(t, "127.0.0.1:5432")
		sub, pub := startFaultStack(t, b, map[string]string{"DATABASE_URL": strings.Replace(db, "127.0.0.1:5432", proxy.Addr(), 1)})
		notReady := 0
		l := during(t, pub, "store", b.identical, 2000, func() {
			for range 2 {
				time.Sleep(500 * time.Millisecond)
				proxy.Cut()
				if harness.Eventually(5*time.Second, func() bool { return sub.Status("/readyz") == 503 }) {
					notReady++
				}
				time.Sleep(1500 * time.Millisecond)
				proxy.Restore()
			}
		})
		if notReady != 2 {
			t.Errorf("/readyz turned 503 in %d of 2 outages of the store, want 2", notReady)
		}
		sub.WaitReady(t, 30*time.Second)
		tallies := audit(t, sub, "store", l, 60*time.Second, nil)
		if b.renumbers {
			// An outage longer than NATS's ack_wait (the retries' backoff
			// makes one of 1.5 s last several seconds) has NATS send
			// messages again on the same connection with DUP under packet
			// ids the connection never had (against section 4.4): seen 28
			// such arrivals in a run, copies of stored messages, which
			// nothing but their content ties to them. As after its restart,
			// nothing may be lost; the rest is measured.
			for q := 1; q <= 2; q++ {
				if tallies[q].missing > 0 {
					t.Errorf("store QoS %d: %d acknowledged messages missing", q, tallies[q].missing)
				}
			}
			return
		}
		requireExact(t, "store", tallies, true)
	})
}

// 100,000 QoS 1 messages queued while the subscriber is away are all stored
// once it returns.
func TestFaultQueueWhileOffline(t *testing.T) {
	const n = 100_000
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, map[string]string{"MQTT_TOPICS": "queue/#", "MQTT_QOS": "1", "LOG_LEVEL": "warn"})
	sub.WaitReady(t, 10*time.Second)
	if code := sub.Stop(); code != 0 {
		t.Fatalf("subscriber exited %d on SIGTERM, want 0", code)
	}

	c := harness.Client(t, b.URL(), clientID(t, "load"), true)
	start := time.Now()
	window := make(chan struct{}, 1000)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		window <- struct{}{}
		tok := c.Publish(fmt.Sprintf("queue/%d", i%100), 1, false, fmt.Sprintf("q-%06d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-window }()
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				errs <- fmt.Errorf("publish: %v", tok.Error())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("queueing %d messages: %v", n, err)
	}
	t.Logf("queued %d QoS 1 messages in %v", n, time.Since(start))

	start = time.Now()
	sub.Restart()
	var count int
	if !harness.Eventually(3*time.Minute, func() bool {
		count = countStored(t, sub)
		return count >= n
	}) {
		t.Fatalf("%d of %d queued messages stored after 3 minutes", count, n)
	}
	t.Logf("stored %d queued messages in %v", count, time.Since(start))

	rows := listAll(t, sub, "queue/#")
	seen := make(map[string]bool, n)
	for _, r := range rows {
		seen[r.Payload] = true
	}
	if len(seen) != n || len(rows) != n {
		t.Errorf("%d rows, %d distinct payloads; want %d of each", len(rows), len(seen), n)
	}
}

// countStored reads the subscriber's stored-messages counter from /metrics.
func countStored(tb testing.TB, sub *harness.Service) int {
	tb.Helper()
	r := harness.Get(tb, sub.URL()+"/metrics")
	for _, line := range strings.Split(string(r.Body), "\n") {
		var v float64
		if strings.HasPrefix(line, "subscriber_messages_stored_total ") {
			if _, err := fmt.Sscanf(line, "subscriber_messages_stored_total %g", &v); err == nil {
				return int(v)
			}
		}
	}
	tb.Fatalf("subscriber_messages_stored_total not in /metrics:\n%s", r.Body)
	return 0
}

// Two subscribers in one share group write to one PostgreSQL database: every
// message is stored once, both take part, and killing one loses nothing.
func TestFaultShareGroup(t *testing.T) {
	db := harness.Postgres(t)
	b := harness.StartBroker(t)
	env := map[string]string{"DATABASE_URL": db, "MQTT_SHARE_GROUP": "store", "MQTT_TOPICS": "share/#"}
	one := startSubscriber(t, b, withEnv(env, "MQTT_CLIENT_ID", clientID(t, "sub-1")))
	two := startSubscriber(t, b, withEnv(env, "MQTT_CLIENT_ID", clientID(t, "sub-2")))
	pub := startPublisher(t, b, nil)
	for _, s := range []*harness.Service{one, two, pub} {
		s.WaitReady(t, 10*time.Second)
	}

	l := during(t, pub, "share", false, 2000, func() {
		time.Sleep(700 * time.Millisecond)
		two.Kill()
		time.Sleep(500 * time.Millisecond)
		two.Restart()
	})
	two.WaitReady(t, 20*time.Second)
	requireExact(t, "share", audit(t, one, "share", l, 60*time.Second, nil), true)

	// One row for each message, but the flagged second copies that a
	// killed subscriber leaves at QoS 1 (the window of docs/delivery.md,
	// as in TestFaultSubscriberKilled): no message stored by both members
	// as a new one.
	plain := 0
	for _, r := range listAll(t, one, "share/#") {
		if !r.Duplicate || r.QoS == 2 {
			plain++
		}
	}
	if n := len(l.ackedAt); plain != n {
		t.Errorf("%d rows (but flagged QoS 1 copies) for %d acknowledged publishes, want exactly one each", plain, n)
	}
	for _, s := range []*harness.Service{one, two} {
		arrived := 0
		for _, line := range s.Logs() {
			if line["msg"] == "message arrived" {
				arrived++
			}
		}
		t.Logf("%s logged %d arrivals", s.URL(), arrived)
		if arrived == 0 {
			t.Errorf("subscriber %s took no part in the share group", s.URL())
		}
	}
}

func withEnv(env map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}
