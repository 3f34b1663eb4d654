package topic

import (
	"regexp"
	"strings"
	"testing"
)

// referenceMatch is a second, deliberately naive implementation of the
// matching rules, level by level over split slices.
func referenceMatch(filter, name string) bool {
	f := strings.Split(filter, "/")
	n := strings.Split(name, "/")
	if strings.HasPrefix(name, "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i := range f {
		if f[i] == "#" {
			return true
		}
		if i >= len(n) {
			return false
		}
		if f[i] != "+" && f[i] != n[i] {
			return false
		}
	}
	if len(n) == len(f) {
		return true
	}
	// "a/#" matches "a": n is one level shorter and the filter ends in '#'.
	return false
}

func FuzzMatch(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.filter, tt.name)
	}
	f.Fuzz(func(t *testing.T, filter, name string) {
		if ValidateFilter(filter) != nil || ValidateName(name) != nil {
			return
		}
		got := Match(filter, name)
		if want := referenceMatch(filter, name); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", filter, name, got, want)
		}
		re, err := regexp.Compile("(?s)" + Regexp(filter))
		if err != nil {
			t.Fatalf("Regexp(%q) does not compile: %v", filter, err)
		}
		if rm := re.MatchString(name); rm != got {
			t.Fatalf("Regexp(%q) matches %q: %v, Match says %v", filter, name, rm, got)
		}
		if !got {
			return
		}
		lo, hi, ok := Range(Prefix(filter))
		if name < lo || ok && name >= hi {
			t.Fatalf("%q matches %q but lies outside [%q, %q)", name, filter, lo, hi)
		}
	})
}

func FuzzValidateFilter(f *testing.F) {
	for _, s := range []string{"#", "a/+/b", "a/#/b", "a+", "\x00", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, filter string) {
		if ValidateFilter(filter) != nil {
			return
		}
		// A valid filter without wildcards is a valid name matching itself.
		if !strings.ContainsAny(filter, "+#") {
			if err := ValidateName(filter); err != nil {
				t.Fatalf("ValidateName(%q) = %v for a literal filter", filter, err)
			}
			if !Match(filter, filter) {
				t.Fatalf("literal filter %q does not match itself", filter)
			}
		}
	})
}
