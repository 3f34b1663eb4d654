// Package harness runs the real things the end-to-end tests talk to: Mosquitto
// processes on free ports, the publisher and subscriber binaries built from
// this repository, MQTT watcher clients and throwaway PostgreSQL databases.
package harness

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Need returns the path of command name. When it is missing the test fails
// in CI (CI=true) and is skipped elsewhere.
func Need(tb testing.TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Missing(tb, fmt.Sprintf("%s not found in PATH", name))
	}
	return path
}

// Missing fails the test in CI and skips it elsewhere: in CI a missing
// dependency is a broken environment, not a reason to pass.
func Missing(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s (CI=true: required)", why)
	}
	tb.Skipf("%s", why)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// below the kernel's range of ephemeral ports: a port of that range can be
// taken between this call and the server's bind by the local end of any
// outgoing connection (a NATS node once failed to bind its MQTT port so).
func FreePort(tb testing.TB) int {
	tb.Helper()
	const low = 10000
	high, ok := ephemeralLow()
	for i := 0; ok && i < 100; i++ {
		p := low + rand.IntN(high-low)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // in use
		}
		ln.Close()
		return p
	}
	// No room below the ephemeral ports (or none found): one of them.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ephemeralLow is the first port the kernel hands out to sockets bound to
// port 0 and to outgoing connections, and whether it leaves room above
// 10000 for FreePort.
func ephemeralLow() (int, bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, false
	}
	n, err := strconv.Atoi(f[0])
	return n, err == nil && n > 11000
}

// RepoRoot is the directory holding go.work.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatalf("go.work not found above the test's directory")
		}
		dir = parent
	}
}

// Eventually polls cond every 20ms until it returns true or d passes.
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitTCP(addr string, d time.Duration) bool {
	return Eventually(d, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}
