// Package topic implements MQTT 3.1.1 topic names and topic filters
// (section 4.7): validation, matching, and the translations the stores use
// to turn a filter into an indexable query.
package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest topic name or filter MQTT can carry: its length is
// a 16-bit prefix on the wire.
const MaxLen = 65535

// Errors returned by the validators; callers may match them with errors.Is.
var (
	ErrEmpty       = errors.New("is empty")
	ErrTooLong     = errors.New("is longer than 65535 bytes")
	ErrNotUTF8     = errors.New("is not valid UTF-8")
	ErrNull        = errors.New("contains U+0000")
	ErrWildcard    = errors.New("contains a wildcard (+ or #)")
	ErrMultiLevel  = errors.New("'#' must be the last character and alone in its level")
	ErrSingleLevel = errors.New("'+' must be alone in its level")
)

func validString(s string) error {
	switch {
	case s == "":
		return ErrEmpty
	case len(s) > MaxLen:
		return ErrTooLong
	case !utf8.ValidString(s):
		return ErrNotUTF8
	case strings.ContainsRune(s, 0):
		return ErrNull
	}
	return nil
}

// ValidateName reports whether s may be used as the topic name of a
// PUBLISH: non-empty UTF-8 without U+0000 and without wildcards.
func ValidateName(s string) error {
	if err := validString(s); err != nil {
		return err
	}
	if strings.ContainsAny(s, "+#") {
		return ErrWildcard
	}
	return nil
}

// ValidateFilter reports whether s is a valid topic filter: '#' only as the
// last level and alone in it, '+' alone in its level.
func ValidateFilter(s string) error {
	if err := validString(s); err != nil {
		return err
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return ErrMultiLevel
		}
		if strings.Contains(l, "+") && l != "+" {
			return ErrSingleLevel
		}
	}
	return nil
}

// Match reports whether the topic name matches the filter. Both are assumed
// valid. Filters starting with a wildcard do not match names starting with
// '$' (section 4.7.2).
func Match(filter, name string) bool {
	if name != "" && name[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		nl, nrest, nmore := strings.Cut(name, "/")
		if fl != "+" && fl != nl {
			return false
		}
		switch {
		case !fmore && !nmore:
			return true
		case !nmore:
			// "sport/#" matches "sport": the '#' also stands for the parent.
			return frest == "#"
		case !fmore:
			return false
		}
		filter, name = frest, nrest
	}
}

// Share returns the shared-subscription form of filter for group.
func Share(group, filter string) string {
	return fmt.Sprintf("$share/%s/%s", group, filter)
}

// The topic a member of a share group sends its probe to (see the ingest
// package): clients/<client id>/share-probe, beside its status topic.
const (
	shareProbePrefix = "clients/"
	shareProbeSuffix = "/share-probe"
)

// ShareProbe is the probe topic of clientID.
func ShareProbe(clientID string) string {
	return shareProbePrefix + clientID + shareProbeSuffix
}

// IsShareProbe reports whether name is the probe topic of some client.
func IsShareProbe(name string) bool {
	return len(name) > len(shareProbePrefix)+len(shareProbeSuffix) &&
		strings.HasPrefix(name, shareProbePrefix) && strings.HasSuffix(name, shareProbeSuffix)
}

// ValidateShareGroup reports whether s may name a shared subscription group.
func ValidateShareGroup(s string) error {
	if err := validString(s); err != nil {
		return err
	}
	if strings.ContainsAny(s, "/+#") {
		return errors.New("contains '/', '+' or '#'")
	}
	return nil
}
