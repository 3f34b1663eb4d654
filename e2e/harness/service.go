package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var builds struct {
	once sync.Once
	dir  string
	err  error
}

// Main runs the tests of a package and removes the binaries they built.
// Call it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	return code
}

// Publisher returns the path of the publisher binary built from this checkout.
func Publisher(tb testing.TB) string { tb.Helper(); return binary(tb, "publisher") }

// Subscriber returns the path of the subscriber binary built from this checkout.
func Subscriber(tb testing.TB) string { tb.Helper(); return binary(tb, "subscriber") }

func binary(tb testing.TB, name string) string {
	tb.Helper()
	root := RepoRoot(tb)
	builds.once.Do(func() {
		builds.dir, builds.err = os.MkdirTemp("", "e2e-bin-")
		if builds.err != nil {
			return
		}
		for _, svc := range []string{"publisher", "subscriber"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(builds.dir, svc), ".")
			cmd.Dir = filepath.Join(root, svc)
			if out, err := cmd.CombinedOutput(); err != nil {
				builds.err = fmt.Errorf("build %s: %w\n%s", svc, err, out)
				return
			}
		}
	})
	if builds.err != nil {
		tb.Fatalf("%v", builds.err)
	}
	return filepath.Join(builds.dir, name)
}

// Run runs bin to completion (at most 10s) with env added to the test's
// environment and returns its exit code and output.
func Run(tb testing.TB, bin string, env map[string]string, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = environ(env)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	timer := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		tb.Fatalf("run %s: %v", bin, err)
	}
	return cmd.ProcessState.ExitCode(), o.String(), e.String()
}

func environ(env map[string]string) []string {
	out := os.Environ()
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// Service is a running publisher or subscriber process. Its stdout is read
// as JSON log lines (LOG_FORMAT=json), its stderr kept as text.
type Service struct {
	tb  testing.TB
	bin string
	env map[string]string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	addr   string
	logs   []map[string]any
	output []string
}

// StartService starts bin with LOG_FORMAT=json, HTTP_ADDR=127.0.0.1:0 and
// env, and waits until it logs the address its HTTP server listens on.
func StartService(tb testing.TB, bin string, env map[string]string) *Service {
	tb.Helper()
	full := map[string]string{"LOG_FORMAT": "json", "HTTP_ADDR": "127.0.0.1:0", "LOG_LEVEL": "debug"}
	for k, v := range env {
		full[k] = v
	}
	s := &Service{tb: tb, bin: bin, env: full}
	tb.Cleanup(func() {
		s.stop(syscall.SIGTERM, 10*time.Second)
		if tb.Failed() {
			s.mu.Lock()
			out := s.output
			s.mu.Unlock()
			if len(out) > 80 {
				out = out[len(out)-80:]
			}
			tb.Logf("%s output (last %d lines):\n%s", filepath.Base(bin), len(out), strings.Join(out, "\n"))
		}
	})
	s.start()
	return s
}

func (s *Service) start() {
	s.tb.Helper()
	cmd := exec.Command(s.bin)
	cmd.Env = environ(s.env)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.tb.Fatalf("stdout pipe: %v", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		s.tb.Fatalf("stderr pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("start %s: %v", s.bin, err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done, s.addr = cmd, done, ""
	s.mu.Unlock()
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); s.read(stdout, true) }()
	go func() { defer readers.Done(); s.read(stderr, false) }()
	go func() {
		readers.Wait()
		_ = cmd.Wait()
		close(done)
	}()
	if !Eventually(15*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.addr != ""
	}) || s.Addr() == "" {
		s.tb.Fatalf("%s did not log \"http server listening\" (exited: %v)", filepath.Base(s.bin), s.exited())
	}
}

func (s *Service) read(r io.Reader, jsonLines bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		s.mu.Lock()
		s.output = append(s.output, line)
		if jsonLines {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil {
				s.logs = append(s.logs, m)
				if m["msg"] == "http server listening" {
					if a, ok := m["addr"].(string); ok {
						s.addr = a
					}
				}
			}
		}
		s.mu.Unlock()
	}
}

func (s *Service) exited() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// Addr is the host:port the HTTP server listens on.
func (s *Service) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Pid is the process id of the running process, 0 when it is not running.
func (s *Service) Pid() int {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return 0
	}
	select {
	case <-done:
		return 0
	default:
		return cmd.Process.Pid
	}
}

// PeakRSS is the process's peak resident set size so far (VmHWM in
// /proc/<pid>/status), in bytes.
func (s *Service) PeakRSS(tb testing.TB) int64 {
	tb.Helper()
	pid := s.Pid()
	if pid == 0 {
		tb.Fatalf("%s is not running", filepath.Base(s.bin))
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		Missing(tb, fmt.Sprintf("read the process status: %v", err))
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				tb.Fatalf("parse %q: %v", line, err)
			}
			return kb << 10
		}
	}
	tb.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// URL is the base URL of the HTTP server.
func (s *Service) URL() string { return "http://" + s.Addr() }

// Logs returns the JSON log lines so far.
func (s *Service) Logs() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.logs...)
}

// Output returns every line of stdout and stderr so far.
func (s *Service) Output() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.output...)
}

// WaitLog waits up to d for a log line for which match is true and returns it.
func (s *Service) WaitLog(tb testing.TB, d time.Duration, match func(map[string]any) bool) map[string]any {
	tb.Helper()
	var found map[string]any
	if !Eventually(d, func() bool {
		for _, l := range s.Logs() {
			if match(l) {
				found = l
				return true
			}
		}
		return false
	}) {
		tb.Fatalf("no matching log line within %v", d)
	}
	return found
}

// WaitReady waits up to d for GET /readyz to answer 200.
func (s *Service) WaitReady(tb testing.TB, d time.Duration) {
	tb.Helper()
	if !Eventually(d, func() bool { return s.Status("/readyz") == http.StatusOK }) {
		tb.Fatalf("%s not ready within %v (readyz %d)", filepath.Base(s.bin), d, s.Status("/readyz"))
	}
}

// Status is the status code of GET path, or 0 when the request failed.
func (s *Service) Status(path string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(s.URL() + path)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// Stop sends SIGTERM and waits up to 10s for the exit; it returns the exit code.
func (s *Service) Stop() int { return s.stop(syscall.SIGTERM, 10*time.Second) }

// Kill sends SIGKILL and waits for the exit.
func (s *Service) Kill() { s.stop(syscall.SIGKILL, 10*time.Second) }

// Restart starts the process again with the same environment and the same
// HTTP address.
func (s *Service) Restart() {
	s.tb.Helper()
	if !s.exited() {
		s.tb.Fatalf("restart of a running %s", filepath.Base(s.bin))
	}
	if a := s.Addr(); a != "" {
		s.env["HTTP_ADDR"] = a
	}
	s.start()
}

func (s *Service) stop(sig syscall.Signal, d time.Duration) int {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return -1
	}
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(d):
		s.tb.Errorf("%s did not exit within %v of %v; killing it", filepath.Base(s.bin), d, sig)
		_ = cmd.Process.Kill()
		<-done
	}
	return cmd.ProcessState.ExitCode()
}
