package harness

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

var monitorClient = &http.Client{Timeout: 2 * time.Second}

// NATSCluster is a cluster of NATS nodes of the test's own: routes between
// all of them, JetStream clustered, the MQTT gateway on every node with its
// streams replicated on up to three nodes (stream_replicas). Each node can
// be stopped, killed and started again.
type NATSCluster struct {
	tb    testing.TB
	Nodes []*NATS
}

// StartNATSCluster starts size nodes and waits until the cluster is ready
// (WaitReady).
func StartNATSCluster(tb testing.TB, size int, opts ...NATSOption) *NATSCluster {
	tb.Helper()
	if size < 1 {
		tb.Fatalf("a NATS cluster of %d nodes", size)
	}
	confs := make([]NATSConf, size)
	routes := make([]string, size)
	for i := range confs {
		confs[i] = natsConf(tb, fmt.Sprintf("nats-%d", i+1))
		confs[i].ClusterPort = FreePort(tb)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", confs[i].ClusterPort)
	}
	c := &NATSCluster{tb: tb}
	for i := range confs {
		confs[i].ClusterName = "mqtt"
		confs[i].Routes = routes
		confs[i].StreamReplicas = min(size, 3)
		c.Nodes = append(c.Nodes, newNATS(tb, confs[i], opts))
	}
	for _, n := range c.Nodes {
		n.Start()
	}
	c.WaitReady(tb, 60*time.Second)
	return c
}

// URL is every node's MQTT address, comma-separated, as MQTT_BROKER takes a
// list to fail over along.
func (c *NATSCluster) URL() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Node returns the node named name (a leader's name from StreamLeader or
// MetaLeader).
func (c *NATSCluster) Node(name string) *NATS {
	c.tb.Helper()
	for _, n := range c.Nodes {
		if n.Name() == name {
			return n
		}
	}
	c.tb.Fatalf("no NATS node named %q", name)
	return nil
}

func (c *NATSCluster) running() []*NATS {
	var up []*NATS
	for _, n := range c.Nodes {
		if n.Running() {
			up = append(up, n)
		}
	}
	return up
}

// WaitReady waits up to d until every running node is healthy, they agree
// on a JetStream meta leader that is running, each of them counts every
// node of the cluster as a peer, and every stream has a running leader
// (after a kill: a new one was elected).
func (c *NATSCluster) WaitReady(tb testing.TB, d time.Duration) {
	tb.Helper()
	var why string
	if !poll(d, func() bool {
		up := c.running()
		leader := ""
		for _, n := range up {
			if !n.Healthy() {
				why = n.Name() + " not healthy"
				return false
			}
			info, err := n.jsz("accounts=true&streams=true")
			if err != nil {
				why = err.Error()
				return false
			}
			for _, acc := range info.Accounts {
				for _, s := range acc.Streams {
					if s.Cluster == nil || !c.isRunning(s.Cluster.Leader) {
						why = fmt.Sprintf("%s: stream %s has no running leader", n.Name(), s.Name)
						return false
					}
				}
			}
			if info.Meta == nil || info.Meta.Leader == "" {
				why = n.Name() + " knows no meta leader"
				return false
			}
			if leader != "" && info.Meta.Leader != leader {
				why = fmt.Sprintf("meta leader is %s for one node, %s for %s", leader, info.Meta.Leader, n.Name())
				return false
			}
			leader = info.Meta.Leader
			if info.Meta.Size != len(c.Nodes) {
				why = fmt.Sprintf("%s sees a cluster of %d, want %d", n.Name(), info.Meta.Size, len(c.Nodes))
				return false
			}
		}
		for _, n := range up {
			if n.Name() == leader {
				return true
			}
		}
		why = "meta leader " + leader + " is not running"
		return false
	}) {
		tb.Fatalf("NATS cluster not ready within %v: %s", d, why)
	}
}

func (c *NATSCluster) isRunning(name string) bool {
	for _, n := range c.running() {
		if n.Name() == name {
			return true
		}
	}
	return false
}

// MetaLeader is the running node that leads JetStream's meta group.
func (c *NATSCluster) MetaLeader(tb testing.TB) *NATS {
	tb.Helper()
	c.WaitReady(tb, 30*time.Second)
	info, err := c.running()[0].jsz("")
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return c.Node(info.Meta.Leader)
}

// StreamLeader waits up to 30s until a running node reports a running
// leader of stream (NATSMessagesStream and its siblings exist once the first
// MQTT client has connected) and returns it.
func (c *NATSCluster) StreamLeader(tb testing.TB, stream string) *NATS {
	tb.Helper()
	var leader, why string
	if !poll(30*time.Second, func() bool {
		for _, n := range c.running() {
			info, err := n.jsz("accounts=true&streams=true")
			if err != nil {
				why = err.Error()
				continue
			}
			for _, acc := range info.Accounts {
				for _, s := range acc.Streams {
					if s.Name != stream {
						continue
					}
					if s.Cluster == nil || s.Cluster.Leader == "" {
						why = fmt.Sprintf("%s: stream %s has no leader", n.Name(), stream)
						continue
					}
					for _, r := range c.running() {
						if r.Name() == s.Cluster.Leader {
							leader = r.Name()
							return true
						}
					}
					why = fmt.Sprintf("%s: leader %s of %s is not running", n.Name(), s.Cluster.Leader, stream)
				}
			}
			if why == "" {
				why = fmt.Sprintf("%s: no stream %s", n.Name(), stream)
			}
		}
		return false
	}) {
		tb.Fatalf("no leader of stream %s within 30s: %s", stream, why)
	}
	return c.Node(leader)
}

// jszInfo is the part of GET /jsz these helpers read.
type jszInfo struct {
	Meta *struct {
		Leader string `json:"leader"`
		Size   int    `json:"cluster_size"`
	} `json:"meta_cluster"`
	Accounts []struct {
		Name    string `json:"name"`
		Streams []struct {
			Name    string `json:"name"`
			Cluster *struct {
				Leader   string `json:"leader"`
				Replicas []struct {
					Name    string `json:"name"`
					Current bool   `json:"current"`
				} `json:"replicas"`
			} `json:"cluster"`
			State struct {
				Messages  uint64 `json:"messages"`
				Consumers int    `json:"consumer_count"`
			} `json:"state"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

func (n *NATS) jsz(query string) (*jszInfo, error) {
	resp, err := monitorClient.Get(n.MonitorURL() + "/jsz?" + query)
	if err != nil {
		return nil, fmt.Errorf("%s /jsz: %w", n.Name(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s /jsz: status %d", n.Name(), resp.StatusCode)
	}
	var info jszInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, fmt.Errorf("%s /jsz: %w", n.Name(), err)
	}
	return &info, nil
}

// StreamMessages is the number of messages in stream as node n sees it, or
// -1 when n does not report it.
func (n *NATS) StreamMessages(tb testing.TB, stream string) int {
	tb.Helper()
	info, err := n.jsz("accounts=true&streams=true")
	if err != nil {
		tb.Fatalf("%v", err)
	}
	for _, acc := range info.Accounts {
		for _, s := range acc.Streams {
			if s.Name == stream {
				return int(s.State.Messages)
			}
		}
	}
	return -1
}

// NodeOf waits up to d until a running node holds an open MQTT connection
// of clientID and returns that node, or nil when none does within d.
func (c *NATSCluster) NodeOf(tb testing.TB, clientID string, d time.Duration) *NATS {
	tb.Helper()
	var found *NATS
	poll(d, func() bool {
		for _, n := range c.running() {
			if n.holds(clientID) {
				found = n
				return true
			}
		}
		return false
	})
	return found
}

// holds reports whether n has an open MQTT connection of clientID.
func (n *NATS) holds(clientID string) bool {
	resp, err := monitorClient.Get(n.MonitorURL() + "/connz?state=open&mqtt_client=" + url.QueryEscape(clientID))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var info struct {
		Conns int `json:"num_connections"`
	}
	return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&info) == nil && info.Conns > 0
}
