package e2e

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// The compose profile nats runs three NATS nodes whose configuration files
// (deploy/nats/nats-<n>.conf) are deploy/nats/nats.conf.tmpl rendered with
// the values below: the template every NATS node of the tests is rendered
// from. After changing the template or these values:
//
//	cd e2e && go test -run TestComposeNATSConfigRendered -update-nats-conf .
var updateNATSConf = flag.Bool("update-nats-conf", false, "write deploy/nats/nats-<n>.conf from the template")

// composeNATSNodes are the NATS services of the profile nats.
var composeNATSNodes = []string{"nats-1", "nats-2", "nats-3"}

// composeNATSBrokers is MQTT_BROKER of the services of the profile nats.
func composeNATSBrokers() string {
	urls := make([]string, len(composeNATSNodes))
	for i, n := range composeNATSNodes {
		urls[i] = "tcp://" + n + ":1883"
	}
	return strings.Join(urls, ",")
}

// composeNATSConf is the configuration of one node of the profile.
func composeNATSConf(name string) harness.NATSConf {
	routes := make([]string, len(composeNATSNodes))
	for i, n := range composeNATSNodes {
		routes[i] = "nats-route://" + n + ":6222"
	}
	return harness.NATSConf{
		Name: name, Host: "0.0.0.0",
		ClientPort: 4222, MQTTPort: 1883, HTTPPort: 8222, ClusterPort: 6222,
		ClusterName: "mqtt", Routes: routes,
		StoreDir: "/data/jetstream", MaxMemoryStore: "256MB", MaxFileStore: "10GB",
		// deploy/nats/init-auth.sh writes it into the volume nats-auth,
		// mounted at /etc/nats/auth beside the configuration.
		UsersInclude: "auth/users.conf",
		// MQTT state (sessions, queues, retained messages) on all three.
		StreamReplicas: 3,
		// After a subscriber crash, NATS sends what it had not acknowledged
		// again only when ack_wait runs out, not at the reconnect; a commit
		// slower than this gets its messages again (acknowledged, not
		// stored twice). 10s: a pause of at most 10s after a crash, and
		// little redelivery while a store is briefly away.
		AckWait: 10 * time.Second,
		// While JetStream elects new leaders after a node is lost, a
		// CONNECT or a publish waits this long before the node gives up
		// and the client tries again (the tests run with the same value).
		JSAPITimeout: clusterJSAPITimeout,
	}
}

// TestComposeNATSConfigRendered checks that the profile's node
// configurations are what the template renders, that nats-server takes
// them with the users file deploy/nats/init-auth.sh writes, and that the
// compose file runs them as the tests do: the harness's version of the
// official image, each node's own file, the users file beside it.
func TestComposeNATSConfigRendered(t *testing.T) {
	root, _, cf := loadCompose(t)
	tmpl := filepath.Join(root, harness.NATSConfTemplate)
	users := natsUsersFile(t, map[string]string{"publisher": `pub"\#x`, "subscriber": "1234"})
	image := "nats:" + strings.TrimPrefix(harness.NATSVersion, "v") + "-alpine"
	for _, name := range composeNATSNodes {
		t.Run(name, func(t *testing.T) {
			want, err := composeNATSConf(name).Render(tmpl)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(root, "deploy", "nats", name+".conf")
			if *updateNATSConf {
				if err := os.WriteFile(file, want, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (write it with -update-nats-conf)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s is not what %s renders for it; run go test -run TestComposeNATSConfigRendered -update-nats-conf . in e2e/", file, harness.NATSConfTemplate)
			}

			// nats-server itself takes it, with the users file at the
			// path it includes.
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "auth"), 0o700); err != nil {
				t.Fatal(err)
			}
			for src, dst := range map[string]string{file: "nats.conf", users: "auth/users.conf"} {
				b, err := os.ReadFile(src)
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, dst), b, 0o600)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if out, err := exec.Command(harness.NATSServer(t), "-t", "-c", filepath.Join(dir, "nats.conf")).CombinedOutput(); err != nil {
				t.Errorf("nats-server -t refused %s: %v\n%s", file, err, out)
			}

			s, ok := cf.Services[name]
			if !ok {
				t.Fatalf("no service %s in docker-compose.yml", name)
			}
			if s.Image != image {
				t.Errorf("image %q, want %q (harness.NATSVersion)", s.Image, image)
			}
			if !slices.Equal(s.Profiles, []string{"nats"}) {
				t.Errorf("profiles %q, want [nats]", s.Profiles)
			}
			for _, v := range []string{
				"./deploy/nats/" + name + ".conf:/etc/nats/nats.conf:ro",
				"nats-auth:/etc/nats/auth:ro",
				name + "-data:/data",
			} {
				if !slices.Contains(s.Volumes, v) {
					t.Errorf("volumes %q lack %q", s.Volumes, v)
				}
			}
		})
	}
	init := cf.Services["nats-init"]
	for _, v := range []string{"./deploy/nats/init-auth.sh:/init-auth.sh:ro", "nats-auth:/auth"} {
		if !slices.Contains(init.Volumes, v) {
			t.Errorf("nats-init: volumes %q lack %q", init.Volumes, v)
		}
	}
	if init.Image != image || !init.oneShot() {
		t.Errorf("nats-init: image %q restart %q, want %q, restart no", init.Image, init.Restart, image)
	}
}

// The command of each node reads the mounted configuration.
func TestComposeNATSCommand(t *testing.T) {
	_, raw, _ := loadCompose(t)
	services := raw["services"].(map[string]any)
	for _, name := range composeNATSNodes {
		cmd := fmt.Sprint(services[name].(map[string]any)["command"])
		if cmd != "[nats-server --config /etc/nats/nats.conf]" {
			t.Errorf("%s: command %s, want nats-server --config /etc/nats/nats.conf", name, cmd)
		}
	}
}
