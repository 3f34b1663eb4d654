// Package sqlite is the embedded Store: one SQLite file in WAL mode, written
// through a single connection and read through a small pool.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// matchFunc is the SQL name of topic.Match(filter, topic).
const matchFunc = "mqtt_match"

var (
	registerOnce sync.Once
	errRegister  error
)

func register() error {
	registerOnce.Do(func() {
		errRegister = sqlite.RegisterDeterministicScalarFunction(matchFunc, 2,
			func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
				f, ok1 := args[0].(string)
				n, ok2 := args[1].(string)
				if !ok1 || !ok2 {
					return nil, errors.New("mqtt_match: want two text arguments")
				}
				return topic.Match(f, n), nil
			})
	})
	return errRegister
}

// Store is a store.Store on one SQLite file.
type Store struct {
	w *sql.DB // the one writer connection
	r *sql.DB // readers (WAL lets them run beside the writer)
}

var _ store.Store = (*Store)(nil)

// Open opens or creates the database file at path and migrates its schema.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := register(); err != nil {
		return nil, fmt.Errorf("register sql functions: %w", err)
	}
	q := url.Values{}
	// synchronous=FULL: a commit is on disk before the broker is told, so
	// an acknowledged message survives a power loss, not only a crash.
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(ON)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	dsn := path + "?" + q.Encode()
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	s := &Store{w: w}
	if err := migrate(ctx, w, migrations); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	s.r = r
	return s, nil
}

// Close closes both pools.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

// Ping checks that the file can be read.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1 FROM schema_version").Scan(&one); err != nil {
		return fmt.Errorf("ping sqlite: %w", err)
	}
	return nil
}

// Insert stores msgs in one transaction.
func (s *Store) Insert(ctx context.Context, msgs []store.Message) (err error) {
	if len(msgs) == 0 {
		return nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreDone(tx.Rollback()))
		}
	}()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO messages
		(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id, batch_key)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer stmt.Close()
	ids := make([]int64, len(msgs))
	for i, m := range msgs {
		res, err := stmt.ExecContext(ctx, m.Topic, nonNil(m.Payload), int(m.QoS), m.Retained, m.Duplicate,
			m.ReceivedAt.UnixMicro(), m.ClientID, int(m.PacketID), m.BatchKey)
		if err != nil {
			return fmt.Errorf("insert %s: %w", m.Topic, err)
		}
		if ids[i], err = res.LastInsertId(); err != nil {
			return fmt.Errorf("insert %s: %w", m.Topic, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	for i := range msgs {
		msgs[i].ID = ids[i]
	}
	return nil
}

func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}

// nonNil keeps an empty payload an empty BLOB rather than NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

const columns = "id, topic, payload, qos, retained, duplicate, received_at, client_id, packet_id, batch_key"

type scanner interface{ Scan(...any) error }

func scan(row scanner) (store.Message, error) {
	var m store.Message
	var qos, packetID int
	var at int64
	if err := row.Scan(&m.ID, &m.Topic, &m.Payload, &qos, &m.Retained, &m.Duplicate, &at, &m.ClientID, &packetID, &m.BatchKey); err != nil {
		return m, err
	}
	m.QoS, m.PacketID = byte(qos), uint16(packetID)
	m.ReceivedAt = time.UnixMicro(at).UTC()
	if m.Payload == nil {
		m.Payload = []byte{}
	}
	return m, nil
}

// List returns messages matching q, newest first.
func (s *Store) List(ctx context.Context, q store.Query) ([]store.Message, error) {
	var where []string
	var args []any
	switch {
	case q.Filter == "":
	case !strings.ContainsAny(q.Filter, "+#"):
		where, args = append(where, "topic = ?"), append(args, q.Filter)
	default:
		// The range lets the topic index narrow the scan; the function
		// decides exactly.
		lo, hi, ok := topic.Range(topic.Prefix(q.Filter))
		if lo != "" {
			where, args = append(where, "topic >= ?"), append(args, lo)
		}
		if ok {
			where, args = append(where, "topic < ?"), append(args, hi)
		}
		where, args = append(where, matchFunc+"(?, topic)"), append(args, q.Filter)
	}
	if !q.Since.IsZero() {
		where, args = append(where, "received_at >= ?"), append(args, q.Since.UnixMicro())
	}
	if !q.Until.IsZero() {
		where, args = append(where, "received_at < ?"), append(args, q.Until.UnixMicro())
	}
	if q.Before > 0 {
		where, args = append(where, "id <= ?"), append(args, q.Before)
	}
	query := "SELECT " + columns + " FROM messages"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY id DESC LIMIT ?"
	args = append(args, q.Limit)
	rows, err := s.r.QueryContext(ctx, query, args...)
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

// LatestByPacketID finds the newest row of clientID with packetID. It reads
// through the writer connection so that it sees every committed batch.
func (s *Store) LatestByPacketID(ctx context.Context, clientID string, packetID uint16, max int) (store.Redelivery, error) {
	row := s.w.QueryRowContext(ctx, "SELECT "+columns+` FROM messages
		WHERE client_id = ? AND packet_id = ? ORDER BY id DESC LIMIT 1`, clientID, int(packetID))
	m, err := scan(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Redelivery{}, store.ErrNotFound
	}
	if err != nil {
		return store.Redelivery{}, fmt.Errorf("find packet %d of %s: %w", packetID, clientID, err)
	}
	var later int
	err = s.w.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM messages
		WHERE client_id = ? AND id > ? AND qos > 0 LIMIT ?)`, clientID, m.ID, max).Scan(&later)
	if err != nil {
		return store.Redelivery{}, fmt.Errorf("count messages of %s after %d: %w", clientID, m.ID, err)
	}
	return store.Redelivery{Message: m, Later: later}, nil
}

// BatchIDs returns the ids of the rows stored with key. It reads through the
// writer connection so that it sees every committed batch.
func (s *Store) BatchIDs(ctx context.Context, key int64) ([]int64, error) {
	if key == 0 {
		return nil, store.ErrNoBatchKey
	}
	rows, err := s.w.QueryContext(ctx, `SELECT id FROM messages WHERE batch_key = ? ORDER BY id`, key)
	if err != nil {
		return nil, fmt.Errorf("find batch %x: %w", uint64(key), err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("find batch %x: %w", uint64(key), err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find batch %x: %w", uint64(key), err)
	}
	return ids, nil
}

// DeleteBefore deletes at most limit of the oldest rows received before cutoff.
func (s *Store) DeleteBefore(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM messages WHERE id IN
		(SELECT id FROM messages WHERE received_at < ? ORDER BY received_at LIMIT ?)`, cutoff.UnixMicro(), limit)
	if err != nil {
		return 0, fmt.Errorf("delete messages before %s: %w", cutoff.Format(time.RFC3339), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete messages before %s: %w", cutoff.Format(time.RFC3339), err)
	}
	return n, nil
}
