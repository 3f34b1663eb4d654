package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// The repository's broker configuration (mosquitto.conf, deploy/mosquitto/acl
// and the password file deploy/mosquitto/init-auth.sh generates with
// mosquitto_passwd -b) run outside Docker: the refusals the compose stack
// relies on hold in Mosquitto itself.

// aclBroker is a Mosquitto started with the repository's configuration.
type aclBroker struct {
	url       string
	passwords map[string]string // user -> password
	log       *aclLog           // the broker's stderr: its log (log_dest stderr)
}

func startACLBroker(t *testing.T) *aclBroker {
	t.Helper()
	bin := harness.Need(t, "mosquitto")
	passwd := harness.Need(t, "mosquitto_passwd")
	root := harness.RepoRoot(t)
	dir := t.TempDir()
	auth := filepath.Join(dir, "auth")
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatalf("mkdir: %v", err)
	}

	b := &aclBroker{passwords: map[string]string{
		"publisher":  "pub-" + aclRandomHex(t),
		"subscriber": "sub-" + aclRandomHex(t),
	}}
	// The compose stack's own script: mosquitto_passwd -b for each user, the
	// repository's ACL copied beside it.
	cmd := exec.Command("sh", filepath.Join(root, "deploy", "mosquitto", "init-auth.sh"))
	cmd.Env = append(os.Environ(),
		"PATH="+filepath.Dir(passwd)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"AUTH_DIR="+auth,
		"ACL_SOURCE="+filepath.Join(root, "deploy", "mosquitto", "acl"),
		fmt.Sprintf("MOSQUITTO_OWNER=%d:%d", os.Getuid(), os.Getgid()),
		"PUBLISHER_MQTT_PASSWORD="+b.passwords["publisher"],
		"SUBSCRIBER_MQTT_PASSWORD="+b.passwords["subscriber"],
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("init-auth.sh: %v\n%s", err, out)
	}
	health, err := os.ReadFile(filepath.Join(auth, "healthcheck"))
	if err != nil {
		t.Fatalf("read healthcheck password: %v", err)
	}
	b.passwords["healthcheck"] = strings.TrimSpace(string(health))

	port := harness.FreePort(t)
	conf := aclMosquittoConf(t, filepath.Join(root, "mosquitto.conf"), port, auth, data)
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatalf("write mosquitto.conf: %v", err)
	}

	log := &aclLog{}
	b.log = log
	proc := exec.Command(bin, "-c", confPath)
	proc.Stdout, proc.Stderr = log, log
	if err := proc.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = proc.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = proc.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = proc.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", log.String())
		}
	})
	b.url = fmt.Sprintf("tcp://127.0.0.1:%d", port)
	if !harness.Eventually(10*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		c, err := aclConnect(b.url, "probe", "healthcheck", b.passwords["healthcheck"])
		if err == nil {
			c.Disconnect(0)
		}
		return err == nil
	}) {
		t.Fatalf("mosquitto did not accept the healthcheck user on %s:\n%s", b.url, log.String())
	}
	select {
	case <-exited:
		t.Fatalf("mosquitto exited:\n%s", log.String())
	default:
	}
	return b
}

// aclMosquittoConf is the repository's mosquitto.conf with only the
// listener and the container paths replaced. Every other setting is kept,
// and no container path may remain.
func aclMosquittoConf(t *testing.T, path string, port int, auth, data string) string {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var out []string
	listeners := 0
	for _, line := range strings.Split(string(src), "\n") {
		switch {
		case strings.HasPrefix(line, "listener "):
			listeners++
			line = fmt.Sprintf("listener %d 127.0.0.1", port)
		case strings.HasPrefix(line, "#"):
		default:
			line = strings.ReplaceAll(line, "/mosquitto/auth/", auth+"/")
			line = strings.ReplaceAll(line, "/mosquitto/data/", data+"/")
			if strings.Contains(line, "/mosquitto/") {
				t.Fatalf("mosquitto.conf: %q names a container path this test does not know", line)
			}
		}
		out = append(out, line)
	}
	if listeners != 1 {
		t.Fatalf("mosquitto.conf has %d listeners, want 1", listeners)
	}
	if os.Geteuid() == 0 {
		// As root Mosquitto would drop to the user "mosquitto", which cannot
		// read the test's directory.
		out = append(out, "user root")
	}
	return strings.Join(out, "\n") + "\n"
}

func aclRandomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	f, err := os.Open("/dev/urandom")
	if err != nil {
		t.Fatalf("open /dev/urandom: %v", err)
	}
	defer f.Close()
	if _, err := f.Read(b); err != nil {
		t.Fatalf("read /dev/urandom: %v", err)
	}
	return fmt.Sprintf("%x", b)
}

type aclLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *aclLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *aclLog) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// aclRecorder keeps what arrives on a client's subscriptions.
type aclRecorder struct {
	mu   sync.Mutex
	msgs []harness.Message
}

func (r *aclRecorder) handle(_ mqtt.Client, m mqtt.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, harness.Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), QoS: m.Qos(), Retained: m.Retained()})
}

func (r *aclRecorder) has(topic, payload string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if m.Topic == topic && string(m.Payload) == payload {
			return true
		}
	}
	return false
}

func (r *aclRecorder) topics() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		out = append(out, m.Topic+"="+string(m.Payload))
	}
	return out
}

// connect logs in with user and password (none when user is ""); the
// handler, if any, receives every message (ordered, before later packets).
func aclConnect(url, clientID, user, password string, handler ...mqtt.MessageHandler) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().
		AddBroker(url).
		SetClientID(clientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetConnectTimeout(5 * time.Second)
	if user != "" {
		opts.SetUsername(user).SetPassword(password)
	}
	if len(handler) > 0 {
		opts.SetDefaultPublishHandler(handler[0])
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s as %s: no CONNACK within 10s", url, clientID)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

func aclMustConnect(t *testing.T, b *aclBroker, clientID, user string, rec *aclRecorder) mqtt.Client {
	t.Helper()
	var h []mqtt.MessageHandler
	if rec != nil {
		h = append(h, rec.handle)
	}
	c, err := aclConnect(b.url, clientID, user, b.passwords[user], h...)
	if err != nil {
		t.Fatalf("connect as %s (client %s): %v", user, clientID, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// subscribe returns the granted QoS (0x80: refused).
func aclSubscribe(t *testing.T, c mqtt.Client, filter string) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

// publish sends at QoS 1 and waits for the PUBACK. Mosquitto acknowledges a
// publish that the ACL denies too (MQTT 3.1.1 has no way to refuse it), and
// drops it.
func aclPublish(t *testing.T, c mqtt.Client, topic, payload string) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func aclWaitFor(t *testing.T, r *aclRecorder, topic, payload string) {
	t.Helper()
	if !harness.Eventually(5*time.Second, func() bool { return r.has(topic, payload) }) {
		t.Fatalf("%s=%q not received within 5s; received %q", topic, payload, r.topics())
	}
}

func TestBrokerConfigRefusesLogins(t *testing.T) {
	b := startACLBroker(t)
	tests := []struct {
		name, user, password string
	}{
		{"anonymous", "", ""},
		{"wrong password", "subscriber", "wrong-" + b.passwords["subscriber"]},
		{"publisher's password for the subscriber", "subscriber", b.passwords["publisher"]},
		{"unknown user", "admin", b.passwords["publisher"]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := aclConnect(b.url, "refused-"+strings.ReplaceAll(tt.name, " ", "-"), tt.user, tt.password)
			if err == nil {
				c.Disconnect(0)
				t.Fatalf("connect as %q: accepted, want refused", tt.user)
			}
			if !strings.Contains(strings.ToLower(err.Error()), "not authori") {
				t.Errorf("connect as %q: error %q, want not authorised", tt.user, err)
			}
		})
	}
}

// Every check that something is NOT delivered is closed by a fence: a message
// published after it, by the same client, that the same reader receives.
// Mosquitto handles a client's packets in order and queues a reader's
// messages in order, and the readers here handle messages in order, so once
// the fence has arrived the earlier message would have arrived before it.
func TestBrokerConfigPublisherOnlyWrites(t *testing.T) {
	b := startACLBroker(t)
	var fromSub, fromPub aclRecorder
	reader := aclMustConnect(t, b, "reader", "subscriber", &fromSub)
	aclSubscribe(t, reader, "#")
	pub := aclMustConnect(t, b, "publisher", "publisher", &fromPub)
	granted := aclSubscribe(t, pub, "#")
	t.Logf("publisher's SUBSCRIBE # granted 0x%02x", granted)

	aclPublish(t, pub, "living/room1/temperature", "21.5")
	aclPublish(t, pub, "clients/publisher/status", "online")
	aclWaitFor(t, &fromSub, "living/room1/temperature", "21.5")
	aclWaitFor(t, &fromSub, "clients/publisher/status", "online")

	// The publisher's own subscription received nothing: the PUBACK of the
	// fence (a later packet on the same connection) came after whatever the
	// broker would have sent it.
	aclPublish(t, pub, "fence/publisher", "1")
	aclWaitFor(t, &fromSub, "fence/publisher", "1")
	if got := fromPub.topics(); len(got) != 0 {
		t.Errorf("publisher's subscription received %q, want nothing", got)
	}
}

func TestBrokerConfigSubscriberOnlyReads(t *testing.T) {
	b := startACLBroker(t)
	var got aclRecorder
	reader := aclMustConnect(t, b, "reader", "subscriber", &got)
	aclSubscribe(t, reader, "#")
	// The scaled subscribers' client ids: subscriber-<hostname>.
	sub := aclMustConnect(t, b, "subscriber-3f2a9c", "subscriber", nil)

	tests := []struct {
		name, topic string
		delivered   bool
	}{
		{"data topic", "living/room1/temperature", false},
		{"another client's status topic", "clients/publisher/status", false},
		{"a status topic of a sub-level", "clients/subscriber-3f2a9c/status/x", false},
		{"its own status topic", "clients/subscriber-3f2a9c/status", true},
		{"its own share-group probe topic", "clients/subscriber-3f2a9c/share-probe", true},
		{"another client's share-group probe topic", "clients/subscriber-0/share-probe", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := fmt.Sprintf("from subscriber %d", i)
			aclPublish(t, sub, tt.topic, payload)
			fence := fmt.Sprintf("fence %d", i)
			aclPublish(t, sub, "clients/subscriber-3f2a9c/status", fence)
			aclWaitFor(t, &got, "clients/subscriber-3f2a9c/status", fence)
			if d := got.has(tt.topic, payload); d != tt.delivered {
				t.Errorf("subscriber's publish to %s delivered: %v, want %v", tt.topic, d, tt.delivered)
			}
		})
	}
}

func TestBrokerConfigSubscriberReceives(t *testing.T) {
	b := startACLBroker(t)
	pub := aclMustConnect(t, b, "publisher", "publisher", nil)
	tests := []struct{ name, filter string }{
		{"wildcard", "#"},
		{"shared subscription", "$share/subscribers/living/#"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got aclRecorder
			sub := aclMustConnect(t, b, fmt.Sprintf("subscriber-%d", i), "subscriber", &got)
			if q := aclSubscribe(t, sub, tt.filter); q > 2 {
				t.Fatalf("SUBSCRIBE %s granted 0x%02x, want QoS 0-2", tt.filter, q)
			}
			payload := fmt.Sprintf("21.%d", i)
			aclPublish(t, pub, "living/room1/temperature", payload)
			aclWaitFor(t, &got, "living/room1/temperature", payload)
		})
	}
}

// The broker's health check in docker-compose.yml logs in as healthcheck
// and reads the retained $SYS/broker/version.
func TestBrokerConfigHealthcheckUserReadsSys(t *testing.T) {
	b := startACLBroker(t)
	var got aclRecorder
	c := aclMustConnect(t, b, "healthcheck", "healthcheck", &got)
	aclSubscribe(t, c, "$SYS/broker/version")
	if !harness.Eventually(5*time.Second, func() bool { return len(got.topics()) > 0 }) {
		t.Fatalf("no $SYS/broker/version within 5s")
	}
}
