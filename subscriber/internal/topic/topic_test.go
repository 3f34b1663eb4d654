package topic

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		filter string
		want   error
	}{
		{"#", nil},
		{"+", nil},
		{"sport/tennis/player1/#", nil},
		{"sport/#", nil},
		{"sport/tennis/#", nil},
		{"+/tennis/#", nil},
		{"sport/+/player1", nil},
		{"/+", nil},
		{"+/+", nil},
		{"$SYS/#", nil},
		{"a//b", nil},
		{"/", nil},
		{"", ErrEmpty},
		{"sport/tennis#", ErrMultiLevel},
		{"sport/tennis/#/ranking", ErrMultiLevel},
		{"#/", ErrMultiLevel},
		{"##", ErrMultiLevel},
		{"sport+", ErrSingleLevel},
		{"sport/+x/a", ErrSingleLevel},
		{"++", ErrSingleLevel},
		{"a\x00b", ErrNull},
		{"a\xffb", ErrNotUTF8},
		{strings.Repeat("a", MaxLen+1), ErrTooLong},
	}
	for _, tt := range tests {
		if got := ValidateFilter(tt.filter); !errors.Is(got, tt.want) {
			t.Errorf("ValidateFilter(%.20q) = %v, want %v", tt.filter, got, tt.want)
		}
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		want error
	}{
		{"living/room1/temperature", nil},
		{"/", nil},
		{"$SYS/broker", nil},
		{"", ErrEmpty},
		{"a/+/b", ErrWildcard},
		{"a/#", ErrWildcard},
		{"a\x00", ErrNull},
		{"\xc3", ErrNotUTF8},
	}
	for _, tt := range tests {
		if got := ValidateName(tt.name); !errors.Is(got, tt.want) {
			t.Errorf("ValidateName(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// matchTests are the examples of MQTT 3.1.1 section 4.7 plus edge cases.
var matchTests = []struct {
	filter, name string
	want         bool
}{
	// 4.7.1.2 multi-level wildcard
	{"sport/tennis/player1/#", "sport/tennis/player1", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"sport/#", "sport", true},
	{"sport/#", "sport/", true},
	{"#", "sport/tennis", true},
	{"#", "/", true},
	{"sport/tennis/#", "sport/tennis", true},
	{"sport/tennis/#", "sport/tennisx", false},
	// 4.7.1.3 single-level wildcard
	{"sport/tennis/+", "sport/tennis/player1", true},
	{"sport/tennis/+", "sport/tennis/player2", true},
	{"sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"sport/+", "sport", false},
	{"sport/+", "sport/", true},
	{"+/+", "/finance", true},
	{"/+", "/finance", true},
	{"+", "/finance", false},
	{"+/tennis/#", "sport/tennis/player1", true},
	{"sport/+/player1", "sport/tennis/player1", true},
	{"sport/+/player1", "sport//player1", true},
	{"+", "", true},
	// 4.7.2 topics beginning with $
	{"#", "$SYS/broker/clients", false},
	{"+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"$SYS/#", "$SYS/monitor/Clients", true},
	{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"$SYS/#", "$SYS", true},
	{"+", "$SYS", false},
	{"a/#", "a/$b", true},
	{"a/+", "a/$b", true},
	// literal levels
	{"a/b", "a/b", true},
	{"a/b", "a/b/", false},
	{"a/b", "a", false},
	{"a", "a/b", false},
	{"A/b", "a/b", false},
	{"a//b", "a//b", true},
	{"a/+/b", "a//b", true},
	{"/", "/", true},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchTests {
		if got := Match(tt.filter, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.filter, tt.name, got, tt.want)
		}
	}
}

// TestRegexp checks that the PostgreSQL translation of a filter accepts
// exactly what Match accepts (RE2 shares the syntax used).
func TestRegexp(t *testing.T) {
	for _, tt := range matchTests {
		re := regexp.MustCompile("(?s)" + Regexp(tt.filter))
		if got := re.MatchString(tt.name); got != tt.want {
			t.Errorf("Regexp(%q) = %q matches %q: %v, want %v", tt.filter, re, tt.name, got, tt.want)
		}
	}
}

func TestPrefix(t *testing.T) {
	tests := []struct{ filter, want string }{
		{"#", ""},
		{"+", ""},
		{"a/b", "a/b"},
		{"a/#", "a"},
		{"a/b/+", "a/b/"},
		{"a/+/c/#", "a/"},
		{"/#", ""},
	}
	for _, tt := range tests {
		if got := Prefix(tt.filter); got != tt.want {
			t.Errorf("Prefix(%q) = %q, want %q", tt.filter, got, tt.want)
		}
	}
}

func TestRange(t *testing.T) {
	tests := []struct {
		prefix, lo, hi string
		ok             bool
	}{
		{"", "", "", false},
		{"a", "a", "b", true},
		{"a/", "a/", "a0", true},
		{"é", "é", "ê", true},
		{"a\U0010FFFF", "a\U0010FFFF", "b", true},
		{"\U0010FFFF", "\U0010FFFF", "", false},
		{"a\uD7FF", "a\uD7FF", "a\uE000", true},
	}
	for _, tt := range tests {
		lo, hi, ok := Range(tt.prefix)
		if lo != tt.lo || hi != tt.hi || ok != tt.ok {
			t.Errorf("Range(%q) = %q, %q, %v, want %q, %q, %v", tt.prefix, lo, hi, ok, tt.lo, tt.hi, tt.ok)
		}
	}
}

func TestValidateShareGroup(t *testing.T) {
	for _, s := range []string{"", "a/b", "a+", "#"} {
		if ValidateShareGroup(s) == nil {
			t.Errorf("ValidateShareGroup(%q) = nil, want an error", s)
		}
	}
	if err := ValidateShareGroup("workers"); err != nil {
		t.Errorf("ValidateShareGroup(workers) = %v, want nil", err)
	}
}

func TestExpand(t *testing.T) {
	names := []string{"$SYS/load", "/x", "a", "a/b", "a/b/c", "a/x/c", "a0", "b/b/c", "é/ü"}
	tests := []struct {
		filter string
		limit  int
		want   []string
		ok     bool
	}{
		{"a/+/c", 10, []string{"a/b/c", "a/x/c"}, true},
		{"a/#", 10, []string{"a", "a/b", "a/b/c", "a/x/c"}, true},
		{"+/b/c", 10, []string{"a/b/c", "b/b/c"}, true},
		{"#", 10, []string{"/x", "a", "a/b", "a/b/c", "a/x/c", "a0", "b/b/c", "é/ü"}, true},
		{"$SYS/#", 10, []string{"$SYS/load"}, true},
		{"é/+", 10, []string{"é/ü"}, true},
		{"a/+/c", 2, []string{"a/b/c", "a/x/c"}, true},
		{"a/#", 3, nil, false},
		{"z/+", 10, nil, true},
	}
	for _, tt := range tests {
		got, ok := Expand(names, tt.filter, tt.limit)
		if ok != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("Expand(%q, %d) = %q %v, want %q %v", tt.filter, tt.limit, got, ok, tt.want, tt.ok)
		}
	}
}

func TestShareProbe(t *testing.T) {
	if got, want := ShareProbe("subscriber-0"), "clients/subscriber-0/share-probe"; got != want {
		t.Errorf("ShareProbe = %q, want %q", got, want)
	}
	tests := []struct {
		name string
		want bool
	}{
		{"clients/subscriber-0/share-probe", true},
		{"clients/a/b/share-probe", true},
		{"clients//share-probe", false},
		{"clients/subscriber-0/status", false},
		{"living/clients/x/share-probe", false},
		{"clients/x/share-probe/more", false},
	}
	for _, tt := range tests {
		if got := IsShareProbe(tt.name); got != tt.want {
			t.Errorf("IsShareProbe(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
