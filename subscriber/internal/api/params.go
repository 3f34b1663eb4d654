package api

import (
	"net/url"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// one returns the value of the query parameter name, whether it was
// given, and an error when it was given more than once.
func one(v url.Values, name string) (string, bool, error) {
	vs, ok := v[name]
	switch {
	case !ok:
		return "", false, nil
	case len(vs) > 1:
		return "", false, &paramError{name, "given more than once"}
	}
	return vs[0], true, nil
}

// filterParam reads topic, an MQTT filter: every topic ("#") when absent.
func filterParam(v url.Values) (string, error) {
	s, ok, err := one(v, "topic")
	if err != nil || !ok {
		return "#", err
	}
	if err := topic.ValidateFilter(s); err != nil {
		return "", &paramError{"topic", "not a valid MQTT topic filter: " + err.Error()}
	}
	return s, nil
}

// timeParams reads since (inclusive) and until (exclusive), RFC 3339; a
// missing one is the zero time. Until must be after since.
func timeParams(v url.Values) (since, until time.Time, err error) {
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &since}, {"until", &until}} {
		s, ok, err := one(v, p.name)
		if err != nil {
			return since, until, err
		}
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return since, until, &paramError{p.name, "want an RFC 3339 time like 2026-11-24T10:00:00Z"}
		}
		*p.dst = t
	}
	if !since.IsZero() && !until.IsZero() && !until.After(since) {
		return since, until, &paramError{"until", "must be after since"}
	}
	return since, until, nil
}
