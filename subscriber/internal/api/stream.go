package api

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
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/stream"
)

// streamOptions tune GET /messages/stream; zero values take the defaults.
type streamOptions struct {
	// Heartbeat is the interval of the ": ping" comments that keep proxies
	// from closing an idle stream (15s).
	Heartbeat time.Duration
	// Retry is the reconnection delay suggested to clients (2s).
	Retry time.Duration
	// WriteTimeout bounds each write to the client (30s); a client that
	// takes longer is gone.
	WriteTimeout time.Duration
	// PageSize is how many rows one store read of the replay takes (500).
	PageSize int
	// PageBytes bounds the payload one store read of the replay takes
	// (readlimit.PageBytes); the first row is read whatever its size.
	PageBytes int64
	// Gate, when set, bounds how many replay batches are read and sent at
	// once, together with the other reads it gates. A stream that cannot
	// start its replay within the gate's wait is refused with 503.
	Gate *readlimit.Gate
}

func (o streamOptions) withDefaults() streamOptions {
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

// handleStream serves GET /messages/stream?topic=<filter> as Server-Sent
// Events. With a Last-Event-ID header or ?after=<id> (the header wins: a
// reconnecting browser sends both) it first replays the stored messages
// after that id, oldest first, then follows hub. It subscribes before it
// reads the store and skips live messages the replay already sent, so
// there is neither a gap nor a repeat between the two: what the hub gave
// out before the subscription was visible to the replay's reads, and what
// it gives out after arrives live (see stream.Hub.Publish for what the
// feeder of the hub must ensure).
func handleStream(log *slog.Logger, st Lister, hub *stream.Hub, opt streamOptions) http.HandlerFunc {
	opt = opt.withDefaults()
	return func(w http.ResponseWriter, r *http.Request) {
		filter, err := filterParam(r.URL.Query())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		after, replaying, err := resumeFrom(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}

		sub := hub.Subscribe(filter)
		defer sub.Close()
		s := &sse{w: w, rc: http.NewResponseController(w), timeout: opt.WriteTimeout, last: after}
		var rp *replay
		if replaying {
			// The turn is held until the first batch is sent, and the
			// batch is read before answering, so that a busy or failing
			// store is a proper error status rather than a cut stream.
			release, err := acquire(r.Context(), opt.Gate, false)
			if err != nil {
				writeError(w, r, log, err)
				return
			}
			defer release()
			rp = &replay{st: st, gate: opt.Gate, q: store.Query{Filter: filter, Limit: opt.PageSize, MaxBytes: opt.PageBytes, Oldest: true}}
			if s.last, err = rp.start(r.Context(), after); err != nil {
				log.Error("stream replay", "filter", filter, "after", after, "err", err)
				writeError(w, r, log, &statusError{http.StatusServiceUnavailable, "the stored messages could not be read; retry later"})
				return
			}
			if s.last != after {
				log.Info("stream resume id is newer than every stored message; replaying from the start", "filter", filter, "after", after)
			}
			rp.held = release
		}

		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(&s.buf, "retry: %d\n\n", opt.Retry.Milliseconds())
		if err := s.flush(); err != nil {
			log.Debug("stream client gone", "err", err)
			return
		}
		log.Debug("stream opened", "filter", filter, "after", after, "replay", replaying)
		err = s.serve(r.Context(), rp, sub, opt.Heartbeat)
		switch {
		case errors.Is(err, stream.ErrDropped):
			log.Warn("stream client fell behind; ended it, it resumes from the store",
				"filter", filter, "last_id", s.last, "remote", r.RemoteAddr)
		case errors.Is(err, stream.ErrClosed), r.Context().Err() != nil:
			log.Debug("stream closed", "filter", filter, "last_id", s.last, "reason", err)
		default:
			log.Info("stream ended", "filter", filter, "last_id", s.last, "err", err)
		}
	}
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
		return 0, false, &paramError{name, fmt.Sprintf("%q is not a message id, a whole number >= 0", v)}
	}
	return after, true, nil
}

// replay reads the stored messages that follow a position, oldest first,
// in batches of at most a page of rows and bytes, each in a turn of the
// gate: memory stays at one batch however long the client was away. It
// reads on until a batch ends short of its bounds; by then it has read
// every message committed before that read, and what comes later the hub
// delivers.
type replay struct {
	st    Lister
	gate  *readlimit.Gate
	q     store.Query     // q.After is the position of the next read
	batch []store.Message // read, not yet sent
	done  bool            // the last read ended short of its bounds
	held  func()          // the turn the first batch was read in
}

// start reads the first batch after after and returns the position the
// replay really starts from. Ids are never reused and retention deletes
// the oldest first, so a position above every stored id came from another
// database (the store was replaced while the client kept its
// Last-Event-ID): the replay then starts from the beginning rather than
// skip every new message up to that id.
func (rp *replay) start(ctx context.Context, after int64) (int64, error) {
	if err := rp.read(ctx, after); err != nil || len(rp.batch) > 0 || after == 0 {
		return after, err
	}
	newest, err := rp.st.List(ctx, store.Query{Limit: 1})
	if err != nil || len(newest) > 0 && newest[0].ID >= after {
		return after, err
	}
	return 0, rp.read(ctx, 0)
}

func (rp *replay) read(ctx context.Context, after int64) error {
	rp.q.After = after
	rows, err := rp.st.List(ctx, rp.q)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	rp.batch, rp.done = rows, !store.Full(rp.q, rows)
	return nil
}

// sse writes the event stream of one client.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	last    int64 // the id sent last: nothing at or below it is sent again
	buf     bytes.Buffer
}

// serve sends the replay (when rp is not nil), then what sub delivers
// until the client leaves (ctx) or the hub ends sub.
func (s *sse) serve(ctx context.Context, rp *replay, sub *stream.Subscription, heartbeat time.Duration) error {
	if rp != nil {
		if err := s.replay(ctx, rp, sub); err != nil {
			return err
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

// replay sends the batches of rp: the first one in the turn it was read
// in, each later one read in a turn of its own, waited for as long as the
// client stays (the stream has answered; a refusal could only end it).
func (s *sse) replay(ctx context.Context, rp *replay, sub *stream.Subscription) error {
	release := rp.held
	for {
		for _, m := range rp.batch {
			if err := s.event(m); err != nil {
				release()
				return err
			}
		}
		err := s.flush()
		release()
		switch {
		case err != nil:
			return err
		case rp.done:
			return nil
		}
		if err := sub.Err(); err != nil {
			return s.end(err)
		}
		if release, err = acquire(ctx, rp.gate, true); err != nil {
			return err
		}
		if err := rp.read(ctx, s.last); err != nil {
			release()
			return err
		}
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
	data, err := json.Marshal(NewMessage(m))
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
