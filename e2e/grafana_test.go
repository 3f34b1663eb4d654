package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// TestGrafanaValuesDashboardQueries runs every query of the provisioned
// dashboard "Stored values" (its panels and its variables), with Grafana's
// macros expanded, against a database the subscriber made and filled, as
// the read-only login that deploy/postgres/grafana-reader.sh creates: a
// table or column renamed in the schema, or a privilege missing, would
// leave a panel empty. The login may not write.
func TestGrafanaValuesDashboardQueries(t *testing.T) {
	root := harness.RepoRoot(t)
	script, err := os.ReadFile(filepath.Join(root, "deploy", "postgres", "grafana-reader.sh"))
	if err != nil {
		t.Fatalf("read the init script: %v", err)
	}
	m := regexp.MustCompile(`(?s)<<'SQL'\n(.*)\nSQL\n`).FindSubmatch(script)
	if m == nil {
		t.Fatal("no SQL here-document in grafana-reader.sh")
	}
	ctx := context.Background()
	// Roles belong to the whole server: this test's has a name of its own,
	// dropped after the database (registered first, it runs last).
	role := fmt.Sprintf("grafana_reader_e2e_%d", os.Getpid())
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, harness.PostgresAdmin())
		if err != nil {
			t.Errorf("drop role: %v", err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP ROLE IF EXISTS "+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	db := harness.Postgres(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	init := strings.NewReplacer("grafana_reader", role, "DATABASE messages", "DATABASE "+dbName, ":'password'", "'e2e'").Replace(string(m[1]))
	admin, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if _, err := admin.Exec(ctx, init); err != nil {
		admin.Close(ctx)
		t.Fatalf("run the init script's SQL: %v", err)
	}
	admin.Close(ctx)

	// The subscriber makes its tables after the script, as in the stack.
	b := harness.StartBroker(t)
	sub := startSubscriber(t, b, map[string]string{"DATABASE_URL": db, "MQTT_QOS": "1"})
	sub.WaitReady(t, 15*time.Second)
	pub := subscriberPublisher(t, b)
	pub("living/room1/temperature", 1, []byte("21.5"))
	pub("devices/7/env", 1, []byte(`{"temp": 22.4, "env": {"hum": 41}}`))
	pub("living/room1/status", 1, []byte("ok"))
	waitStored(t, sub, "#", 3, 10*time.Second)

	u.User = url.UserPassword(role, "e2e")
	reader, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	defer reader.Close(ctx)

	dash, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "dashboards", "values.json"))
	if err != nil {
		t.Fatalf("read the dashboard: %v", err)
	}
	var d struct {
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RawSQL string `json:"rawSql"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("parse the dashboard: %v", err)
	}
	// Grafana's macros and variables as Grafana expands them for a day's
	// range and every value.
	expand := strings.NewReplacer(
		"$__timeGroupAlias(u.at, $__interval)", `floor(extract(epoch from u.at)/60)*60 AS "time"`,
		"$__timeFilter(u.at)", "u.at BETWEEN now() - interval '1 day' AND now() + interval '1 minute'",
		"$__timeFrom()", "(now() - interval '1 day')",
		"$__timeTo()", "(now() + interval '1 minute')",
		"$topic", "'living/room1/temperature','devices/7/env','living/room1/status'",
		"$field", "'value','temp','env.hum'",
	)
	queries := map[string]string{}
	for _, v := range d.Templating.List {
		queries["variable "+v.Name] = v.Query
	}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			queries[fmt.Sprintf("panel %q query %d", p.Title, i)] = tg.RawSQL
		}
	}
	if len(queries) < 5 {
		t.Fatalf("%d queries in the dashboard, want its variables and panels", len(queries))
	}
	for name, q := range queries {
		sql := expand.Replace(q)
		if strings.Contains(sql, "$") {
			t.Errorf("%s: a macro or variable this test does not expand: %s", name, sql)
			continue
		}
		rows, err := reader.Query(ctx, sql)
		if err != nil {
			t.Errorf("%s: %v\n%s", name, err, sql)
			continue
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Err(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if n == 0 {
			t.Errorf("%s: no rows over stored readings\n%s", name, sql)
		}
	}
	if _, err := reader.Exec(ctx, "DELETE FROM messages"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("the reader deleted messages: %v, want permission denied", err)
	}
}
