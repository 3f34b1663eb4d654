package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// buildService builds the service in repo/name into dir, as `make build`
// builds it: alone (GOWORK=off), static (CGO_ENABLED=0).
func buildService(ctx context.Context, repo, name, dir string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = filepath.Join(repo, name)
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w: %s", name, err, lastLines(b, 10))
	}
	return out, nil
}

// Proc is a running service (or the baseline server) whose stdout and
// stderr go to a file: the run reads nothing from a pipe while it measures,
// so logging costs the service what it costs under a container runtime.
type Proc struct {
	Name string
	Addr string // host:port of its HTTP server, from its log

	bin, logPath string
	args, env    []string
	noHTTP       bool // a peer without the services' HTTP server
	cmd          *exec.Cmd
	done         chan struct{}
}

// startProc starts bin with env added to the environment and waits until
// it logs (as JSON) the address of its HTTP server.
func startProc(ctx context.Context, name, bin string, args []string, env map[string]string, logDir string) (*Proc, error) {
	p := &Proc{Name: name, bin: bin, args: args}
	for k, v := range env {
		p.env = append(p.env, k+"="+v)
	}
	for i := 0; ; i++ {
		p.logPath = filepath.Join(logDir, fmt.Sprintf("%s-%d.log", name, i))
		if _, err := os.Stat(p.logPath); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	return p, p.start(ctx)
}

func (p *Proc) start(ctx context.Context) error {
	f, err := os.Create(p.logPath)
	if err != nil {
		return fmt.Errorf("create %s: %w", p.logPath, err)
	}
	defer f.Close() // the child has its own descriptor
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		// Stopping it is the expected end; how it ended otherwise is in
		// its log, which every error about it quotes.
		if err := cmd.Wait(); err != nil {
			fmt.Fprintf(logFile{p.logPath}, "bench: %s: %v\n", p.Name, err)
		}
		close(done)
	}(p.cmd, p.done)
	if p.noHTTP {
		return nil
	}
	addr, err := p.waitListening(ctx, 30*time.Second)
	if err != nil {
		return errors.Join(fmt.Errorf("%s: %w; log: %s", p.Name, err, p.LogTail()), p.Stop())
	}
	p.Addr = addr
	return nil
}

// startCommand starts bin like startProc, for a program that has no HTTP
// server to wait for (a peer such as Telegraf).
func startCommand(name, bin string, args []string, logDir string) (*Proc, error) {
	p := &Proc{Name: name, bin: bin, args: args, noHTTP: true}
	p.logPath = filepath.Join(logDir, name+".log")
	return p, p.start(context.Background())
}

// Restart starts the same binary with the same environment again.
func (p *Proc) Restart(ctx context.Context) error {
	if err := p.Stop(); err != nil {
		return err
	}
	p.logPath = strings.TrimSuffix(p.logPath, ".log") + "r.log"
	return p.start(ctx)
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// URL is the base URL of its HTTP server.
func (p *Proc) URL() string { return "http://" + p.Addr }

func (p *Proc) waitListening(ctx context.Context, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(p.logPath)
		if err != nil {
			return "", fmt.Errorf("read log: %w", err)
		}
		if addr := listeningAddr(b); addr != "" {
			return addr, nil
		}
		select {
		case <-p.done:
			return "", errors.New("exited before it listened")
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("no \"http server listening\" line within %s", d)
}

// listeningAddr finds the contract's start line in JSON log output and
// returns its addr attribute.
func listeningAddr(log []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "http server listening" && line.Addr != "" {
			return line.Addr
		}
	}
	return ""
}

// WaitReady polls /readyz until it answers 200.
func (p *Proc) WaitReady(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("readyz: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready; log: %s", p.Name, p.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s; log: %s", p.Name, d, p.LogTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PeakRSS reads the process's high-water mark of resident memory (VmHWM),
// in bytes.
func (p *Proc) PeakRSS() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, fmt.Errorf("read status of %s: %w", p.Name, err)
	}
	v := strings.TrimSuffix(procField(b, "VmHWM"), " kB")
	kb, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("parse VmHWM of %s %q: %w", p.Name, v, err)
	}
	return kb * 1024, nil
}

// Stop sends SIGTERM (a graceful shutdown) and waits, SIGKILL after 15 s.
func (p *Proc) Stop() error {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	return stopProcess(p.cmd.Process, p.done, 15*time.Second)
}

// stopProcess sends SIGTERM to proc and waits for done, and SIGKILL after
// grace. A process that has already exited is not an error.
func stopProcess(proc *os.Process, done <-chan struct{}, grace time.Duration) error {
	if err := proc.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop process %d: %w", proc.Pid, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(grace):
	}
	err := proc.Kill()
	<-done
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill process %d: %w", proc.Pid, err)
	}
	return fmt.Errorf("process %d ignored SIGTERM for %s and was killed", proc.Pid, grace)
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// LogTail is the end of the process's output, for error messages.
func (p *Proc) LogTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return lastLines(b, 8)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logFile appends to a process's log file after the process has gone.
type logFile struct{ path string }

func (l logFile) Write(b []byte) (int, error) {
	f, err := os.OpenFile(l.path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	n, err := f.Write(b)
	return n, errors.Join(err, f.Close())
}
