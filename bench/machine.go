package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// describeMachine reads what the figures depend on: CPU, cores, memory,
// kernel, the Go toolchain that builds the services and the broker.
func describeMachine(ctx context.Context, mosquitto string) Machine {
	m := Machine{Cores: runtime.NumCPU(), CPU: "unknown", Go: runtime.Version(), Mosquitto: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU = procField(b, "model name")
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kb, err := strconv.ParseFloat(strings.TrimSuffix(procField(b, "MemTotal"), " kB"), 64); err == nil {
			m.MemoryGiB = kb / (1 << 20)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAverage = strings.Join(f[:3], " ")
		}
	}
	if out, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output(); err == nil {
		m.Go = strings.TrimSpace(string(out))
	}
	// mosquitto -h prints its version on the first line and exits non-zero.
	out, err := exec.CommandContext(ctx, mosquitto, "-h").CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return m
	}
	if line, _, _ := bytes.Cut(out, []byte("\n")); bytes.HasPrefix(line, []byte("mosquitto version ")) {
		m.Mosquitto = string(bytes.TrimPrefix(line, []byte("mosquitto version ")))
	}
	return m
}

// procField returns the value of the first "key: value" line of a /proc
// file, or "" when there is none.
func procField(b []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
