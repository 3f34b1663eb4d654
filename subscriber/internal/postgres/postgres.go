// Package postgres is the PostgreSQL Store (pgx), for deployments where
// several subscribers share one database.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// Store is a store.Store on a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

// Open connects to url and creates or migrates the schema.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.MaxConns = 8
	// Inserts into messages take turns (orderTrigger): a member that stops
	// answering inside its insert transaction (frozen, or cut off without
	// its connection closing) would hold up every member's commits until
	// the server's TCP keepalive noticed, hours by default. A transaction
	// of this program is never idle for more than a round trip, so the
	// server may end one that is idle for 10s. A value in the URL wins.
	if _, ok := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !ok {
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "10s"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgresql: %w", err)
	}
	if err := migrate(ctx, pool, migrations); err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return &Store{pool: pool}, nil
}

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgresql: %w", err)
	}
	return nil
}

const insert = `INSERT INTO messages
	(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id, batch_key)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`

// topicsLock is the advisory lock between Insert (shared) and the removal
// of topic names in DeleteBefore (exclusive): a name is only removed while
// no Insert that may have found it present is uncommitted.
const topicsLock = 0x746f7069 // "topi"

// Insert stores msgs in one transaction, sent as one batch.
func (s *Store) Insert(ctx context.Context, msgs []store.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	// Sorted, so that concurrent subscribers adding the same new names
	// take their locks in one order.
	names := make([]string, len(msgs))
	for i, m := range msgs {
		names[i] = m.Topic
	}
	slices.Sort(names)
	names = slices.Compact(names)
	ids := make([]int64, len(msgs))
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var b pgx.Batch
		b.Queue(`SELECT pg_advisory_xact_lock_shared($1)`, topicsLock)
		b.Queue(`INSERT INTO topics (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, names)
		for i, m := range msgs {
			payload := m.Payload
			if payload == nil {
				payload = []byte{}
			}
			b.Queue(insert, m.Topic, payload, int16(m.QoS), m.Retained, m.Duplicate,
				m.ReceivedAt, m.ClientID, int32(m.PacketID), m.BatchKey).QueryRow(func(row pgx.Row) error {
				return row.Scan(&ids[i])
			})
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return fmt.Errorf("insert %d messages: %w", len(msgs), err)
	}
	for i := range msgs {
		msgs[i].ID = ids[i]
	}
	return nil
}

const columns = "id, topic, payload, qos, retained, duplicate, received_at, client_id, packet_id, batch_key"

func scan(row pgx.Row) (store.Message, error) {
	var m store.Message
	var qos int16
	var packetID int32
	if err := row.Scan(&m.ID, &m.Topic, &m.Payload, &qos, &m.Retained, &m.Duplicate, &m.ReceivedAt, &m.ClientID, &packetID, &m.BatchKey); err != nil {
		return m, err
	}
	m.QoS, m.PacketID = byte(qos), uint16(packetID)
	m.ReceivedAt = m.ReceivedAt.UTC()
	if m.Payload == nil {
		m.Payload = []byte{}
	}
	return m, nil
}

// maxExpand is the most topic names a wildcard filter is expanded to. Up
// to it, List reads the newest ids of each name through messages_topic_id
// (at most Limit index entries a name); above it, so many topics match
// that walking the rows newest first meets Limit matches soon.
const maxExpand = 200

// List returns messages matching q, newest first.
func (s *Store) List(ctx context.Context, q store.Query) ([]store.Message, error) {
	var where []string
	var args []any
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	var names []string
	expanded := false
	switch {
	case q.Filter == "":
	case !strings.ContainsAny(q.Filter, "+#"):
		arg("topic = ?", q.Filter)
	default:
		if q.Filter != "#" { // matches nearly every row: the walk is best
			var err error
			if names, expanded, err = s.expand(ctx, q.Filter); err != nil {
				return nil, fmt.Errorf("list messages: %w", err)
			}
		}
		if expanded {
			if len(names) == 0 {
				return []store.Message{}, nil
			}
			where = append(where, "topic = t.name") // t: the names, below
		} else {
			arg("topic ~ ?", topic.Regexp(q.Filter))
		}
	}
	if !q.Since.IsZero() {
		arg("received_at >= ?", q.Since)
	}
	if !q.Until.IsZero() {
		arg("received_at < ?", q.Until)
	}
	if q.Before > 0 {
		arg("id <= ?", q.Before)
	}
	var query string
	if expanded {
		// The newest Limit ids of each name, merged; then their rows.
		args = append(args, q.Limit, names)
		limit, list := "$"+strconv.Itoa(len(args)-1), "$"+strconv.Itoa(len(args))
		query = "SELECT " + columns + " FROM messages WHERE id IN (SELECT n.id FROM unnest(" + list + "::text[]) AS t(name)" +
			" CROSS JOIN LATERAL (SELECT id FROM messages WHERE " + strings.Join(where, " AND ") +
			" ORDER BY id DESC LIMIT " + limit + ") AS n ORDER BY n.id DESC LIMIT " + limit + ") ORDER BY id DESC"
	} else {
		query = "SELECT " + columns + " FROM messages"
		if len(where) > 0 {
			query += " WHERE " + strings.Join(where, " AND ")
		}
		args = append(args, q.Limit)
		query += " ORDER BY id DESC LIMIT $" + strconv.Itoa(len(args))
	}
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	defer rows.Close()
	msgs := []store.Message{}
	for rows.Next() {
		m, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list messages: %w", err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	return msgs, nil
}

// expand returns the stored topic names filter matches, or ok false when
// there are more than maxExpand.
func (s *Store) expand(ctx context.Context, filter string) (names []string, ok bool, err error) {
	lo, hi, bounded := topic.Range(topic.Prefix(filter))
	query := `SELECT name FROM topics WHERE name >= $1 AND name ~ $2`
	args := []any{lo, topic.Regexp(filter), maxExpand + 1}
	if bounded {
		query += ` AND name < $4`
		args = append(args, hi)
	}
	rows, err := s.pool.Query(ctx, query+` LIMIT $3`, args...)
	if err != nil {
		return nil, false, fmt.Errorf("expand %s: %w", filter, err)
	}
	if names, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, false, fmt.Errorf("expand %s: %w", filter, err)
	}
	if len(names) > maxExpand {
		return nil, false, nil
	}
	return names, true, nil
}

// LatestByPacketID finds the newest row of clientID with packetID.
func (s *Store) LatestByPacketID(ctx context.Context, clientID string, packetID uint16, max int) (store.Redelivery, error) {
	row := s.pool.QueryRow(ctx, "SELECT "+columns+` FROM messages
		WHERE client_id = $1 AND packet_id = $2 ORDER BY id DESC LIMIT 1`, clientID, int32(packetID))
	m, err := scan(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Redelivery{}, store.ErrNotFound
	}
	if err != nil {
		return store.Redelivery{}, fmt.Errorf("find packet %d of %s: %w", packetID, clientID, err)
	}
	var later int
	err = s.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM messages
		WHERE client_id = $1 AND id > $2 AND qos > 0 LIMIT $3) AS later`, clientID, m.ID, max).Scan(&later)
	if err != nil {
		return store.Redelivery{}, fmt.Errorf("count messages of %s after %d: %w", clientID, m.ID, err)
	}
	return store.Redelivery{Message: m, Later: later}, nil
}

// BatchIDs returns the ids of the rows stored with key, among those received
// since since (through messages_received_at).
func (s *Store) BatchIDs(ctx context.Context, key int64, since time.Time) ([]int64, error) {
	if key == 0 {
		return nil, store.ErrNoBatchKey
	}
	rows, err := s.pool.Query(ctx, `SELECT id FROM messages
		WHERE received_at >= $1 AND batch_key = $2 ORDER BY id`, since, key)
	if err != nil {
		return nil, fmt.Errorf("find batch %x: %w", uint64(key), err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("find batch %x: %w", uint64(key), err)
	}
	return ids, nil
}

// DeleteBefore deletes at most limit of the oldest rows received before
// cutoff, and the names of topics left without rows.
func (s *Store) DeleteBefore(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM messages WHERE id IN
			(SELECT id FROM messages WHERE received_at < $1 ORDER BY received_at LIMIT $2) RETURNING topic`, cutoff, limit)
		if err != nil {
			return err
		}
		gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		n = int64(len(gone))
		if n == 0 {
			return nil
		}
		slices.Sort(gone)
		gone = slices.Compact(gone)
		// Waits for the Inserts in flight, so that the next statement
		// sees their rows; Inserts after it wait for this commit and
		// then add the names again.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, topicsLock); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM topics WHERE name = ANY($1)
			AND NOT EXISTS (SELECT 1 FROM messages WHERE topic = topics.name)`, gone)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete messages before %s: %w", cutoff.Format(time.RFC3339), err)
	}
	return n, nil
}
