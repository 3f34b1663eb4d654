package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/readlimit"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// Encoder turns a stored message into the value whose JSON is one element
// of GET /messages, so that both endpoints speak the same message.
type Encoder func(store.Message) any

// Options tune the handler; zero values take the defaults.
type Options struct {
	// Heartbeat is the interval of the ": ping" comments that keep proxies
	// from closing an idle stream (15s).
	Heartbeat time.Duration
	// Retry is the reconnection delay suggested to clients (2s).
	Retry time.Duration
	// WriteTimeout bounds each write to the client (30s); a client that
	// takes longer is gone.
	WriteTimeout time.Duration
	// PageSize is how many rows one store query of the replay reads (500).
	PageSize int
	// PageBytes bounds the payload one store query of the replay reads
	// (readlimit.PageBytes); the first row is read whatever its size.
	PageBytes int64
	// Gate, when set, bounds how many replay batches are read and sent at
	// once, together with the other reads it gates. A stream that cannot
	// start its replay within the gate's wait is refused with 503.
	Gate *readlimit.Gate
}

func (o Options) withDefaults() Options {
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = 2 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.PageSize <= 0 {
		o.PageSize = 500
	}
	if o.PageBytes <= 0 {
		o.PageBytes = readlimit.PageBytes
	}
	return o
}

// maxBurst bounds how many queued events go out before one flush.
const maxBurst = 64

// Handler serves GET /messages/stream?topic=<filter> as Server-Sent Events.
// With a Last-Event-ID header or ?after=<id> (the header wins: a
// reconnecting browser sends both) it first replays the stored messages
// after that id, oldest first, then follows hub. It subscribes before it
// reads the store and skips live messages the replay already sent, so
// there is neither a gap nor a repeat between the two: what the hub gave
// out before the subscription was visible to the replay's reads, and what
// it gives out after arrives live (see Hub.Publish for what the feeder of
// the hub must ensure).
func Handler(log *slog.Logger, src Lister, hub *Hub, encode Encoder, opt Options) http.Handler {
	opt = opt.withDefaults()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As for GET /messages: no topic is every topic, an empty one is
		// an invalid filter.
		filter := "#"
		if q := r.URL.Query(); q.Has("topic") {
			filter = q.Get("topic")
		}
		if err := topic.ValidateFilter(filter); err != nil {
			problem(log, w, http.StatusBadRequest, "invalid topic filter", fmt.Sprintf("topic %q %v", filter, err))
			return
		}
		after, replaying, err := resumeFrom(r)
		if err != nil {
			problem(log, w, http.StatusBadRequest, "invalid resume position", err.Error())
			return
		}

		sub := hub.Subscribe(filter)
		defer sub.Close()
		s := &sse{w: w, rc: http.NewResponseController(w), encode: encode, timeout: opt.WriteTimeout, gate: opt.Gate}
		defer s.giveBack()
		var rp *replay
		if replaying {
			// The turn is held until the first batch is sent.
			if s.held, err = acquire(r.Context(), opt.Gate, false); err != nil {
				if errors.Is(err, readlimit.ErrBusy) {
					log.Warn("read refused", "method", r.Method, "path", r.URL.Path, "err", err)
					w.Header().Set("Retry-After", strconv.Itoa(readlimit.RetryAfter))
					problem(log, w, http.StatusServiceUnavailable, "too many reads", err.Error())
				}
				return
			}
			rp = &replay{src: src, filter: filter, page: opt.PageSize, maxBytes: opt.PageBytes}
			// Read the first batch before answering, so that a store
			// failure is a proper error status rather than a cut stream.
			from, err := rp.plan(r.Context(), after)
			if err != nil {
				log.Error("stream replay", "filter", filter, "after", after, "err", err)
				problem(log, w, http.StatusServiceUnavailable, "store unavailable", "the stored messages could not be read; retry later")
				return
			}
			if from != after {
				log.Info("stream resume id is newer than every stored message; replaying from the start",
					"filter", filter, "after", after)
				after = from
			}
		}
		s.last = after

		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
		w.WriteHeader(http.StatusOK)

		if err := s.begin(opt.Retry); err != nil {
			log.Debug("stream client gone", "err", err)
			return
		}
		log.Debug("stream opened", "filter", filter, "after", after, "replay", replaying)
		err = s.serve(r.Context(), rp, sub, opt.Heartbeat)
		switch {
		case errors.Is(err, ErrDropped):
			log.Warn("stream client fell behind; ended it, it resumes from the store",
				"filter", filter, "last_id", s.last, "remote", r.RemoteAddr)
		case errors.Is(err, ErrClosed), r.Context().Err() != nil:
			log.Debug("stream closed", "filter", filter, "last_id", s.last, "reason", err)
		default:
			log.Info("stream ended", "filter", filter, "last_id", s.last, "err", err)
		}
	})
}

// resumeFrom reads Last-Event-ID, else ?after. replaying is false when
// neither is given: the stream is live only.
func resumeFrom(r *http.Request) (after int64, replaying bool, err error) {
	name, v := "Last-Event-ID", strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	if v == "" {
		if !r.URL.Query().Has("after") {
			return 0, false, nil
		}
		name, v = "after", r.URL.Query().Get("after")
	}
	after, err = strconv.ParseInt(v, 10, 64)
	if err != nil || after < 0 {
		return 0, false, fmt.Errorf("%s %q: want a message id, a whole number >= 0", name, v)
	}
	return after, true, nil
}

// sse writes the event stream of one client.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	encode  Encoder
	timeout time.Duration
	last    int64 // the id sent last: nothing at or below it is sent again
	buf     bytes.Buffer
	gate    *readlimit.Gate
	held    func() // gives back the turn the first replay batch was read in; nil once given
}

func (s *sse) begin(retry time.Duration) error {
	fmt.Fprintf(&s.buf, "retry: %d\n\n", retry.Milliseconds())
	return s.flush()
}

// serve replays rp (when not nil), then sends what sub delivers until the
// client leaves (ctx) or the hub ends sub.
func (s *sse) serve(ctx context.Context, rp *replay, sub *Subscription, heartbeat time.Duration) error {
	for rp != nil {
		more, err := s.replayBatch(ctx, rp)
		if err != nil {
			return err
		}
		if !more {
			break
		}
		if err := sub.Err(); err != nil {
			return s.end(err)
		}
	}

	ping := time.NewTicker(heartbeat)
	defer ping.Stop()
	for {
		// An ended subscription wins over what it still holds: the
		// client resumes from the store anyway.
		if err := sub.Err(); err != nil {
			return s.end(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.Done():
			return s.end(sub.Err())
		case <-ping.C:
			s.buf.WriteString(": ping\n\n")
		case m := <-sub.C():
			// Send what is queued with one flush rather than one each.
			for n := 0; ; n++ {
				if err := s.event(m); err != nil {
					return err
				}
				if n == maxBurst {
					break
				}
				var ok bool
				select {
				case m, ok = <-sub.C():
				default:
				}
				if !ok {
					break
				}
			}
		}
		if err := s.flush(); err != nil {
			return err
		}
	}
}

// replayBatch reads and sends the next batch of rp within a turn of the
// gate: the first one plan read in the turn held since, the others each in
// a turn of its own, waited for as long as the client stays (the stream
// has answered; a refusal could only end it). more is false at the end of
// the replay.
func (s *sse) replayBatch(ctx context.Context, rp *replay) (more bool, err error) {
	release := s.held
	s.held = nil
	if release == nil {
		if rp.finished() {
			return false, nil // no turn to wait for
		}
		if release, err = acquire(ctx, s.gate, true); err != nil {
			return false, err
		}
	}
	defer release()
	batch, err := rp.next(ctx, s.last)
	if err != nil {
		return false, fmt.Errorf("replay: %w", err)
	}
	if batch == nil {
		return false, nil
	}
	for _, m := range batch {
		if err := s.event(m); err != nil {
			return false, err
		}
	}
	return true, s.flush()
}

// giveBack gives back the turn held, if any.
func (s *sse) giveBack() {
	if s.held != nil {
		s.held()
		s.held = nil
	}
}

// acquire takes a turn of gate (none to take when gate is nil), waiting
// while ctx lasts when await is set, else at most the gate's wait.
func acquire(ctx context.Context, gate *readlimit.Gate, await bool) (release func(), err error) {
	switch {
	case gate == nil:
		return func() {}, nil
	case await:
		return gate.Await(ctx)
	}
	return gate.Acquire(ctx)
}

// event queues m unless an earlier event already carried it.
func (s *sse) event(m store.Message) error {
	if m.ID <= s.last {
		return nil
	}
	data, err := json.Marshal(s.encode(m))
	if err != nil {
		return fmt.Errorf("encode message %d: %w", m.ID, err)
	}
	fmt.Fprintf(&s.buf, "id: %d\nevent: message\ndata: %s\n\n", m.ID, data)
	s.last = m.ID
	if s.buf.Len() >= 64<<10 {
		return s.flush()
	}
	return nil
}

// end tells the client why the stream stops and that it should resume
// (which EventSource does by itself, after the retry delay, with
// Last-Event-ID), then returns why.
func (s *sse) end(why error) error {
	data, err := json.Marshal(map[string]string{"reason": why.Error(), "last_event_id": strconv.FormatInt(s.last, 10)})
	if err != nil {
		return fmt.Errorf("encode end: %w", err)
	}
	fmt.Fprintf(&s.buf, "event: reconnect\ndata: %s\n\n", data)
	if err := s.flush(); err != nil {
		return err
	}
	return why
}

// flush writes what is queued and pushes it to the client, bounded by the
// write timeout. The server's own WriteTimeout would end a long stream, so
// each write gets its own deadline instead.
func (s *sse) flush() error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("set write deadline: %w", err)
	}
	if s.buf.Len() > 0 {
		if _, err := s.w.Write(s.buf.Bytes()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		s.buf.Reset()
	}
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

// problem writes an RFC 9457 problem detail.
func problem(log *slog.Logger, w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(map[string]any{"title": title, "status": status, "detail": detail}); err != nil {
		log.Debug("write problem detail", "err", err)
	}
}
