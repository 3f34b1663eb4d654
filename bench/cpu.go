package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ),
// 100 per second on every Linux this runs on.
const clockTick = 10 * time.Millisecond

// procCPU is the CPU time (user and system) that process pid has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime out of a /proc/<pid>/stat line. The
// command name, in parentheses, may hold spaces, so fields are counted from
// the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat %.40q: no command name", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse stat %.40q: %d fields", stat, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// cpuUse adds up, per process, the CPU time used during measured periods.
type cpuUse struct {
	names []string // in the order they are reported
	pids  map[string]int
	used  map[string]time.Duration
	start map[string]time.Duration
}

func newCPUUse() *cpuUse {
	return &cpuUse{pids: map[string]int{}, used: map[string]time.Duration{}, start: map[string]time.Duration{}}
}

// watch adds a process to measure.
func (c *cpuUse) watch(name string, pid int) {
	c.names = append(c.names, name)
	c.pids[name] = pid
}

// begin starts a measured period.
func (c *cpuUse) begin() {
	for name, pid := range c.pids {
		if t, err := procCPU(pid); err == nil {
			c.start[name] = t
		}
	}
}

// end closes a measured period and adds what each process used in it.
func (c *cpuUse) end() {
	for name, pid := range c.pids {
		start, ok := c.start[name]
		if t, err := procCPU(pid); err == nil && ok {
			c.used[name] += t - start
		}
	}
	clear(c.start)
}

// per describes the CPU time per unit (request, message) of each process,
// in microseconds, and their sum.
func (c *cpuUse) per(n int, unit string) string {
	if n <= 0 {
		return "nothing done"
	}
	var parts []string
	var total time.Duration
	for _, name := range c.names {
		u := c.used[name]
		total += u
		parts = append(parts, fmt.Sprintf("%s %.0f", name, float64(u.Microseconds())/float64(n)))
	}
	return fmt.Sprintf("CPU µs per %s: %s; total %.0f", unit, strings.Join(parts, ", "), float64(total.Microseconds())/float64(n))
}
