package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// Each member of a share group probes, after every connect, whether the
// broker honours the group (subscriber/internal/ingest/shareprobe.go): a
// QoS 0 message to clients/<client id>/share-probe that only a broker with
// shared subscriptions delivers back to it.

// probeRows are the stored rows on any client's probe topic.
func probeRows(t *testing.T, s *harness.Service) []stored {
	t.Helper()
	return listAll(t, s, "clients/+/share-probe")
}

func logged(s *harness.Service, msg string) int {
	n := 0
	for _, l := range s.Logs() {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

// On Mosquitto with the stack's own configuration (ACL included) the
// probe comes back at once: the members are ready, nothing is reported,
// and no subscriber stores a probe, neither a member whose filter matches
// the others' probe topics nor a subscriber of # without a group.
func TestShareGroupProbeMosquitto(t *testing.T) {
	b := startACLBroker(t)
	start := func(id string, env map[string]string) *harness.Service {
		full := map[string]string{
			"MQTT_BROKER":    b.url,
			"MQTT_CLIENT_ID": clientID(t, id),
			"MQTT_USERNAME":  "subscriber",
			"MQTT_PASSWORD":  b.passwords["subscriber"],
			"MQTT_TOPICS":    "#",
			"DATABASE_URL":   "sqlite:" + filepath.Join(t.TempDir(), "messages.db"),
		}
		for k, v := range env {
			full[k] = v
		}
		return harness.StartService(t, harness.Subscriber(t), full)
	}
	plain := start("plain", nil)
	one := start("one", map[string]string{"MQTT_SHARE_GROUP": "probe"})
	two := start("two", map[string]string{"MQTT_SHARE_GROUP": "probe"})
	for _, s := range []*harness.Service{plain, one, two} {
		s.WaitReady(t, 10*time.Second)
	}
	// A member that connects again probes again.
	if code := two.Stop(); code != 0 {
		t.Fatalf("member exited %d on SIGTERM", code)
	}
	two.Restart()
	two.WaitReady(t, 10*time.Second)

	for name, s := range map[string]*harness.Service{"one": one, "two": two} {
		line := s.WaitLog(t, 5*time.Second, func(l map[string]any) bool {
			return l["msg"] == "share group confirmed: the broker delivers shared subscriptions"
		})
		t.Logf("member %s: probe back after %v", name, time.Duration(line["waited"].(float64)))
		if n := logged(s, "share group not honoured by the broker: nothing published on MQTT_TOPICS reaches this subscriber"); n > 0 {
			t.Errorf("member %s reported its group not honoured %d times", name, n)
		}
		if got := metric(t, s, "subscriber_share_group_unsupported"); got != 0 {
			t.Errorf("member %s: subscriber_share_group_unsupported = %v, want 0", name, got)
		}
	}
	// The probes went to every subscriber of #: wait for the plain one to
	// have had three (one, two, two again), then look at every store.
	if !harness.Eventually(5*time.Second, func() bool {
		return logged(plain, "share group probe of another subscriber dropped") >= 3
	}) {
		t.Errorf("the subscriber of # saw %d probes, want 3", logged(plain, "share group probe of another subscriber dropped"))
	}
	for name, s := range map[string]*harness.Service{"plain": plain, "one": one, "two": two} {
		if rows := probeRows(t, s); len(rows) > 0 {
			t.Errorf("%s stored %d probes: %+v", name, len(rows), rows)
		}
	}
	if log := b.log.String(); strings.Contains(log, "share-probe") && strings.Contains(log, "Denied") {
		t.Errorf("the broker denied a probe:\n%s", log)
	}
}

// NATS grants $share/<group>/<filter> and delivers nothing published on
// the filter: the member says so at ERROR, /readyz is 503 with the reason,
// the metric is 1, and a publish the broker acknowledged is not stored:
// reported, not silent.
func TestNATSShareGroupReported(t *testing.T) {
	n := harness.StartNATS(t)
	sub := startSubscriber(t, n, map[string]string{"MQTT_SHARE_GROUP": "g", "MQTT_TOPICS": "nsg/#"})
	plain := startSubscriber(t, n, map[string]string{"MQTT_CLIENT_ID": clientID(t, "plain"), "MQTT_TOPICS": "#"})
	pub := startPublisher(t, n, nil)
	pub.WaitReady(t, 20*time.Second)
	plain.WaitReady(t, 20*time.Second)

	start := time.Now()
	line := sub.WaitLog(t, 30*time.Second, func(l map[string]any) bool {
		return l["msg"] == "share group not honoured by the broker: nothing published on MQTT_TOPICS reaches this subscriber"
	})
	t.Logf("reported after %v: level %v, err %v", time.Since(start).Round(time.Millisecond), line["level"], line["err"])
	if line["level"] != "ERROR" {
		t.Errorf("reported at %v, want ERROR", line["level"])
	}
	r := harness.Get(t, sub.URL()+"/readyz")
	var problem struct {
		Detail string `json:"detail"`
	}
	_ = json.Unmarshal(r.Body, &problem)
	t.Logf("/readyz: %d %s", r.Status, problem.Detail)
	if r.Status != 503 || !strings.Contains(problem.Detail, "does not honour shared subscriptions") {
		t.Errorf("/readyz = %d %s, want 503 saying the broker does not honour shared subscriptions", r.Status, r.Body)
	}
	if got := metric(t, sub, "subscriber_share_group_unsupported"); got != 1 {
		t.Errorf("subscriber_share_group_unsupported = %v, want 1", got)
	}

	// What the group should have stored: acknowledged by NATS, stored by
	// nobody in the group, while the member above says so.
	publish(t, pub, publishBody(t, "nsg/t", "lost to the group", 1))
	waitStored(t, plain, "nsg/#", 1, 10*time.Second)
	if rows := listAll(t, sub, "nsg/#"); len(rows) != 0 {
		t.Errorf("the member stored %d messages on NATS; the probe said it would get none", len(rows))
	}
	if got := sub.Status("/readyz"); got != 503 {
		t.Errorf("/readyz = %d later on, want 503 still", got)
	}
	// The subscriber without a group got the member's probes (QoS 0 on
	// clients/<id>/share-probe) and dropped them.
	if rows := probeRows(t, plain); len(rows) > 0 {
		t.Errorf("the subscriber of # stored %d probes", len(rows))
	}
	if logged(plain, "share group probe of another subscriber dropped") == 0 {
		t.Errorf("the subscriber of # saw no probe; the member's probes were not published")
	}
}
