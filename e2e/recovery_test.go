package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// watchReady polls /readyz every few milliseconds until the test ends and
// counts the answers that were not 200.
func watchReady(t *testing.T, s *harness.Service) *atomic.Int32 {
	t.Helper()
	var notReady atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if s.Status("/readyz") != 200 {
				notReady.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &notReady
}

// publishAll publishes n messages on topic with payload (identical ones
// when payload is not empty, else numbered) and returns the payloads
// answered 200.
func publishAll(t *testing.T, pub *harness.Service, topic, payload string, n int) []string {
	t.Helper()
	var acked []string
	for i := range n {
		p := payload
		if p == "" {
			p = fmt.Sprintf("%s-%04d", topic, i)
		}
		r := harness.PostJSON(t, pub.URL()+"/publish", publishBody(t, topic, p, 1+i%2))
		if r.Status == 200 {
			acked = append(acked, p)
		}
	}
	return acked
}

// The SQLite file is deleted, or replaced by another database, under the
// running subscriber: /readyz says so, the subscriber opens the path again,
// and every message published from then on is stored there once.
func TestStoreFileDeletedOrReplaced(t *testing.T) {
	for _, how := range []string{"deleted", "replaced"} {
		t.Run(how, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "messages.db")
			_, sub, pub := startStack(t, map[string]string{"DATABASE_URL": "sqlite:" + path, "MQTT_TOPICS": "gone/#"})
			before := publishAll(t, pub, "gone/before", "", 50)
			waitStored(t, sub, "gone/#", len(before), 10*time.Second)
			notReady := watchReady(t, sub)

			for _, f := range []string{path, path + "-wal", path + "-shm"} {
				if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
					t.Fatalf("remove %s: %v", f, err)
				}
			}
			if how == "replaced" {
				other := filepath.Join(t.TempDir(), "other.db")
				if err := os.WriteFile(other, nil, 0o600); err != nil {
					t.Fatalf("create the replacement: %v", err)
				}
				if err := os.Rename(other, path); err != nil {
					t.Fatalf("replace: %v", err)
				}
			}
			// The next commit, or the next readiness check, notices.
			during := publishAll(t, pub, "gone/during", "", 200)
			if !harness.Eventually(10*time.Second, func() bool { return notReady.Load() > 0 }) {
				t.Errorf("/readyz never answered 503 after the file was %s", how)
			}
			sub.WaitReady(t, 10*time.Second)
			after := publishAll(t, pub, "gone/after", "", 50)

			var rows []stored
			count := map[string]int{}
			harness.Eventually(20*time.Second, func() bool {
				rows = listAll(t, sub, "gone/#")
				clear(count)
				for _, r := range rows {
					count[r.Payload]++
				}
				for _, p := range after {
					if count[p] == 0 {
						return false
					}
				}
				return true
			})
			for _, p := range after {
				if count[p] != 1 {
					t.Errorf("%s acknowledged after the file came back is stored %d times, want once", p, count[p])
				}
			}
			missing := 0
			for _, p := range during {
				if count[p] == 0 {
					missing++
				}
			}
			for p, n := range count {
				if n > 1 {
					t.Errorf("%s stored %d times", p, n)
				}
			}
			t.Logf("file %s: %d acknowledged while it went, %d of them not in the new file (committed into the old one before it went), %d after, %d answers of /readyz not 200",
				how, len(during), missing, len(after), notReady.Load())
			if _, err := os.Stat(path); err != nil {
				t.Errorf("no database at %s: %v", path, err)
			}
		})
	}
}

// The PostgreSQL database is dropped and created again under the running
// subscriber: /readyz answers 503 while it is gone, nothing is
// acknowledged that was not committed, and once it is back (empty) every
// message published since the drop is stored there once.
func TestStoreDatabaseDroppedAndCreatedAgain(t *testing.T) {
	db := harness.Postgres(t)
	_, sub, pub := startStack(t, map[string]string{"DATABASE_URL": db, "MQTT_TOPICS": "drop/#"})
	before := publishAll(t, pub, "drop/before", "", 20)
	waitStored(t, sub, "drop/#", len(before), 10*time.Second)

	u, err := url.Parse(db)
	if err != nil {
		t.Fatalf("parse %s: %v", db, err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, harness.PostgresAdmin())
	if err != nil {
		t.Fatalf("connect admin: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
		t.Fatalf("drop: %v", err)
	}
	during := publishAll(t, pub, "drop/during", "", 100)
	if !harness.Eventually(10*time.Second, func() bool { return sub.Status("/readyz") == 503 }) {
		t.Errorf("/readyz did not answer 503 while the database was gone")
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create: %v", err)
	}
	sub.WaitReady(t, 20*time.Second)
	after := publishAll(t, pub, "drop/after", "", 20)

	want := append(append([]string{}, during...), after...)
	rows := waitStored(t, sub, "drop/#", len(want), 20*time.Second)
	count := map[string]int{}
	for _, r := range rows {
		count[r.Payload]++
	}
	for _, p := range want {
		if count[p] != 1 {
			t.Errorf("%s stored %d times, want once", p, count[p])
		}
	}
	if len(rows) != len(want) {
		t.Errorf("%d rows in the new database, want %d (those published since the drop)", len(rows), len(want))
	}
	t.Logf("database dropped: %d acknowledged while it was gone, %d after; %d rows in the new database", len(during), len(after), len(rows))
}

// The broker loses the subscriber's session twice (another client connects
// with its client id and a clean session while it is stopped): each time
// the subscriber starts a new session, and identical messages published in
// each session are stored, every one, none flagged.
func TestSessionLostTwice(t *testing.T) {
	b := harness.StartBroker(t)
	id := clientID(t, "sub")
	sub := startSubscriber(t, b, map[string]string{"MQTT_CLIENT_ID": id, "MQTT_TOPICS": "lost/#"})
	pub := startPublisher(t, b, nil)
	sub.WaitReady(t, 10*time.Second)
	pub.WaitReady(t, 10*time.Second)

	total := 0
	for run := range 3 {
		if run > 0 {
			if code := sub.Stop(); code != 0 {
				t.Fatalf("subscriber exited %d on SIGTERM", code)
			}
			// A clean session with the same client id makes the broker
			// drop the stored one.
			c := harness.Client(t, b.URL(), id, true)
			c.Disconnect(100)
			sub.Restart()
			sub.WaitReady(t, 10*time.Second)
			sub.WaitLog(t, 10*time.Second, func(l map[string]any) bool {
				return l["msg"] == "broker session" && l["session_present"] == false && l["connection"] != float64(1)
			})
		}
		acked := publishAll(t, pub, "lost/same", "21.5", 100)
		total += len(acked)
		rows := waitStored(t, sub, "lost/#", total, 20*time.Second)
		flagged := 0
		for _, r := range rows {
			if r.Duplicate {
				flagged++
			}
		}
		t.Logf("session %d: %d acknowledged, %d rows in all, %d flagged", run+1, len(acked), len(rows), flagged)
		if len(rows) != total || flagged != 0 {
			t.Errorf("session %d: %d rows, %d flagged; want %d and 0", run+1, len(rows), flagged, total)
		}
	}
}
