// Package postgres is the PostgreSQL Store (pgx), for deployments where
// several subscribers share one database.
package postgres

import (
	"context"
	"errors"
	"fmt"
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

// Insert stores msgs in one transaction, sent as one batch.
func (s *Store) Insert(ctx context.Context, msgs []store.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ids := make([]int64, len(msgs))
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var b pgx.Batch
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

// List returns messages matching q, newest first.
func (s *Store) List(ctx context.Context, q store.Query) ([]store.Message, error) {
	var where []string
	var args []any
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	switch {
	case q.Filter == "":
	case !strings.ContainsAny(q.Filter, "+#"):
		arg("topic = ?", q.Filter)
	default:
		// The range (in the column's "C" collation) lets the index narrow
		// the scan; the regular expression decides exactly.
		lo, hi, ok := topic.Range(topic.Prefix(q.Filter))
		if lo != "" {
			arg("topic >= ?", lo)
		}
		if ok {
			arg("topic < ?", hi)
		}
		arg("topic ~ ?", topic.Regexp(q.Filter))
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
	query := "SELECT " + columns + " FROM messages"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, q.Limit)
	query += " ORDER BY id DESC LIMIT $" + strconv.Itoa(len(args))
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

// BatchIDs returns the ids of the rows stored with key.
func (s *Store) BatchIDs(ctx context.Context, key int64) ([]int64, error) {
	if key == 0 {
		return nil, store.ErrNoBatchKey
	}
	rows, err := s.pool.Query(ctx, `SELECT id FROM messages WHERE batch_key = $1 ORDER BY id`, key)
	if err != nil {
		return nil, fmt.Errorf("find batch %x: %w", uint64(key), err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("find batch %x: %w", uint64(key), err)
	}
	return ids, nil
}

// DeleteBefore deletes at most limit of the oldest rows received before cutoff.
func (s *Store) DeleteBefore(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM messages WHERE id IN
		(SELECT id FROM messages WHERE received_at < $1 ORDER BY received_at LIMIT $2)`, cutoff, limit)
	if err != nil {
		return 0, fmt.Errorf("delete messages before %s: %w", cutoff.Format(time.RFC3339), err)
	}
	return tag.RowsAffected(), nil
}
