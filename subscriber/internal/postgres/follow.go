package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// channel is where every commit into messages is announced (orderTrigger).
const channel = "messages"

const (
	// followPage is how many rows one read of the follower takes.
	followPage = 500
	// followIdle is the longest the follower waits for a notification
	// before it reads anyway: a half-open connection answers nothing, and
	// only a query with a deadline finds out.
	followIdle = 15 * time.Second
	// followQueryTimeout bounds each read of the follower.
	followQueryTimeout = 10 * time.Second
)

// querier is a pool or a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// listAfter returns at most limit messages with ids above after, oldest
// first, read through q (the follower's own connection). Ids follow commit
// order (orderTrigger): rows committed later never appear below the newest
// id a reader has seen, so reading on from the last id returned misses
// nothing.
func listAfter(ctx context.Context, q querier, after int64, limit int) ([]store.Message, error) {
	rows, err := q.Query(ctx, "SELECT "+columns+" FROM messages WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
	if err != nil {
		return nil, fmt.Errorf("list messages after %d: %w", after, err)
	}
	msgs, err := pgx.CollectRows(rows, scanMessage)
	if err != nil {
		return nil, fmt.Errorf("list messages after %d: %w", after, err)
	}
	return msgs, nil
}

// LastID is the newest stored id, 0 when there is none: the position from
// which to Follow what is stored from now on.
func (s *Store) LastID(ctx context.Context) (int64, error) {
	return lastID(ctx, s.pool)
}

func lastID(ctx context.Context, q querier) (int64, error) {
	rows, err := q.Query(ctx, "SELECT coalesce(max(id), 0) FROM messages")
	if err != nil {
		return 0, fmt.Errorf("read the newest message id: %w", err)
	}
	id, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, fmt.Errorf("read the newest message id: %w", err)
	}
	return id, nil
}

// Follow hands deliver every message stored after id after, by whichever
// subscriber stored it, in id order and each once, until ctx ends. It is how
// the members of a share group each stream every arrival.
//
// It holds a connection of its own, LISTENs on the commit notifications and
// reads the new rows after each; a notification only says "read again", so
// those that arrive while it reads cost an empty read at most. When the
// connection drops it connects again, with backoff, and carries on from the
// last id it delivered. deliver is called from one goroutine; it must not
// block for long, as the follower reads nothing meanwhile.
//
// While watched returns false (no stream is open), the follower reads only
// the newest id and moves on to it, without reading or delivering the rows:
// reading back every commit, for nobody, cost the server 1.55 µs of CPU a
// message in commits of 2,000, and this process about 1 µs (nil: always
// watched). See readAll for why a stream opened meanwhile misses nothing.
func (s *Store) Follow(ctx context.Context, log *slog.Logger, after int64, deliver func([]store.Message), watched func() bool) {
	cfg := s.pool.Config().ConnConfig.Copy()
	name := cfg.RuntimeParams["application_name"]
	if name == "" {
		name = "subscriber"
	}
	// Named, so that pg_stat_activity tells it from the pool's connections.
	cfg.RuntimeParams["application_name"] = name + " follower"

	backoff := 100 * time.Millisecond
	failing := false
	for ctx.Err() == nil {
		err := follow(ctx, cfg, &after, deliver, watched, func() {
			backoff = 100 * time.Millisecond
			if failing {
				failing = false
				log.Info("stream follower reconnected to postgresql", "after_id", after)
			}
		})
		if ctx.Err() != nil {
			return
		}
		failing = true
		log.Warn("stream follower lost postgresql; live streams wait until it is back",
			"after_id", after, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// follow runs one connection: LISTEN, then read after every notification
// (and every followIdle) until an error or ctx ends. LISTEN comes before the
// first read, so a commit is either seen by that read or notified after it.
// up is called once the connection has listened and read.
func follow(ctx context.Context, cfg *pgx.ConnConfig, after *int64, deliver func([]store.Message), watched func() bool, up func()) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx) // a connection that failed has nothing left to say
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	for first := true; ; first = false {
		if err := readAll(ctx, conn, after, deliver, watched); err != nil {
			return err
		}
		if first {
			up()
		}
		wait, cancel := context.WithTimeout(ctx, followIdle)
		_, err := conn.WaitForNotification(wait)
		cancel()
		if err != nil && (ctx.Err() != nil || !pgconn.Timeout(err)) {
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

// readAll delivers the rows after *after, a page at a time, until a page
// comes back short.
//
// Unwatched, it skips to the newest id instead, and only if still unwatched
// once that id is read: a stream that subscribed before that second look
// gets the rows delivered; one that subscribes after it replays from the
// store, which by then holds every row up to that id (ids are in commit
// order), and takes the rows above it live from the next read.
func readAll(ctx context.Context, conn *pgx.Conn, after *int64, deliver func([]store.Message), watched func() bool) error {
	if watched != nil && !watched() {
		rctx, cancel := context.WithTimeout(ctx, followQueryTimeout)
		last, err := lastID(rctx, conn)
		cancel()
		if err != nil {
			return err
		}
		if !watched() {
			*after = max(*after, last)
			return nil
		}
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, followQueryTimeout)
		msgs, err := listAfter(rctx, conn, *after, followPage)
		cancel()
		if err != nil {
			return err
		}
		if len(msgs) > 0 {
			deliver(msgs)
			*after = msgs[len(msgs)-1].ID
		}
		if len(msgs) < followPage {
			return nil
		}
	}
}
