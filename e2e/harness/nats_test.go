package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// The binary is built once per machine and kept under the user's cache
// directory, keyed by version.
func TestNATSServerCached(t *testing.T) {
	bin := NATSServer(t)
	dir, err := natsCacheDir(natsVersion())
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "nats-server"); bin != want {
		t.Errorf("binary at %s, want %s", bin, want)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if got, want := strings.TrimSpace(string(out)), "nats-server: "+natsVersion(); err != nil || got != want {
		t.Errorf("--version = %q (%v), want %q", got, err, want)
	}
	start := time.Now()
	again, built, err := buildNATS(natsVersion())
	if err != nil || built || again != bin {
		t.Errorf("second build: %s built %v (%v), want the cached %s", again, built, err, bin)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("finding the cached binary took %v", took)
	}
}

// The template renders a configuration the server accepts for a node of a
// compose cluster too: host names in the routes, listeners on every
// interface, users, log to stdout.
func TestNATSConfTemplateForCompose(t *testing.T) {
	bin := NATSServer(t)
	routes := []string{"nats-route://nats-1:6222", "nats-route://nats-2:6222", "nats-route://nats-3:6222"}
	conf := NATSConf{
		Name: "nats-2", Host: "0.0.0.0",
		ClientPort: 4222, MQTTPort: 1883, HTTPPort: 8222, ClusterPort: 6222,
		ClusterName: "mqtt", Routes: routes,
		StoreDir: "/data", MaxMemoryStore: "256MB", MaxFileStore: "10GB",
		Users:          []NATSUser{{"publisher", `pa"ss\word`}, {"subscriber", "s3cret"}},
		StreamReplicas: 3, AckWait: 45 * time.Second, MaxAckPending: 100,
	}
	text, err := conf.Render(filepath.Join(RepoRoot(t), NATSConfTemplate))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-c", path).CombinedOutput(); err != nil {
		t.Fatalf("nats-server -t refused the rendered configuration: %v\n%s\n%s", err, out, text)
	}
	for _, want := range []string{"stream_replicas: 3", `ack_wait: "45s"`, "max_ack_pending: 100", "nats-route://nats-3:6222", `password: "pa\"ss\\word"`} {
		if !strings.Contains(string(text), want) {
			t.Errorf("rendered configuration lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(string(text), "log_file") {
		t.Errorf("no LogFile given, but the configuration has a log_file:\n%s", text)
	}
}

// A single node keeps a retained message and a persistent session across a
// graceful stop and across SIGKILL.
func TestNATSRestartKeepsState(t *testing.T) {
	n := StartNATS(t)
	c := Client(t, n.URL(), "harness-pub", true)
	Publish(t, c, "harness/retained", 1, true, []byte("kept"))
	c.Disconnect(100)

	for _, restart := range []func(){n.Stop, n.Kill} {
		restart()
		if n.Running() {
			t.Fatal("node still running after stop")
		}
		n.Start()
		n.WaitHealthy(t, 30*time.Second)
		w := Watch(t, n.URL(), "harness/#")
		got := w.WaitFor(t, 10*time.Second, func(m Message) bool { return m.Topic == "harness/retained" })
		if string(got.Payload) != "kept" || !got.Retained {
			t.Errorf("after restart got payload %q retained %v, want %q retained true", got.Payload, got.Retained, "kept")
		}
	}
}

// With users configured, an anonymous client and a wrong password are
// refused and a user with the right password is let in.
func TestNATSUsers(t *testing.T) {
	n := StartNATS(t, WithNATSUser("publisher", "pub-secret"), WithNATSUser("subscriber", "sub-secret"))
	connect := func(user, password string) error {
		opts := mqtt.NewClientOptions().AddBroker(n.URL()).SetClientID("harness-auth-" + user).
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false)
		if user != "" {
			opts.SetUsername(user).SetPassword(password)
		}
		c := mqtt.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return os.ErrDeadlineExceeded
		}
		if tok.Error() == nil {
			c.Disconnect(100)
		}
		return tok.Error()
	}
	for _, tc := range []struct {
		user, password string
		ok             bool
	}{{"", "", false}, {"publisher", "wrong", false}, {"publisher", "pub-secret", true}, {"subscriber", "sub-secret", true}} {
		if err := connect(tc.user, tc.password); (err == nil) != tc.ok {
			t.Errorf("connect as %q/%q: %v, want success %v", tc.user, tc.password, err, tc.ok)
		}
	}
}

// In a cluster of three, killing the leader of the MQTT messages stream
// moves the leadership to another node; the retained message and a QoS 1
// message queued for a persistent session survive, and the killed node
// comes back into the cluster.
func TestNATSClusterKillStreamLeader(t *testing.T) {
	c := StartNATSCluster(t, 3)
	sub := persistentClient(t, c.Nodes[0].URL(), "harness-sub")
	if tok := sub.Subscribe("cluster/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	sub.Disconnect(100)

	pub := Client(t, c.Nodes[1].URL(), "harness-pub", true)
	Publish(t, pub, "cluster/retained", 1, true, []byte("kept"))
	Publish(t, pub, "cluster/queued", 1, false, []byte("waiting"))
	pub.Disconnect(100)

	leader := c.StreamLeader(t, NATSMessagesStream)
	meta := c.MetaLeader(t)
	t.Logf("stream leader %s, meta leader %s; killing the stream leader", leader.Name(), meta.Name())
	leader.Kill()
	next := c.StreamLeader(t, NATSMessagesStream)
	if next == leader {
		t.Fatalf("stream leader still %s after it was killed", leader.Name())
	}
	t.Logf("new stream leader %s", next.Name())
	c.WaitReady(t, 30*time.Second)

	var other *NATS
	for _, n := range c.Nodes {
		if n != leader {
			other = n
			break
		}
	}
	// Right after a leader moved, creating a subscription's consumer can take
	// longer than Watch allows.
	retained := make(chan mqtt.Message, 10)
	w := mqtt.NewClient(persistentOptions(other.URL(), "harness-watch").SetCleanSession(true))
	if tok := w.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher connect to %s: %v", other.Name(), tok.Error())
	}
	defer w.Disconnect(100)
	// A subscription right after the kill has been seen to get no retained
	// message at all (1 run in 3; see NATS-NOTES); subscribing again gets it.
	// What this test holds the cluster to is that the message survived.
	// A refused subscription (SUBACK 0x80) says the cluster is not ready
	// yet: that is tried again for up to a minute (a loaded machine slows
	// the elections); a granted one must bring the message.
	var got mqtt.Message
	deadline := time.Now().Add(time.Minute)
	for try, granted := 1, 0; got == nil && granted < 3 && time.Now().Before(deadline); try++ {
		tok := w.Subscribe("cluster/retained", 1, func(_ mqtt.Client, m mqtt.Message) { retained <- m })
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("watcher subscribe on %s: %v", other.Name(), tok.Error())
		}
		if code := tok.(*mqtt.SubscribeToken).Result()["cluster/retained"]; code == 0x80 {
			t.Logf("subscription %d after the kill: refused (SUBACK 80)", try)
			time.Sleep(2 * time.Second)
			continue
		}
		granted++
		select {
		case got = <-retained:
		case <-time.After(5 * time.Second):
			t.Logf("subscription %d after the kill: no retained message within 5s", try)
			if tok := w.Unsubscribe("cluster/retained"); !tok.WaitTimeout(20 * time.Second) {
				t.Fatalf("watcher unsubscribe: %v", tok.Error())
			}
		}
	}
	if got == nil {
		t.Fatalf("the retained message did not survive the kill of the stream leader")
	}
	if string(got.Payload()) != "kept" || !got.Retained() {
		t.Errorf("retained after the kill: %q retained %v, want kept, retained", got.Payload(), got.Retained())
	}

	arrived := make(chan string, 10)
	opts := persistentOptions(other.URL(), "harness-sub").SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		arrived <- string(m.Payload())
	})
	back := mqtt.NewClient(opts)
	if tok := back.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("reconnect the persistent session on %s: %v", other.Name(), tok.Error())
	}
	defer back.Disconnect(100)
	// Both publishes were queued for the session: the retained one too, as an
	// ordinary message.
	var got2 []string
	for len(got2) < 2 {
		select {
		case p := <-arrived:
			got2 = append(got2, p)
		case <-time.After(15 * time.Second):
			t.Fatalf("messages queued for the session after the stream leader was killed: %q, want kept and waiting", got2)
		}
	}
	if strings.Join(got2, ",") != "kept,waiting" {
		t.Errorf("queued messages %q, want kept, waiting", got2)
	}

	leader.Start()
	c.WaitReady(t, 60*time.Second)
}

func persistentOptions(url, id string) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
}

func persistentClient(tb testing.TB, url, id string) mqtt.Client {
	tb.Helper()
	c := mqtt.NewClient(persistentOptions(url, id))
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		tb.Fatalf("connect %s as %s: %v", url, id, tok.Error())
	}
	return c
}
