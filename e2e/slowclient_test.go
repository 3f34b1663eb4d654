package e2e

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// A client that never finishes its request headers is cut off by the server
// (ReadHeaderTimeout) instead of holding a connection open forever.
func TestSlowClientIsCutOff(t *testing.T) {
	b := harness.StartBroker(t)
	services := map[string]*harness.Service{
		"publisher":  startPublisher(t, b, nil),
		"subscriber": startSubscriber(t, b, nil),
	}
	for name, s := range services {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", s.Addr())
			if err != nil {
				t.Fatalf("dial %s: %v", s.Addr(), err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: app"); err != nil {
				t.Fatalf("write: %v", err)
			}
			start := time.Now()
			if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
				t.Fatalf("set deadline: %v", err)
			}
			_, err = io.ReadAll(c)
			took := time.Since(start)
			t.Logf("%s closed a stalled request after %v", name, took)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("%s still held the stalled connection after %v", name, took)
			}
		})
	}
}
