package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Target kinds: how a figure is judged.
const (
	atLeastRatio = "ratio>=" // value/baseline must be at least Limit
	atMostRatio  = "ratio<=" // value/baseline must be at most Limit
	below        = "value<"  // value must be under Limit
)

// Target is what a figure must reach; a zero Target only informs.
type Target struct {
	Kind  string  `json:"kind,omitempty"`
	Limit float64 `json:"limit,omitempty"`
}

// Results of a figure.
const (
	resultPass  = "pass"
	resultFail  = "FAIL"
	resultInfo  = "info"  // no target
	resultError = "error" // the scenario could not measure it
)

// Figure is one row of the table.
type Figure struct {
	Name     string   `json:"name"`
	Unit     string   `json:"unit"`
	Value    *float64 `json:"value"`
	Baseline *float64 `json:"baseline,omitempty"`
	Ratio    *float64 `json:"ratio,omitempty"`
	Target   Target   `json:"target"`
	Result   string   `json:"result"`
	Note     string   `json:"note,omitempty"`
}

// measured makes a figure from a value and, where it has one, a baseline
// (pass nil for none), and judges it against t.
func measured(name, unit string, value float64, baseline *float64, t Target) Figure {
	f := Figure{Name: name, Unit: unit, Value: &value, Baseline: baseline, Target: t}
	if baseline != nil && *baseline > 0 {
		r := value / *baseline
		f.Ratio = &r
	}
	f.Result = f.judge()
	return f
}

// failed is a figure that could not be measured.
func failed(name, unit string, t Target, err error) Figure {
	return Figure{Name: name, Unit: unit, Target: t, Result: resultError, Note: err.Error()}
}

func (f Figure) judge() string {
	switch f.Target.Kind {
	case atLeastRatio:
		if f.Ratio == nil {
			return resultError
		}
		if *f.Ratio >= f.Target.Limit {
			return resultPass
		}
		return resultFail
	case atMostRatio:
		if f.Ratio == nil {
			return resultError
		}
		if *f.Ratio <= f.Target.Limit {
			return resultPass
		}
		return resultFail
	case below:
		if f.Value == nil {
			return resultError
		}
		if *f.Value < f.Target.Limit {
			return resultPass
		}
		return resultFail
	default:
		return resultInfo
	}
}

func ptr(v float64) *float64 { return &v }

// Machine says what the figures were measured on.
type Machine struct {
	CPU         string  `json:"cpu"`
	Cores       int     `json:"cores"`
	MemoryGiB   float64 `json:"memory_gib"`
	Kernel      string  `json:"kernel"`
	Go          string  `json:"go"`
	Mosquitto   string  `json:"mosquitto"`
	LoadAverage string  `json:"load_average_at_start"`
}

func (m Machine) String() string {
	return fmt.Sprintf("%s, %d cores, %.0f GiB RAM, Linux %s, %s, Mosquitto %s",
		m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go, m.Mosquitto)
}

// Kinds of run.
const (
	kindFull    = "full"
	kindQuick   = "quick"
	kindPartial = "partial"
)

// Report is one run: what bench/results/*.json holds.
type Report struct {
	Date     string            `json:"date"`
	Started  time.Time         `json:"started"`
	Seconds  float64           `json:"seconds"`
	Kind     string            `json:"kind"` // full, quick or partial (-only)
	Machine  Machine           `json:"machine"`
	Broker   []string          `json:"broker_config"`
	Settings map[string]string `json:"settings"`
	Figures  []Figure          `json:"figures"`
	Notes    []string          `json:"notes,omitempty"`
}

// Table renders the figures as a Markdown table, columns padded so that it
// reads as well in a terminal as in the README.
func Table(figs []Figure) string {
	rows := [][]string{{"figure", "value", "baseline", "ratio", "target", "result"}}
	for _, f := range figs {
		rows = append(rows, []string{
			f.Name,
			formatValue(f.Value, f.Unit),
			formatValue(f.Baseline, f.Unit),
			formatRatio(f.Ratio),
			formatTarget(f.Target, f.Unit),
			f.Result,
		})
	}
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" ")
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))))
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	line(rows[0])
	sep := make([]string, len(width))
	for i, w := range width {
		sep[i] = strings.Repeat("-", w)
	}
	line(sep)
	for _, r := range rows[1:] {
		line(r)
	}
	return b.String()
}

func formatValue(v *float64, unit string) string {
	if v == nil {
		return "—"
	}
	var s string
	switch {
	case math.Abs(*v) >= 1000:
		s = thousands(int64(math.Round(*v)))
	case math.Abs(*v) >= 100:
		s = strconv.FormatFloat(*v, 'f', 0, 64)
	case math.Abs(*v) >= 10:
		s = strconv.FormatFloat(*v, 'f', 1, 64)
	default:
		s = strconv.FormatFloat(*v, 'f', 2, 64)
	}
	return s + " " + unit
}

func formatRatio(r *float64) string {
	if r == nil {
		return "—"
	}
	return strconv.FormatFloat(*r, 'f', 3, 64)
}

func formatTarget(t Target, unit string) string {
	switch t.Kind {
	case atLeastRatio:
		return "ratio ≥ " + strconv.FormatFloat(t.Limit, 'f', -1, 64)
	case atMostRatio:
		return "ratio ≤ " + strconv.FormatFloat(t.Limit, 'f', -1, 64)
	case below:
		return "< " + strconv.FormatFloat(t.Limit, 'f', -1, 64) + " " + unit
	default:
		return "—"
	}
}

// thousands writes n with a comma every three digits.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// Write stores r as JSON under dir: <date>-<HHMM>.json (its start, UTC) and
// latest.json for a full run, so that a second run of the day keeps the
// first; quick.json or partial.json for a -quick or -only one, which are
// not measurements to keep.
func (r Report) Write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode report: %w", err)
	}
	b = append(b, '\n')
	names := []string{r.Started.UTC().Format("2006-01-02-1504") + ".json", "latest.json"}
	if r.Kind != kindFull {
		names = []string{r.Kind + ".json"}
	}
	var paths []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return paths, fmt.Errorf("write %s: %w", p, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}
