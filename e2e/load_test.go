package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// Load against the stack as docker-compose.yml runs it: Mosquitto with the
// repository's mosquitto.conf, password file and ACL; the publisher and the
// subscriber logged in as the compose file logs them in, the publisher with
// the compose file's settings that bear on load (MQTT_MAX_INFLIGHT). Every
// publish answered 200 must be stored exactly once, and the publisher must
// come out of it connected, on its first connection.

// startRepoStack runs the repository's broker configuration, a subscriber
// storing load/# and a publisher, and waits until both are ready.
func startRepoStack(t *testing.T) (*aclBroker, *harness.Service, *harness.Service) {
	t.Helper()
	_, _, cf := loadCompose(t)
	b := startACLBroker(t)
	sub := harness.StartService(t, harness.Subscriber(t), map[string]string{
		"MQTT_BROKER":    b.url,
		"MQTT_CLIENT_ID": clientID(t, "sub"),
		"MQTT_USERNAME":  "subscriber",
		"MQTT_PASSWORD":  b.passwords["subscriber"],
		"MQTT_TOPICS":    "load/#",
		"DATABASE_URL":   "sqlite:" + filepath.Join(t.TempDir(), "messages.db"),
		// One line per arrival at INFO is the contract; debug would add more.
		"LOG_LEVEL": "info",
	})
	env := map[string]string{
		"MQTT_BROKER":    b.url,
		"MQTT_CLIENT_ID": clientID(t, "pub"),
		"MQTT_USERNAME":  "publisher",
		"MQTT_PASSWORD":  b.passwords["publisher"],
		"LOG_LEVEL":      "info",
	}
	// The publisher's settings of the stack that bear on load.
	for _, k := range []string{"MQTT_MAX_INFLIGHT", "PUBLISH_TIMEOUT", "MQTT_QOS"} {
		if v, ok := cf.Services["publisher"].Environment[k]; ok {
			env[k] = v
		}
	}
	pub := harness.StartService(t, harness.Publisher(t), env)
	sub.WaitReady(t, 10*time.Second)
	pub.WaitReady(t, 10*time.Second)
	return b, sub, pub
}

// acked collects the payloads the publisher answered 200 for.
type acked struct {
	mu       sync.Mutex
	payloads map[string]bool
	refused  map[int]int // status: count
}

func (a *acked) add(payload string, status int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.payloads == nil {
		a.payloads, a.refused = map[string]bool{}, map[int]int{}
	}
	if status == http.StatusOK {
		a.payloads[payload] = true
	} else {
		a.refused[status]++
	}
}

// checkStoredOnce waits until every acknowledged payload under prefix is
// stored, and fails for each one missing or stored more than once.
func checkStoredOnce(t *testing.T, sub *harness.Service, prefix string, a *acked, d time.Duration) {
	t.Helper()
	var rows []stored
	count := map[string]int{}
	missing := 0
	start := time.Now()
	harness.Eventually(d, func() bool {
		rows = listAll(t, sub, prefix+"/#")
		clear(count)
		for _, r := range rows {
			count[r.Payload]++
		}
		missing = 0
		for p := range a.payloads {
			if count[p] == 0 {
				missing++
			}
		}
		return missing == 0
	})
	twice := 0
	for p, n := range count {
		if n > 1 && a.payloads[p] {
			twice++
			if twice <= 3 {
				t.Errorf("%s: %q acknowledged and stored %d times", prefix, p, n)
			}
		}
	}
	t.Logf("%s: %d acknowledged, refused %v, %d rows stored (all in %v), %d missing, %d stored more than once",
		prefix, len(a.payloads), a.refused, len(rows), time.Since(start).Round(time.Millisecond), missing, twice)
	if missing > 0 {
		t.Errorf("%s: %d of %d acknowledged messages not stored within %v", prefix, missing, len(a.payloads), d)
	}
	if len(a.payloads) == 0 {
		t.Errorf("%s: nothing acknowledged: the test proved nothing", prefix)
	}
}

// checkStillHealthy asserts that the publisher came through on its first
// connection: ready, publishing, no reconnect in its metrics or log, and no
// dropped connection of it in the broker's log.
func checkStillHealthy(t *testing.T, b *aclBroker, sub, pub *harness.Service, prefix string) {
	t.Helper()
	if got := pub.Status("/readyz"); got != http.StatusOK {
		t.Errorf("publisher /readyz = %d after the load, want 200", got)
	}
	after := prefix + "/after"
	if r := harness.PostJSON(t, pub.URL()+"/publish", publishBody(t, after, "still here", 2)); r.Status != http.StatusOK {
		t.Errorf("a publish after the load: %d %s, want 200", r.Status, r.Body)
	} else {
		waitStored(t, sub, after, 1, 10*time.Second)
	}
	m := string(harness.Get(t, pub.URL()+"/metrics").Body)
	// Every publish acknowledged: no slot is held any more.
	for _, want := range []string{"publisher_mqtt_reconnects_total 0\n", "publisher_mqtt_connected 1\n", "publisher_mqtt_inflight 0\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("publisher /metrics lacks %q", strings.TrimSpace(want))
		}
	}
	for _, line := range strings.Split(m, "\n") {
		if strings.HasPrefix(line, "publisher_mqtt_inflight_max ") || strings.HasPrefix(line, "publisher_mqtt_inflight_wait_seconds_count ") {
			t.Logf("publisher metric %s", line)
		}
	}
	for _, l := range pub.Logs() {
		if l["msg"] == "mqtt connection lost" {
			t.Errorf("publisher log: %v", l)
		}
	}
	id := clientID(t, "pub")
	for _, line := range strings.Split(b.log.String(), "\n") {
		if strings.Contains(line, id) && (strings.Contains(line, "disconnect") || strings.Contains(line, "Bad socket") || strings.Contains(line, "error")) {
			t.Errorf("broker log: %s", line)
		}
	}
}

// Batches of 1000 one after another, at QoS 2 and at QoS 1: each answered 200
// with every item acknowledged, and every item stored once.
func TestLoadBatches(t *testing.T) {
	b, sub, pub := startRepoStack(t)
	const batches, size = 3, 1000
	var a acked
	start := time.Now()
	for _, qos := range []int{2, 1} {
		for n := range batches {
			items := make([]map[string]any, size)
			for i := range items {
				items[i] = map[string]any{"topic": fmt.Sprintf("load/batch/q%d", qos), "message": fmt.Sprintf("q%d-b%d-%04d", qos, n, i), "qos": qos}
			}
			bs := time.Now()
			r := harness.PostJSON(t, pub.URL()+"/publish/batch", mustJSON(t, map[string]any{"messages": items}))
			var got struct {
				Results []struct {
					Index        int  `json:"index"`
					Acknowledged bool `json:"acknowledged"`
					Status       int  `json:"status"`
				} `json:"results"`
			}
			if err := json.Unmarshal(r.Body, &got); err != nil || len(got.Results) != size {
				t.Fatalf("QoS %d batch %d: status %d, %d results (%v): %.300s", qos, n, r.Status, len(got.Results), err, r.Body)
			}
			for i, res := range got.Results {
				if res.Index != i {
					t.Fatalf("QoS %d batch %d: result %d has index %d", qos, n, i, res.Index)
				}
				a.add(items[i]["message"].(string), res.Status)
			}
			t.Logf("QoS %d batch %d: %d in %v", qos, n, r.Status, time.Since(bs).Round(time.Millisecond))
			if r.Status != http.StatusOK {
				t.Errorf("QoS %d batch %d: status %d, want 200: %.300s", qos, n, r.Status, r.Body)
			}
		}
	}
	t.Logf("%d batches of %d published in %v", 2*batches, size, time.Since(start).Round(time.Millisecond))
	checkStoredOnce(t, sub, "load/batch", &a, 5*time.Second)
	checkStillHealthy(t, b, sub, pub, "load/batch")
}

// Hundreds of single publishes at once, at QoS 2 and at QoS 1: every one
// answered 200 and stored once.
func TestLoadConcurrent(t *testing.T) {
	b, sub, pub := startRepoStack(t)
	const concurrent = 400
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: concurrent},
	}
	t.Cleanup(client.CloseIdleConnections)
	var a acked
	for _, qos := range []int{2, 1} {
		start := time.Now()
		ready := make(chan struct{})
		var wg sync.WaitGroup
		for i := range concurrent {
			wg.Add(1)
			go func() {
				defer wg.Done()
				payload := fmt.Sprintf("q%d-%04d", qos, i)
				body := fmt.Sprintf(`{"topic":"load/concurrent/q%d","message":%q,"qos":%d}`, qos, payload, qos)
				<-ready
				status := 0
				resp, err := client.Post(pub.URL()+"/publish", "application/json", bytes.NewBufferString(body))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				a.add(payload, status)
			}()
		}
		close(ready)
		wg.Wait()
		t.Logf("QoS %d: %d concurrent publishes answered in %v", qos, concurrent, time.Since(start).Round(time.Millisecond))
	}
	if len(a.refused) > 0 {
		t.Errorf("answers other than 200: %v (status: count; 0 is a failed request)", a.refused)
	}
	checkStoredOnce(t, sub, "load/concurrent", &a, 5*time.Second)
	checkStillHealthy(t, b, sub, pub, "load/concurrent")
}
