package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// stored is one row of GET /messages as the contract gives it.
type stored struct {
	ID         int64     `json:"id"`
	Topic      string    `json:"topic"`
	Payload    string    `json:"payload"`
	Encoding   string    `json:"encoding"`
	QoS        int       `json:"qos"`
	Retained   bool      `json:"retained"`
	Duplicate  bool      `json:"duplicate"`
	ReceivedAt time.Time `json:"received_at"`
}

// bytes decodes the payload according to its encoding.
func (m stored) bytes(tb testing.TB) []byte {
	tb.Helper()
	switch m.Encoding {
	case "text":
		return []byte(m.Payload)
	case "base64":
		b, err := base64.StdEncoding.DecodeString(m.Payload)
		if err != nil {
			tb.Fatalf("message %d: bad base64 payload %q: %v", m.ID, m.Payload, err)
		}
		return b
	}
	tb.Fatalf("message %d: unknown encoding %q", m.ID, m.Encoding)
	return nil
}

type page struct {
	Messages []stored `json:"messages"`
	Next     *string  `json:"next"`
}

var unsafeID = regexp.MustCompile(`[^A-Za-z0-9]+`)

// clientID makes an MQTT client id unique to the test.
func clientID(tb testing.TB, role string) string {
	return role + "-" + strings.ToLower(unsafeID.ReplaceAllString(tb.Name(), "-"))
}

// broker is an MQTT broker of the test's own: a Mosquitto (*harness.Broker)
// or a NATS node or cluster (*harness.NATS, *harness.NATSCluster).
type broker interface {
	// URL is the broker's address as MQTT_BROKER takes it.
	URL() string
}

// startSubscriber runs a subscriber with a SQLite file of its own.
func startSubscriber(tb testing.TB, broker broker, env map[string]string) *harness.Service {
	tb.Helper()
	full := map[string]string{
		"MQTT_BROKER":    broker.URL(),
		"MQTT_CLIENT_ID": clientID(tb, "sub"),
		"MQTT_QOS":       "2",
		"DATABASE_URL":   "sqlite:" + filepath.Join(tb.TempDir(), "messages.db"),
	}
	for k, v := range env {
		full[k] = v
	}
	return harness.StartService(tb, harness.Subscriber(tb), full)
}

// startPublisher runs a publisher against broker.
func startPublisher(tb testing.TB, broker broker, env map[string]string) *harness.Service {
	tb.Helper()
	full := map[string]string{
		"MQTT_BROKER":    broker.URL(),
		"MQTT_CLIENT_ID": clientID(tb, "pub"),
	}
	for k, v := range env {
		full[k] = v
	}
	return harness.StartService(tb, harness.Publisher(tb), full)
}

// startStack runs a broker of the test's own, a subscriber (with subEnv) and a
// publisher, and waits until both services are ready.
func startStack(tb testing.TB, subEnv map[string]string) (*harness.Broker, *harness.Service, *harness.Service) {
	tb.Helper()
	b := harness.StartBroker(tb)
	sub, pub := startServices(tb, b, subEnv)
	return b, sub, pub
}

// startServices runs a subscriber (with subEnv) and a publisher against b
// and waits until both are ready.
func startServices(tb testing.TB, b broker, subEnv map[string]string) (sub, pub *harness.Service) {
	tb.Helper()
	sub = startSubscriber(tb, b, subEnv)
	pub = startPublisher(tb, b, nil)
	sub.WaitReady(tb, 10*time.Second)
	pub.WaitReady(tb, 10*time.Second)
	return sub, pub
}

// list is one GET /messages; query is the raw query string.
func list(tb testing.TB, sub *harness.Service, query string) page {
	tb.Helper()
	r := harness.Get(tb, sub.URL()+"/messages?"+query)
	if r.Status != 200 {
		tb.Fatalf("GET /messages?%s: status %d, body %s", query, r.Status, r.Body)
	}
	var p page
	if err := json.Unmarshal(r.Body, &p); err != nil {
		tb.Fatalf("GET /messages?%s: %v in %s", query, err, r.Body)
	}
	return p
}

// listAll follows the cursor through every page of filter.
func listAll(tb testing.TB, sub *harness.Service, filter string) []stored {
	tb.Helper()
	var all []stored
	q := url.Values{"topic": {filter}, "limit": {"1000"}}
	for {
		p := list(tb, sub, q.Encode())
		all = append(all, p.Messages...)
		if p.Next == nil {
			return all
		}
		q.Set("before", *p.Next)
	}
}

// waitStored waits until filter has at least n stored messages and returns them.
func waitStored(tb testing.TB, sub *harness.Service, filter string, n int, d time.Duration) []stored {
	tb.Helper()
	var got []stored
	if !harness.Eventually(d, func() bool {
		got = listAll(tb, sub, filter)
		return len(got) >= n
	}) {
		tb.Fatalf("%s: %d messages stored within %v, want %d", filter, len(got), d, n)
	}
	return got
}

// publish posts one publish request and fails the test unless it is a 200.
func publish(tb testing.TB, pub *harness.Service, body string) map[string]any {
	tb.Helper()
	r := harness.PostJSON(tb, pub.URL()+"/publish", body)
	if r.Status != 200 {
		tb.Fatalf("POST /publish %s: status %d, body %s", body, r.Status, r.Body)
	}
	var out map[string]any
	if err := json.Unmarshal(r.Body, &out); err != nil {
		tb.Fatalf("POST /publish answer %s: %v", r.Body, err)
	}
	return out
}

// mustJSON encodes v for a request body.
func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("encode %v: %v", v, err)
	}
	return string(b)
}

func publishBody(tb testing.TB, topic, message string, qos int) string {
	tb.Helper()
	return mustJSON(tb, map[string]any{"topic": topic, "message": message, "qos": qos})
}
