package topic

import (
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Prefix returns the literal part of filter that every matching topic name
// starts with: everything before the first wildcard level, without the '/'
// before a final '#' (because "a/#" also matches "a").
func Prefix(filter string) string {
	i := strings.IndexAny(filter, "+#")
	if i < 0 {
		return filter
	}
	p := filter[:i]
	if filter[i] == '#' {
		p = strings.TrimSuffix(p, "/")
	}
	return p
}

// Range returns bounds lo <= name < hi that every name starting with prefix
// satisfies, in byte order (which for UTF-8 is code point order). Both
// bounds are valid UTF-8 so they can be sent as text parameters. ok is false
// when there is no upper bound (the prefix is empty or all U+10FFFF).
func Range(prefix string) (lo, hi string, ok bool) {
	lo = prefix
	for prefix != "" {
		r, size := utf8.DecodeLastRuneInString(prefix)
		prefix = prefix[:len(prefix)-size]
		if r == utf8.MaxRune {
			continue
		}
		r++
		if r >= 0xD800 && r <= 0xDFFF {
			r = 0xE000
		}
		return lo, prefix + string(r), true
	}
	return lo, "", false
}

// Regexp translates a valid filter into a POSIX-style regular expression
// that matches exactly the names Match accepts. It uses only syntax common to
// PostgreSQL's advanced regular expressions and Go's RE2; with RE2, add the
// (?s) flag so that '.' also matches a newline as it does in PostgreSQL.
func Regexp(filter string) string {
	var b strings.Builder
	b.WriteString("^")
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		first := i == 0
		switch {
		case l == "#" && first:
			// Every name except those starting with '$'.
			b.WriteString("([^$].*)?")
		case l == "#":
			// "a/#" matches "a" and anything below it: the '/' was
			// written already, so make it and the rest optional.
			s := b.String()
			b.Reset()
			b.WriteString(strings.TrimSuffix(s, "/"))
			b.WriteString("(/.*)?")
		case l == "+" && first:
			b.WriteString("([^/$][^/]*)?")
		case l == "+":
			b.WriteString("[^/]*")
		default:
			b.WriteString(regexp.QuoteMeta(l))
		}
		if i < len(levels)-1 {
			b.WriteString("/")
		}
	}
	b.WriteString("$")
	return b.String()
}

// Expand returns the names of sorted (ascending byte order, as SQL's
// binary collation sorts) that filter matches, or ok false when there are
// more than limit of them. Only the names under the filter's literal prefix
// are tried.
func Expand(sorted []string, filter string, limit int) (names []string, ok bool) {
	lo, hi, bounded := Range(Prefix(filter))
	i, _ := slices.BinarySearch(sorted, lo)
	j := len(sorted)
	if bounded {
		j, _ = slices.BinarySearch(sorted, hi)
	}
	for _, n := range sorted[i:j] {
		if Match(filter, n) {
			if len(names) == limit {
				return nil, false
			}
			names = append(names, n)
		}
	}
	return names, true
}
