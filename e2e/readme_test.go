package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

// TestREADMELayoutMatchesTree holds the README's "Repository layout" table
// to the files git tracks: every path the table names exists, and every
// top-level file and directory and every directory of Go files (each
// package, internal ones included) has a row of its own.
func TestREADMELayoutMatchesTree(t *testing.T) {
	root := harness.RepoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatalf("read README.md: %v", err)
	}
	listed, err := layoutPaths(string(readme))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	tracked := trackedFiles(t, root)

	files := map[string]bool{}
	dirs := map[string]bool{}
	var want []string // what needs a row: top-level entries and Go package directories
	for _, f := range tracked {
		files[f] = true
		for d := path.Dir(f); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
		top, _, nested := strings.Cut(f, "/")
		if nested {
			want = append(want, top+"/")
		} else {
			want = append(want, top)
		}
		if strings.HasSuffix(f, ".go") && !slices.Contains(strings.Split(f, "/"), "testdata") {
			if d := path.Dir(f); d != "." {
				want = append(want, d+"/")
			}
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)

	for _, p := range listed {
		name := strings.TrimSuffix(p, "/")
		switch {
		case strings.HasSuffix(p, "/") && !dirs[name]:
			t.Errorf("the layout table lists %s, which is not a directory of the repository", p)
		case !strings.HasSuffix(p, "/") && !files[name]:
			if dirs[name] {
				t.Errorf("the layout table lists %s, a directory: write it %s/", p, p)
			} else {
				t.Errorf("the layout table lists %s, which is not a file of the repository", p)
			}
		}
	}
	for _, w := range want {
		if !slices.Contains(listed, w) {
			t.Errorf("%s has no row in the README's layout table", w)
		}
	}
}

// layoutPaths returns the paths named in the first column of the table
// under "## Repository layout": each `code span` of the cell, a directory
// with a trailing slash.
func layoutPaths(readme string) ([]string, error) {
	_, section, found := strings.Cut(readme, "\n## Repository layout\n")
	if !found {
		return nil, errors.New("no section \"## Repository layout\"")
	}
	if end := strings.Index(section, "\n#"); end >= 0 {
		section = section[:end]
	}
	span := regexp.MustCompile("`([^`]+)`")
	var paths []string
	rows := 0
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		rows++
		if rows <= 2 { // the header and the separator
			continue
		}
		cells := strings.Split(line, "|")
		for _, m := range span.FindAllStringSubmatch(cells[1], -1) {
			paths = append(paths, m[1])
		}
	}
	if len(paths) == 0 {
		return nil, errors.New("the layout table names no path")
	}
	return paths, nil
}

// trackedFiles lists the files git tracks under root, slash-separated.
// Without git, or outside a clone, the test fails in CI and is skipped
// elsewhere.
func trackedFiles(t *testing.T, root string) []string {
	t.Helper()
	git := harness.Need(t, "git")
	out, err := exec.Command(git, "-C", root, "ls-files", "-z").Output()
	if err != nil {
		harness.Missing(t, "git ls-files: "+err.Error()+" (not a clone?)")
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	return files
}
