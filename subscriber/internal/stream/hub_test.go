package stream

import (
	"errors"
	"slices"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

func msgs(topics ...string) []store.Message {
	out := make([]store.Message, len(topics))
	for i, t := range topics {
		out[i] = store.Message{ID: int64(i + 1), Topic: t, Payload: []byte(t)}
	}
	return out
}

// queued drains what s holds without blocking.
func queued(s *Subscription) []string {
	var got []string
	for {
		select {
		case m := <-s.C():
			got = append(got, m.Topic)
		default:
			return got
		}
	}
}

func TestHubFilters(t *testing.T) {
	published := msgs("a/b", "a/c", "a", "x/b", "$SYS/load", "a/b/c")
	tests := []struct {
		filter string
		want   []string
	}{
		{"#", []string{"a/b", "a/c", "a", "x/b", "a/b/c"}},
		{"a/#", []string{"a/b", "a/c", "a", "a/b/c"}},
		{"a/+", []string{"a/b", "a/c"}},
		{"+/b", []string{"a/b", "x/b"}},
		{"a/b", []string{"a/b"}},
		{"$SYS/#", []string{"$SYS/load"}},
		{"nothing/here", nil},
	}
	h := NewHub(16)
	subs := make([]*Subscription, len(tests))
	for i, tt := range tests {
		subs[i] = h.Subscribe(tt.filter)
		defer subs[i].Close()
	}
	h.Publish(published)
	for i, tt := range tests {
		if got := queued(subs[i]); !slices.Equal(got, tt.want) {
			t.Errorf("filter %q: got %q, want %q", tt.filter, got, tt.want)
		}
		if err := subs[i].Err(); err != nil {
			t.Errorf("filter %q: Err %v, want nil", tt.filter, err)
		}
	}
}

// A subscription gets only what is published after it subscribed.
func TestHubSubscribeLater(t *testing.T) {
	h := NewHub(4)
	h.Publish(msgs("early"))
	s := h.Subscribe("#")
	defer s.Close()
	h.Publish(msgs("late"))
	if got, want := queued(s), []string{"late"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A subscription whose buffer overflows ends with ErrDropped; the others,
// and messages it does not match, are not affected.
func TestHubDropsSlowSubscription(t *testing.T) {
	h := NewHub(2)
	slow := h.Subscribe("slow/#")
	defer slow.Close()
	other := h.Subscribe("other")
	defer other.Close()

	h.Publish(msgs("slow/1", "other", "slow/2"))
	if err := slow.Err(); err != nil {
		t.Fatalf("after 2 of 2 buffered: Err %v, want nil", err)
	}
	h.Publish(msgs("slow/3"))
	select {
	case <-slow.Done():
	default:
		t.Fatal("Done not closed after the buffer overflowed")
	}
	if err := slow.Err(); !errors.Is(err, ErrDropped) {
		t.Errorf("Err %v, want ErrDropped", err)
	}
	if got, want := queued(slow), []string{"slow/1", "slow/2"}; !slices.Equal(got, want) {
		t.Errorf("still queued %q, want %q", got, want)
	}
	h.Publish(msgs("slow/4", "other"))
	if got := queued(slow); got != nil {
		t.Errorf("a dropped subscription got %q, want nothing", got)
	}
	if got, want := queued(other), []string{"other", "other"}; !slices.Equal(got, want) {
		t.Errorf("other subscription got %q, want %q", got, want)
	}
	if err := other.Err(); err != nil {
		t.Errorf("other subscription Err %v, want nil", err)
	}
	if got := h.Dropped(); got != 1 {
		t.Errorf("Dropped() = %d, want 1", got)
	}
	if got := h.Clients(); got != 1 {
		t.Errorf("Clients() = %d, want 1", got)
	}
}

func TestHubClose(t *testing.T) {
	h := NewHub(2)
	s := h.Subscribe("#")
	defer s.Close()
	h.Close()
	if err := s.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("open subscription: Err %v, want ErrClosed", err)
	}
	late := h.Subscribe("#")
	defer late.Close()
	if err := late.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("subscription after Close: Err %v, want ErrClosed", err)
	}
	h.Publish(msgs("a"))
	if got := queued(late); got != nil {
		t.Errorf("after Close got %q, want nothing", got)
	}
}

func TestSubscriptionClose(t *testing.T) {
	h := NewHub(2)
	s := h.Subscribe("#")
	if got := h.Clients(); got != 1 {
		t.Fatalf("Clients() = %d, want 1", got)
	}
	s.Close()
	s.Close() // twice is fine
	if got := h.Clients(); got != 0 {
		t.Errorf("Clients() after Close = %d, want 0", got)
	}
	h.Publish(msgs("a", "b", "c"))
	if got := queued(s); got != nil {
		t.Errorf("closed subscription got %q, want nothing", got)
	}
	if err := s.Err(); err != nil {
		t.Errorf("Err after own Close = %v, want nil (not dropped)", err)
	}
}
