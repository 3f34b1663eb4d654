package logbuf

import (
	"bytes"
	"strings"
	"testing"
)

// recorder records each write it is given.
type recorder struct{ writes []string }

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func TestLinesKeepTheirOrder(t *testing.T) {
	var r recorder
	w := New(&r)
	held := w.Held()
	steps := []struct {
		write      func()
		wantWrites []string // all the writes made so far
	}{
		{func() { held.Write([]byte("a1\n")) }, nil},
		{func() { held.Write([]byte("a2\n")) }, nil},
		{func() { w.Flush() }, []string{"a1\na2\n"}},
		{func() { w.Flush() }, []string{"a1\na2\n"}}, // nothing held: no write
		{func() { held.Write([]byte("a3\n")) }, []string{"a1\na2\n"}},
		// A line written straight comes after the held ones, in the same write.
		{func() { w.Write([]byte("warn\n")) }, []string{"a1\na2\n", "a3\nwarn\n"}},
		{func() { w.Write([]byte("info\n")) }, []string{"a1\na2\n", "a3\nwarn\n", "info\n"}},
	}
	for k, s := range steps {
		s.write()
		if got := strings.Join(r.writes, "|"); got != strings.Join(s.wantWrites, "|") {
			t.Fatalf("after step %d: writes %q, want %q", k, r.writes, s.wantWrites)
		}
	}
}

func TestHeldLinesLeaveAtTheLimit(t *testing.T) {
	var out bytes.Buffer
	w := New(&out)
	line := []byte(strings.Repeat("x", 99) + "\n")
	n := 0
	for out.Len() == 0 {
		if _, err := w.Held().Write(line); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if got, want := out.Len(), n*len(line); got != want || got < limit || got-len(line) >= limit {
		t.Errorf("wrote %d bytes after %d lines, want all %d once %d were held", got, n, want, limit)
	}
}
