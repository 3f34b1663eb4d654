package e2e

import (
	"bufio"
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// composeFile is the part of docker-compose.yml these tests read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       *composeBuild     `yaml:"build"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Expose      []string          `yaml:"expose"`
	Volumes     []string          `yaml:"volumes"`
	Healthcheck *struct {
		Test    []string `yaml:"test"`
		Disable bool     `yaml:"disable"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Restart  string   `yaml:"restart"`
	Profiles []string `yaml:"profiles"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

// module is the Go module (publisher or subscriber) a service is built from,
// or "" for a service that runs a public image.
func (s composeService) module() string {
	if s.Build == nil {
		return ""
	}
	if s.Build.Dockerfile != "" {
		return filepath.Base(filepath.Dir(filepath.Clean(filepath.Join(s.Build.Context, s.Build.Dockerfile))))
	}
	return filepath.Base(filepath.Clean(s.Build.Context))
}

// oneShot reports whether the service runs once and exits (it needs no
// health check and must not be restarted).
func (s composeService) oneShot() bool { return s.Restart == "no" }

func loadCompose(t *testing.T) (root string, raw map[string]any, cf composeFile) {
	t.Helper()
	root = harness.RepoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("read docker-compose.yml: %v", err)
	}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		t.Fatalf("parse docker-compose.yml: %v", err)
	}
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatalf("parse docker-compose.yml services: %v", err)
	}
	return root, raw, cf
}

// composeEnvVarsRead returns the environment variables a service reads: the
// envconfig tags (or, untagged, the upper-cased field names envconfig
// falls back to) of the fields of the structs in
// <module>/internal/config/*.go that have at least one envconfig tag, and
// of the structs of this repository that those embed (service.Common,
// which both services read).
func composeEnvVarsRead(t *testing.T, root, module string) map[string]bool {
	t.Helper()
	vars := map[string]bool{}
	composeEnvVarsOf(t, root, filepath.Join(root, module, "internal", "config"), "", vars)
	if len(vars) == 0 {
		t.Fatalf("no envconfig variables found in %s/internal/config", module)
	}
	return vars
}

// composeEnvVarsOf adds to vars the variables of the envconfig structs of
// the package in dir (only the struct typeName, unless it is "").
func composeEnvVarsOf(t *testing.T, root, dir, typeName string, vars map[string]bool) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s (err %v)", dir, err)
	}
	const modulePrefix = "github.com/telemetry-stack/mqtt-stack/"
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parse %s: %v", f, err)
		}
		imports := map[string]string{} // package name -> directory
		for _, imp := range file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if rel, ok := strings.CutPrefix(path, modulePrefix); ok {
				imports[filepath.Base(rel)] = filepath.Join(root, rel)
			}
		}
		ast.Inspect(file, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok || (typeName != "" && ts.Name.Name != typeName) {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			tags := make([]reflect.StructTag, len(st.Fields.List))
			configStruct := false
			for i, field := range st.Fields.List {
				if field.Tag == nil {
					continue
				}
				s, err := strconv.Unquote(field.Tag.Value)
				if err != nil {
					t.Fatalf("%s: bad struct tag %s", f, field.Tag.Value)
				}
				tags[i] = reflect.StructTag(s)
				if _, ok := tags[i].Lookup("envconfig"); ok {
					configStruct = true
				}
			}
			if !configStruct {
				return true // a struct envconfig does not fill
			}
			for i, field := range st.Fields.List {
				tag := tags[i]
				if tag.Get("ignored") == "true" {
					continue
				}
				if name, ok := tag.Lookup("envconfig"); ok {
					vars[name] = true
					continue
				}
				if sel, ok := field.Type.(*ast.SelectorExpr); ok && len(field.Names) == 0 {
					// Embedded: envconfig reads its fields without a prefix.
					if pkg, ok := sel.X.(*ast.Ident); ok && imports[pkg.Name] != "" {
						composeEnvVarsOf(t, root, imports[pkg.Name], sel.Sel.Name, vars)
						continue
					}
				}
				for _, id := range field.Names {
					if id.IsExported() {
						vars[strings.ToUpper(id.Name)] = true
					}
				}
			}
			return true
		})
	}
}

// httpPort is the port of a service's HTTP_ADDR (":8080" -> "8080").
func composeHTTPPort(t *testing.T, name string, s composeService) string {
	t.Helper()
	addr, ok := s.Environment["HTTP_ADDR"]
	if !ok {
		t.Fatalf("service %s: no HTTP_ADDR in its environment", name)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("service %s: HTTP_ADDR %q: %v", name, addr, err)
	}
	return port
}

// containerPort is the container side of a compose port mapping:
// "127.0.0.1:${P:-8080}:8080/tcp" -> "8080".
func composeContainerPort(mapping string) string {
	i := strings.LastIndex(mapping, ":")
	p := mapping[i+1:]
	p, _, _ = strings.Cut(p, "/")
	return p
}

// brokerHosts are the host names of a service's MQTT_BROKER list
// ("tcp://nats-1:1883,tcp://nats-2:1883" -> nats-1, nats-2).
func (s composeService) brokerHosts(t *testing.T) []string {
	t.Helper()
	var hosts []string
	for u := range strings.SplitSeq(s.Environment["MQTT_BROKER"], ",") {
		parsed, err := url.Parse(strings.TrimSpace(u))
		if err != nil || parsed.Hostname() == "" {
			t.Fatalf("MQTT_BROKER element %q: not a broker URL", u)
		}
		hosts = append(hosts, parsed.Hostname())
	}
	return hosts
}

// onNATS reports whether a service's brokers are the NATS nodes of the
// profile nats (else it uses Mosquitto).
func (s composeService) onNATS(t *testing.T) bool {
	t.Helper()
	return strings.HasPrefix(s.brokerHosts(t)[0], "nats-")
}

func TestComposeFileHasNoVersionKey(t *testing.T) {
	_, raw, _ := loadCompose(t)
	if _, ok := raw["version"]; ok {
		t.Errorf("docker-compose.yml has a version key; the Compose specification has none")
	}
}

func TestComposeEnvironmentIsReadByTheService(t *testing.T) {
	root, _, cf := loadCompose(t)
	read := map[string]map[string]bool{}
	built := 0
	for name, s := range cf.Services {
		m := s.module()
		if m == "" {
			continue
		}
		built++
		if read[m] == nil {
			read[m] = composeEnvVarsRead(t, root, m)
		}
		for k := range s.Environment {
			if !read[m][k] {
				t.Errorf("service %s sets %s, which the %s does not read (it reads %s)", name, k, m, strings.Join(composeSortedKeys(read[m]), ", "))
			}
		}
	}
	for _, m := range []string{"publisher", "subscriber"} {
		if read[m] == nil {
			t.Errorf("no service is built from %s/", m)
		}
	}
	if built == 0 {
		t.Fatalf("no service with build:")
	}
}

func TestComposeInitEnvironmentIsReadByTheScript(t *testing.T) {
	root, _, cf := loadCompose(t)
	for service, script := range map[string]string{
		"mosquitto-init": "deploy/mosquitto/init-auth.sh",
		"nats-init":      "deploy/nats/init-auth.sh",
	} {
		s, ok := cf.Services[service]
		if !ok {
			t.Fatalf("no service %s", service)
		}
		text, err := os.ReadFile(filepath.Join(root, script))
		if err != nil {
			t.Fatalf("read %s: %v", script, err)
		}
		for k := range s.Environment {
			if !bytes.Contains(text, []byte("${"+k)) && !bytes.Contains(text, []byte("$"+k)) {
				t.Errorf("%s sets %s, which %s does not read", service, k, script)
			}
		}
	}
}

func TestComposePortsMatchHTTPAddr(t *testing.T) {
	_, _, cf := loadCompose(t)
	want := map[string]string{"publisher": "8080", "subscriber": "8081"} // the contract's ports
	for name, s := range cf.Services {
		m := s.module()
		if m == "" {
			continue
		}
		port := composeHTTPPort(t, name, s)
		if port != want[m] {
			t.Errorf("service %s: HTTP_ADDR port %s, want %s", name, port, want[m])
		}
		if len(s.Ports)+len(s.Expose) == 0 {
			t.Errorf("service %s: neither ports nor expose", name)
		}
		for _, p := range s.Ports {
			if got := composeContainerPort(p); got != port {
				t.Errorf("service %s: port mapping %q goes to container port %s, but HTTP_ADDR listens on %s", name, p, got, port)
			}
		}
		for _, p := range s.Expose {
			if got, _, _ := strings.Cut(p, "/"); got != port {
				t.Errorf("service %s: expose %q, but HTTP_ADDR listens on %s", name, p, port)
			}
		}
	}
	hostDefaults := map[string]string{
		"mosquitto":  "${MQTT_PORT:-1883}:1883",
		"publisher":  "${PUBLISHER_PORT:-8080}:8080",
		"subscriber": "${SUBSCRIBER_PORT:-8081}:8081",
	}
	for name, suffix := range hostDefaults {
		ports := cf.Services[name].Ports
		if !slices.ContainsFunc(ports, func(p string) bool { return strings.HasSuffix(p, suffix) }) {
			t.Errorf("service %s: ports %q, want one ending in %q", name, ports, suffix)
		}
	}
}

func TestComposeMountsTheTopLevelMosquittoConf(t *testing.T) {
	root, _, cf := loadCompose(t)
	s, ok := cf.Services["mosquitto"]
	if !ok {
		t.Fatalf("no service mosquitto")
	}
	if s.Image != "eclipse-mosquitto:2" {
		t.Errorf("mosquitto image %q, want eclipse-mosquitto:2", s.Image)
	}
	var conf string
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == "/mosquitto/config/mosquitto.conf" {
			conf = parts[0]
		}
	}
	if conf == "" {
		t.Fatalf("mosquitto: nothing mounted at /mosquitto/config/mosquitto.conf; volumes %q", s.Volumes)
	}
	if got, want := filepath.Join(root, conf), filepath.Join(root, "mosquitto.conf"); got != want {
		t.Errorf("mosquitto.conf mounted from %s, want the top-level %s", got, want)
	}

	// Every path the configuration names lies on a volume of the service.
	settings := composeMosquittoSettings(t, filepath.Join(root, "mosquitto.conf"))
	for _, key := range []string{"password_file", "acl_file", "persistence_location"} {
		path := settings[key]
		if path == "" {
			t.Errorf("mosquitto.conf: no %s", key)
			continue
		}
		if !slices.ContainsFunc(s.Volumes, func(v string) bool {
			parts := strings.Split(v, ":")
			return len(parts) >= 2 && !strings.HasPrefix(parts[0], ".") && strings.HasPrefix(path, strings.TrimSuffix(parts[1], "/")+"/")
		}) {
			t.Errorf("mosquitto.conf %s %s is not on a named volume of the mosquitto service (%q)", key, path, s.Volumes)
		}
	}
}

// composeMosquittoSettings reads the first value of every setting in a
// mosquitto.conf.
func composeMosquittoSettings(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, _ := strings.Cut(line, " ")
		if _, ok := out[key]; !ok {
			out[key] = strings.TrimSpace(value)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return out
}

// TestComposeMaxInflightMatchesBroker checks that the publisher never has
// more QoS 1 and 2 publishes out than the stack's broker takes from one
// client: past max_inflight_messages Mosquitto acknowledges a publish and
// drops it (see mosquitto.conf). The stack raises both together: compose
// sets the broker's value, deploy/run-local.sh reads it from mosquitto.conf.
func TestComposeMaxInflightMatchesBroker(t *testing.T) {
	root, _, cf := loadCompose(t)
	broker := composeMosquittoSettings(t, filepath.Join(root, "mosquitto.conf"))["max_inflight_messages"]
	if broker == "" {
		t.Fatalf("mosquitto.conf sets no max_inflight_messages (Mosquitto's default is 20)")
	}
	for name, s := range cf.Services {
		if s.module() != "publisher" {
			continue
		}
		got := s.Environment["MQTT_MAX_INFLIGHT"]
		if s.onNATS(t) {
			// NATS drops nothing past a limit: it takes up to 1024
			// unacknowledged publishes from one connection (more wait in
			// TCP, NATS-NOTES / docs/scaling.md).
			if n, err := strconv.Atoi(got); err != nil || n < 1 || n > 1024 {
				t.Errorf("service %s: MQTT_MAX_INFLIGHT %q, want 1 to 1024 on NATS", name, got)
			}
			continue
		}
		if got != broker {
			t.Errorf("service %s: MQTT_MAX_INFLIGHT %q, want %s, the max_inflight_messages of mosquitto.conf", name, got, broker)
		}
	}
	script, err := os.ReadFile(filepath.Join(root, "deploy", "run-local.sh"))
	if err != nil {
		t.Fatalf("read run-local.sh: %v", err)
	}
	for _, want := range []string{`"max_inflight_messages"`, `MQTT_MAX_INFLIGHT="$max_inflight"`} {
		if !bytes.Contains(script, []byte(want)) {
			t.Errorf("deploy/run-local.sh lacks %s: it must give the publisher the broker's max_inflight_messages", want)
		}
	}
}

func TestComposeMountedFilesExist(t *testing.T) {
	root, _, cf := loadCompose(t)
	for name, s := range cf.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") {
				continue // a named volume
			}
			if _, err := os.Stat(filepath.Join(root, src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}
}

func TestComposeHealthChecksAndStartOrder(t *testing.T) {
	_, _, cf := loadCompose(t)
	for name, s := range cf.Services {
		if s.oneShot() {
			if s.Healthcheck != nil && !s.Healthcheck.Disable {
				t.Errorf("one-shot service %s has a health check", name)
			}
			continue
		}
		if s.Healthcheck == nil || s.Healthcheck.Disable || len(s.Healthcheck.Test) == 0 || s.Healthcheck.Test[0] == "NONE" {
			t.Errorf("service %s has no health check", name)
		}
		if s.Restart != "unless-stopped" {
			t.Errorf("service %s: restart %q, want unless-stopped", name, s.Restart)
		}
		if m := s.module(); m != "" {
			// Readiness, not liveness: healthy means connected (and, for a
			// subscriber, subscribed with its store answering), which is what
			// a service that waits for it needs.
			if got, want := s.Healthcheck.Test, []string{"CMD", "/usr/local/bin/" + m, "healthcheck", "ready"}; !slices.Equal(got, want) {
				t.Errorf("service %s: health check %q, want %q (the binary's own check of /readyz; the image has no shell)", name, got, want)
			}
			// It starts once every broker of its list is healthy.
			for _, host := range s.brokerHosts(t) {
				if got := s.DependsOn[host].Condition; got != "service_healthy" {
					t.Errorf("service %s: depends_on %s condition %q, want service_healthy", name, host, got)
				}
			}
		}
		for dep, d := range s.DependsOn {
			if cf.Services[dep].module() != "" && d.Condition != "service_healthy" {
				t.Errorf("service %s: depends_on %s condition %q, want service_healthy (its health check is readiness)", name, dep, d.Condition)
			}
		}
	}
	// The subscriber's first subscription makes the broker keep what is
	// published for it: before that, a publish is stored by no one.
	if got := cf.Services["publisher"].DependsOn["subscriber"].Condition; got != "service_healthy" {
		t.Errorf("publisher: depends_on subscriber condition %q, want service_healthy", got)
	}
	if got := cf.Services["mosquitto"].DependsOn["mosquitto-init"].Condition; got != "service_completed_successfully" {
		t.Errorf("mosquitto: depends_on mosquitto-init condition %q, want service_completed_successfully", got)
	}
	for _, node := range composeNATSNodes {
		if got := cf.Services[node].DependsOn["nats-init"].Condition; got != "service_completed_successfully" {
			t.Errorf("%s: depends_on nats-init condition %q, want service_completed_successfully", node, got)
		}
	}
}

// TestComposeCredentialsAgree checks that each service logs in with the user
// the ACL names for it and with the password mosquitto-init hashes for that
// user (the same variable, with the same default).
func TestComposeCredentialsAgree(t *testing.T) {
	root, _, cf := loadCompose(t)
	initEnv := cf.Services["mosquitto-init"].Environment
	acl, err := os.ReadFile(filepath.Join(root, "deploy", "mosquitto", "acl"))
	if err != nil {
		t.Fatalf("read ACL: %v", err)
	}
	users := regexp.MustCompile(`(?m)^user (\S+)$`).FindAllStringSubmatch(string(acl), -1)
	inACL := map[string]bool{}
	for _, u := range users {
		inACL[u[1]] = true
	}
	natsInitEnv := cf.Services["nats-init"].Environment
	for name, s := range cf.Services {
		m := s.module()
		if m == "" {
			continue
		}
		user := s.Environment["MQTT_USERNAME"]
		if user != m {
			t.Errorf("service %s: MQTT_USERNAME %q, want %q", name, user, m)
		}
		key := strings.ToUpper(m) + "_MQTT_PASSWORD"
		if s.onNATS(t) {
			// deploy/nats/init-auth.sh writes the users publisher and
			// subscriber with these two variables' values.
			if got, want := s.Environment["MQTT_PASSWORD"], natsInitEnv[key]; got != want || want == "" {
				t.Errorf("service %s: MQTT_PASSWORD %q, want %q, the value nats-init writes as %s", name, got, want, key)
			}
			if got, want := s.Environment["MQTT_BROKER"], composeNATSBrokers(); got != want {
				t.Errorf("service %s: MQTT_BROKER %q, want every node: %q", name, got, want)
			}
			continue
		}
		if !inACL[user] {
			t.Errorf("service %s: user %q has no section in deploy/mosquitto/acl", name, user)
		}
		if got, want := s.Environment["MQTT_PASSWORD"], initEnv[key]; got != want || want == "" {
			t.Errorf("service %s: MQTT_PASSWORD %q, want %q, the value mosquitto-init hashes as %s", name, got, want, key)
		}
		if !strings.HasPrefix(s.Environment["MQTT_BROKER"], "tcp://mosquitto:1883") {
			t.Errorf("service %s: MQTT_BROKER %q, want tcp://mosquitto:1883", name, s.Environment["MQTT_BROKER"])
		}
	}
}

func TestComposeConfig(t *testing.T) {
	compose := composeCommand(t)
	root := harness.RepoRoot(t)
	tests := []struct {
		name string
		args []string
	}{
		{"default", []string{"config", "-q"}},
		{"nats", []string{"--profile", "nats", "config", "-q"}},
		{"all profiles", []string{"--profile", "postgres", "--profile", "monitoring", "--profile", "nats", "config", "-q"}},
		// Grafana is in both profiles, so each must stand alone.
		{"postgres alone", []string{"--profile", "postgres", "config", "-q"}},
		{"monitoring alone", []string{"--profile", "monitoring", "config", "-q"}},
		{".env.example", []string{"--env-file", ".env.example", "--profile", "postgres", "--profile", "monitoring", "--profile", "nats", "config", "-q"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(compose[0], append(compose[1:], tt.args...)...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "COMPOSE_PROJECT_NAME=mqtt-stack-config-test")
			out, err := composeRun(cmd, 60*time.Second)
			if err != nil {
				t.Errorf("%s %s: %v\n%s", strings.Join(compose, " "), strings.Join(tt.args, " "), err, out)
			}
		})
	}
}

// composeCommand finds `docker compose` or docker-compose (neither needs an
// engine to validate a file). Without either the test is skipped, and fails
// with CI=true: .ci/run installs docker-compose.
func composeCommand(t *testing.T) []string {
	t.Helper()
	docker, err := exec.LookPath("docker")
	if err == nil {
		if _, err := composeRun(exec.Command(docker, "compose", "version"), 30*time.Second); err == nil {
			return []string{docker, "compose"}
		}
	}
	if dc, err := exec.LookPath("docker-compose"); err == nil {
		return []string{dc}
	}
	harness.Missing(t, "neither `docker compose` nor docker-compose is installed")
	return nil
}

func composeRun(cmd *exec.Cmd, d time.Duration) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	timer := time.AfterFunc(d, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return out.Bytes(), err
}

func composeSortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestComposeDashboardMetricsExist checks that every metric the provisioned
// Grafana dashboard queries is one a service registers (a metric renamed in
// the code would leave an empty panel).
func TestComposeDashboardMetricsExist(t *testing.T) {
	root := harness.RepoRoot(t)
	dash, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "dashboards", "mqtt-stack.json"))
	if err != nil {
		t.Fatalf("read dashboard: %v", err)
	}
	var src bytes.Buffer
	for _, m := range []string{"publisher", "subscriber"} {
		err := filepath.WalkDir(filepath.Join(root, m, "internal"), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			src.Write(b)
			return err
		})
		if err != nil {
			t.Fatalf("read %s sources: %v", m, err)
		}
	}
	used := regexp.MustCompile(`\b(?:publisher|subscriber)_[a-z0-9_]+`).FindAllString(string(dash), -1)
	if len(used) == 0 {
		t.Fatalf("the dashboard queries no publisher_ or subscriber_ metric")
	}
	seen := map[string]bool{}
	for _, name := range used {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			name = strings.TrimSuffix(name, suffix)
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		if !bytes.Contains(src.Bytes(), []byte(`"`+name+`"`)) {
			t.Errorf("the dashboard queries %s, which no service registers", name)
		}
	}
}

// TestOpenAPIDocumentsCoverTheContract checks that each service's OpenAPI
// document is OpenAPI 3.1 and describes every path of the contract.
func TestOpenAPIDocumentsCoverTheContract(t *testing.T) {
	root := harness.RepoRoot(t)
	tests := []struct {
		file  string
		paths map[string]string // path -> method
	}{
		{"publisher.yaml", map[string]string{
			"/publish": "post", "/mqtt/publish": "post", "/publish/batch": "post",
			"/healthz": "get", "/readyz": "get", "/metrics": "get",
		}},
		{"subscriber.yaml", map[string]string{
			"/messages": "get", "/messages/stream": "get", "/series": "get", "/topics": "get",
			"/healthz": "get", "/readyz": "get", "/metrics": "get",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, "docs", "openapi", tt.file))
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			var doc struct {
				OpenAPI string                               `yaml:"openapi"`
				Paths   map[string]map[string]map[string]any `yaml:"paths"`
			}
			if err := yaml.Unmarshal(data, &doc); err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
				t.Errorf("openapi %q, want 3.1.x", doc.OpenAPI)
			}
			for path, method := range tt.paths {
				if _, ok := doc.Paths[path][method]; !ok {
					t.Errorf("no %s %s", strings.ToUpper(method), path)
				}
			}
		})
	}
}
