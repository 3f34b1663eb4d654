package harness

import (
	"testing"
	"time"
)

// The broker keeps a retained message across a graceful restart: the tests
// that restart it rely on its persistence.
func TestBrokerRestartKeepsRetained(t *testing.T) {
	b := StartBroker(t)
	c := Client(t, b.URL(), "harness-pub", true)
	Publish(t, c, "harness/retained", 1, true, []byte("kept"))
	c.Disconnect(100)

	b.Stop()
	b.Start()

	w := Watch(t, b.URL(), "harness/#")
	got := w.WaitFor(t, 5*time.Second, func(m Message) bool { return m.Topic == "harness/retained" })
	if string(got.Payload) != "kept" || !got.Retained {
		t.Errorf("after restart got payload %q retained %v, want %q retained true", got.Payload, got.Retained, "kept")
	}
}

func TestPostgresDatabase(t *testing.T) {
	if url := Postgres(t); url == "" {
		t.Fatal("Postgres returned an empty URL")
	}
}
