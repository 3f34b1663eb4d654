package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// NATSVersion is the nats-server release the tests build and run.
//
// v2.15.3 is the newest patch of the newest stable line (2.15) that the Go
// module proxy serves (released 2026-11-11; no -RC or -preview suffix). The
// contract promises NATS 2.10 or later; QoS 2 in the MQTT gateway needs 2.10.
// The newest line is the one a new deployment gets (the `nats:2.15` image),
// and its MQTT gateway differs in ways the services can see from the older
// lines: 2.15 pipelines PUBACK/PUBREC/PUBCOMP (mqtt.go, mqttAckPipeline) and
// no longer resets a session's packet-id counter when nothing is pending,
// which 2.12 and earlier do. Another release can be tried without editing
// this file: NATS_SERVER_VERSION=v2.10.29 go test ...
const NATSVersion = "v2.15.3"

// NATSConfTemplate is the server configuration every NATS node of the tests
// is rendered from, relative to the repository's root; a compose profile
// renders the same file.
const NATSConfTemplate = "deploy/nats/nats.conf.tmpl"

// The streams NATS's MQTT gateway keeps its state in, per account.
const (
	NATSMessagesStream = "$MQTT_msgs"   // QoS 1 and 2 messages, one consumer per subscription
	NATSSessionsStream = "$MQTT_sess"   // session records
	NATSRetainedStream = "$MQTT_rmsgs"  // retained messages
	NATSQoS2InStream   = "$MQTT_qos2in" // incoming QoS 2 messages between PUBREC and PUBREL
	NATSOutStream      = "$MQTT_out"    // outgoing PUBRELs
)

func natsVersion() string {
	if v := os.Getenv("NATS_SERVER_VERSION"); v != "" {
		return v
	}
	return NATSVersion
}

type natsBuild struct {
	once sync.Once
	path string
	err  error
}

var natsBuilds sync.Map // version: *natsBuild

// NATSServer returns the path of a nats-server binary of NATSVersion (or
// NATS_SERVER_VERSION), built with `go install` from the Go module proxy the
// first time on this machine and cached under the user's cache directory
// ($XDG_CACHE_HOME or ~/.cache, then mqtt-stack/nats-server/<version>).
// Test processes that build at once take turns on a file lock; the binary
// appears under its final name only once complete. A failed build fails the
// test in CI (CI=true) and skips it elsewhere.
func NATSServer(tb testing.TB) string {
	tb.Helper()
	v := natsVersion()
	b, _ := natsBuilds.LoadOrStore(v, &natsBuild{})
	nb := b.(*natsBuild)
	nb.once.Do(func() {
		start := time.Now()
		var built bool
		nb.path, built, nb.err = buildNATS(v)
		if built {
			tb.Logf("built nats-server %s in %v (cached at %s)", v, time.Since(start).Round(time.Millisecond), nb.path)
		}
	})
	if nb.err != nil {
		Missing(tb, fmt.Sprintf("nats-server %s: %v", v, nb.err))
	}
	return nb.path
}

// natsCacheDir is where the binary of version is kept.
func natsCacheDir(version string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find the user cache directory: %w", err)
	}
	return filepath.Join(base, "mqtt-stack", "nats-server", version), nil
}

// buildNATS returns the cached binary of version, building it first if it
// is not there yet; built says whether this call built it.
func buildNATS(version string) (path string, built bool, err error) {
	dir, err := natsCacheDir(version)
	if err != nil {
		return "", false, err
	}
	bin := filepath.Join(dir, "nats-server")
	if ok, err := natsBinaryIs(bin, version); ok || err != nil {
		return bin, false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("create %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", false, fmt.Errorf("open build lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", false, fmt.Errorf("take build lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	// Another process may have built it while this one waited for the lock.
	if ok, err := natsBinaryIs(bin, version); ok || err != nil {
		return bin, false, err
	}

	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", false, fmt.Errorf("create build directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/nats-io/nats-server/v2@"+version)
	// Outside any module or workspace, so that nothing of this repository's
	// go.mod or go.work takes part; GOBIN in the temporary directory, so the
	// binary is renamed into place only once it is whole.
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOWORK=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("go install github.com/nats-io/nats-server/v2@%s: %w\n%s", version, err, tail(out, 2048))
	}
	if err := os.Rename(filepath.Join(tmp, "nats-server"), bin); err != nil {
		return "", false, fmt.Errorf("move nats-server into the cache: %w", err)
	}
	if ok, err := natsBinaryIs(bin, version); !ok {
		return "", false, fmt.Errorf("built %s is not nats-server %s (%v)", bin, version, err)
	}
	return bin, true, nil
}

// natsBinaryIs reports whether bin exists and says it is version. A missing
// file is no error.
func natsBinaryIs(bin, version string) (bool, error) {
	if _, err := os.Stat(bin); err != nil {
		if os.IsNotExist(err) {
			return false, nil
		}
		return false, err
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("%s --version: %w: %s", bin, err, out)
	}
	return strings.TrimSpace(string(out)) == "nats-server: "+version, nil
}

// NATSUser is a user clients log in as (MQTT_USERNAME, MQTT_PASSWORD).
type NATSUser struct {
	Name     string
	Password string
}

// NATSConf is what NATSConfTemplate is rendered with: one node's
// configuration.
type NATSConf struct {
	Name        string // server_name, unique in a cluster
	Host        string // the address every listener binds
	ClientPort  int    // NATS clients
	MQTTPort    int    // MQTT clients
	HTTPPort    int    // monitoring: /healthz, /jsz, /connz
	ClusterPort int    // routes between the nodes of a cluster
	ClusterName string
	Routes      []string // nats-route://host:port of every node; none for a single node

	StoreDir       string // JetStream's files
	MaxMemoryStore string // e.g. 256MB
	MaxFileStore   string // e.g. 2GB
	LogFile        string // empty logs to stdout
	Trace          bool   // log every protocol operation

	Users          []NATSUser
	UsersInclude   string        // a file of users to include instead, relative to the configuration's directory
	StreamReplicas int           // mqtt stream_replicas; 0 leaves the server's choice
	AckWait        time.Duration // mqtt ack_wait; 0 leaves the server's 30s
	MaxAckPending  int           // mqtt max_ack_pending; 0 leaves the server's 1024
	JSAPITimeout   time.Duration // mqtt js_api_timeout; 0 leaves the server's 5s
	MQTTExtra      []string      // more lines inside mqtt {}
	Extra          []string      // more top-level lines

	usersFile string // copied to UsersInclude in the node's directory
}

// Render fills the template at path (NATSConfTemplate under the
// repository's root) with c.
func (c NATSConf) Render(path string) ([]byte, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nats config template: %w", err)
	}
	t, err := template.New(filepath.Base(path)).Option("missingkey=error").Funcs(template.FuncMap{
		// A double-quoted string of the NATS configuration format, whose
		// escapes are Go's.
		"quote": func(v any) string { return strconv.Quote(fmt.Sprint(v)) },
	}).Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	var out bytes.Buffer
	if err := t.Execute(&out, c); err != nil {
		return nil, fmt.Errorf("render %s: %w", path, err)
	}
	return out.Bytes(), nil
}

// NATSOption changes the configuration NATS nodes are started with.
type NATSOption func(*NATSConf)

// WithNATSUser adds a user; once there is one, anonymous clients are refused.
func WithNATSUser(name, password string) NATSOption {
	return func(c *NATSConf) { c.Users = append(c.Users, NATSUser{Name: name, Password: password}) }
}

// WithNATSUsersFile has every node include the users of file (as
// deploy/nats/init-auth.sh writes it for the compose profile nats) instead
// of listing users itself.
func WithNATSUsersFile(file string) NATSOption {
	return func(c *NATSConf) { c.UsersInclude, c.usersFile = "auth/users.conf", file }
}

// WithMQTTAckWait sets the MQTT gateway's ack_wait: how long a delivered QoS
// 1 or 2 message (or PUBREL) waits for its acknowledgement before the server
// sends it again to a connected client.
func WithMQTTAckWait(d time.Duration) NATSOption {
	return func(c *NATSConf) { c.AckWait = d }
}

// WithMQTTJSAPITimeout sets the MQTT gateway's js_api_timeout: how long it
// waits for JetStream on a client's behalf (a CONNECT, a QoS 1 or 2
// store) before it gives up and closes the connection.
func WithMQTTJSAPITimeout(d time.Duration) NATSOption {
	return func(c *NATSConf) { c.JSAPITimeout = d }
}

// WithMQTTMaxAckPending sets the MQTT gateway's max_ack_pending: QoS 1 and 2
// messages in flight toward one subscription.
func WithMQTTMaxAckPending(n int) NATSOption {
	return func(c *NATSConf) { c.MaxAckPending = n }
}

// WithMQTTConfig adds lines inside the mqtt block.
func WithMQTTConfig(lines ...string) NATSOption {
	return func(c *NATSConf) { c.MQTTExtra = append(c.MQTTExtra, lines...) }
}

// WithNATSConfig adds top-level lines to the configuration.
func WithNATSConfig(lines ...string) NATSOption {
	return func(c *NATSConf) { c.Extra = append(c.Extra, lines...) }
}

// WithNATSTrace logs every protocol operation, MQTT packets with their
// packet ids and flags included, into the node's log.
func WithNATSTrace() NATSOption {
	return func(c *NATSConf) { c.Trace = true }
}

// NATS is one nats-server process of the test's own: JetStream with its
// files in a temporary directory and the MQTT gateway, on free loopback
// ports. It survives Stop and Kill so that a test can start it again with
// the same ports and the same store.
type NATS struct {
	tb   testing.TB
	bin  string
	conf NATSConf
	dir  string
	path string // the rendered configuration

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartNATS starts a single node and waits until it is healthy (JetStream
// included). Anonymous clients are allowed unless WithNATSUser is given.
func StartNATS(tb testing.TB, opts ...NATSOption) *NATS {
	tb.Helper()
	n := newNATS(tb, natsConf(tb, "nats-1"), opts)
	n.Start()
	n.WaitHealthy(tb, 30*time.Second)
	return n
}

// natsConf is a node's configuration before options: free loopback ports,
// small JetStream limits, a log file.
func natsConf(tb testing.TB, name string) NATSConf {
	tb.Helper()
	return NATSConf{
		Name:           name,
		Host:           "127.0.0.1",
		ClientPort:     FreePort(tb),
		MQTTPort:       FreePort(tb),
		HTTPPort:       FreePort(tb),
		MaxMemoryStore: "256MB",
		MaxFileStore:   "2GB",
	}
}

func newNATS(tb testing.TB, conf NATSConf, opts []NATSOption) *NATS {
	tb.Helper()
	bin := NATSServer(tb)
	for _, o := range opts {
		o(&conf)
	}
	dir := tb.TempDir()
	conf.StoreDir = filepath.Join(dir, "jetstream")
	conf.LogFile = filepath.Join(dir, "nats.log")
	text, err := conf.Render(filepath.Join(RepoRoot(tb), NATSConfTemplate))
	if err != nil {
		tb.Fatalf("%v", err)
	}
	n := &NATS{tb: tb, bin: bin, conf: conf, dir: dir, path: filepath.Join(dir, "nats.conf")}
	if err := os.WriteFile(n.path, text, 0o600); err != nil {
		tb.Fatalf("write nats.conf: %v", err)
	}
	if conf.usersFile != "" {
		users, err := os.ReadFile(conf.usersFile)
		if err == nil {
			dst := filepath.Join(dir, conf.UsersInclude)
			if err = os.MkdirAll(filepath.Dir(dst), 0o700); err == nil {
				err = os.WriteFile(dst, users, 0o600)
			}
		}
		if err != nil {
			tb.Fatalf("copy the users file: %v", err)
		}
	}
	tb.Cleanup(func() {
		n.signal(syscall.SIGCONT)
		n.stop(syscall.SIGKILL)
		if tb.Failed() {
			if log, err := os.ReadFile(n.LogPath()); err == nil {
				tb.Logf("%s log (last 4 KiB):\n%s", conf.Name, tail(log, 4096))
			}
			if out, err := os.ReadFile(n.outPath()); err == nil && len(out) > 0 {
				tb.Logf("%s output:\n%s", conf.Name, tail(out, 2048))
			}
		}
	})
	return n
}

// URL is the MQTT gateway's address as MQTT_BROKER takes it.
func (n *NATS) URL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", n.conf.MQTTPort) }

// Addr is the MQTT gateway's host:port.
func (n *NATS) Addr() string { return fmt.Sprintf("127.0.0.1:%d", n.conf.MQTTPort) }

// Port is the MQTT gateway's port.
func (n *NATS) Port() int { return n.conf.MQTTPort }

// ClientURL is the NATS protocol's address (nats://).
func (n *NATS) ClientURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.conf.ClientPort) }

// MonitorURL is the monitoring endpoint's base URL (/healthz, /jsz, /connz).
func (n *NATS) MonitorURL() string { return fmt.Sprintf("http://127.0.0.1:%d", n.conf.HTTPPort) }

// Name is the node's server_name, as stream and meta leaders are named.
func (n *NATS) Name() string { return n.conf.Name }

// Conf is the configuration the node was rendered from.
func (n *NATS) Conf() NATSConf { return n.conf }

// Dir holds the configuration, the log and the JetStream store.
func (n *NATS) Dir() string { return n.dir }

// ConfPath is the rendered configuration file.
func (n *NATS) ConfPath() string { return n.path }

// LogPath is the server's log file.
func (n *NATS) LogPath() string { return n.conf.LogFile }

func (n *NATS) outPath() string { return filepath.Join(n.dir, "nats.out") }

// Running reports whether the process is up (started and not exited).
func (n *NATS) Running() bool {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Start starts the node (again) and waits until its monitoring and MQTT
// ports accept connections. A node of a cluster may not serve MQTT
// clients until JetStream has a quorum: wait with WaitHealthy or the
// cluster's WaitReady.
func (n *NATS) Start() {
	n.tb.Helper()
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		n.tb.Fatalf("%s already running", n.conf.Name)
	}
	out, err := os.OpenFile(n.outPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.mu.Unlock()
		n.tb.Fatalf("open %s: %v", n.outPath(), err)
	}
	cmd := exec.Command(n.bin, "-c", n.path)
	cmd.Dir = n.dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		out.Close()
		n.tb.Fatalf("start nats-server: %v", err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(done)
	}()
	up := Eventually(15*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		return waitTCP(fmt.Sprintf("127.0.0.1:%d", n.conf.HTTPPort), 0) && waitTCP(n.Addr(), 0)
	})
	select {
	case <-done:
		up = false
	default:
	}
	if !up {
		log, _ := os.ReadFile(n.LogPath())
		o, _ := os.ReadFile(n.outPath())
		n.tb.Fatalf("%s did not listen on %s:\n%s\n%s", n.conf.Name, n.Addr(), tail(log, 2048), tail(o, 1024))
	}
}

// Healthy reports whether GET /healthz answers 200: the server runs and
// JetStream is current (in a cluster: it has a meta leader and its streams
// and consumers caught up).
func (n *NATS) Healthy() bool {
	resp, err := monitorClient.Get(n.MonitorURL() + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// WaitHealthy waits up to d for Healthy.
func (n *NATS) WaitHealthy(tb testing.TB, d time.Duration) {
	tb.Helper()
	if !poll(d, n.Healthy) {
		log, _ := os.ReadFile(n.LogPath())
		tb.Fatalf("%s not healthy within %v:\n%s", n.conf.Name, d, tail(log, 2048))
	}
}

// poll is Eventually at a pace that keeps a node's log readable: every
// failed /healthz is a warning line in it.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Reconfigure applies opts to the node's configuration, writes it and
// has the running server reload it (SIGHUP); settings the server does not
// reload take effect at the next Start.
func (n *NATS) Reconfigure(tb testing.TB, opts ...NATSOption) {
	tb.Helper()
	for _, o := range opts {
		o(&n.conf)
	}
	text, err := n.conf.Render(filepath.Join(RepoRoot(tb), NATSConfTemplate))
	if err != nil {
		tb.Fatalf("%v", err)
	}
	if err := os.WriteFile(n.path, text, 0o600); err != nil {
		tb.Fatalf("write nats.conf: %v", err)
	}
	n.signal(syscall.SIGHUP)
}

// Stop sends SIGTERM and waits for the exit (at most 30s, then SIGKILL).
func (n *NATS) Stop() { n.tb.Helper(); n.stop(syscall.SIGTERM) }

// Kill sends SIGKILL and waits for the exit.
func (n *NATS) Kill() { n.tb.Helper(); n.stop(syscall.SIGKILL) }

// Pause stops the process (SIGSTOP): connections stay open but nothing is
// read, routed or acknowledged.
func (n *NATS) Pause() { n.signal(syscall.SIGSTOP) }

// Resume continues a paused node (SIGCONT).
func (n *NATS) Resume() { n.signal(syscall.SIGCONT) }

func (n *NATS) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

func (n *NATS) stop(sig syscall.Signal) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
