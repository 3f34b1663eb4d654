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
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/topic"
)

// Store is a store.Store on a PostgreSQL database.
type Store struct {
	pool   *pgxpool.Pool
	series seriesCache
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

// Ping checks that the database answers and has its schema. A schema
// found missing (the database was dropped and created again) is created
// again, and Ping fails this time.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	err := s.pool.QueryRow(ctx, `SELECT 1 FROM schema_version`).Scan(&one)
	if err := s.recover(ctx, err); err != nil {
		return fmt.Errorf("ping postgresql: %w", err)
	}
	return nil
}

// undefinedTable is the SQLSTATE of a missing relation.
const undefinedTable = "42P01"

// recover sets the schema up again when err says it is missing, and then
// returns store.ErrReset, wrapped; other errors are returned as they are.
func (s *Store) recover(ctx context.Context, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != undefinedTable {
		return err
	}
	s.series.reset() // the ids were of the old tables
	if merr := migrate(ctx, s.pool, migrations); merr != nil {
		return fmt.Errorf("schema missing (%w); creating it again: %w", err, merr)
	}
	return fmt.Errorf("schema was missing and has been created again: %w", store.ErrReset)
}

// insertRows and the other statements of a commit take their rows as
// arrays, one a column, unnested in the select list: the arrays are read in
// step (PostgreSQL 10 and later), a row at a time. unnest in FROM instead
// (SELECT * FROM unnest($1, $2, ...)) first copies every row into a
// tuplestore: a fifth of the server's time in a commit of 2,000 messages
// (perf), and 15.7 to 17.7 µs of its CPU a message in make bench's drain
// against 20.6 to 20.9 (docs/performance.md).
const insertRows = `INSERT INTO messages
	(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id, batch_key)
	SELECT unnest($1::text[]), unnest($2::bytea[]), unnest($3::smallint[]), unnest($4::boolean[]), unnest($5::boolean[]),
		unnest($6::timestamptz[]), unnest($7::text[]), unnest($8::integer[]), unnest($9::bigint[]) RETURNING id`

// topicsLock is the advisory lock between Insert (shared) and the removal
// of topic names in DeleteBefore (exclusive): a name is only removed while
// no Insert that may have found it present is uncommitted.
const topicsLock = 0x746f7069 // "topi"

// Insert stores msgs in one transaction.
func (s *Store) Insert(ctx context.Context, msgs []store.Message) error {
	return s.Commit(ctx, &store.Commit{Messages: msgs})
}

// Commit stores c in one transaction: the messages in one batch of
// statements, then, as their ids are needed, their values, the counts of
// their topics and the session's records in a second one (with a round
// trip between the two for series never seen before).
func (s *Store) Commit(ctx context.Context, c *store.Commit) error {
	ids := make([]int64, len(c.Messages))
	vals := extract(c.Messages)
	var created found
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		pages, epoch, err := sessionPages(ctx, tx, c)
		if err != nil {
			return err
		}
		if err := insertMessages(ctx, tx, c.Messages, ids); err != nil {
			return err
		}
		var b pgx.Batch
		if created, err = s.queueValues(ctx, tx, &b, c.Messages, ids, vals); err != nil {
			return err
		}
		queueTopics(&b, c.Messages, ids)
		if c.ClientID != "" {
			queueSession(&b, c, ids, pages, epoch)
		}
		if b.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return s.recover(ctx, fmt.Errorf("commit %d messages: %w", len(c.Messages), err))
	}
	s.series.add(created)
	for i := range c.Messages {
		c.Messages[i].ID = ids[i]
	}
	return nil
}

// insertChunk is the most rows of one INSERT statement; a commit of the
// ingest holds at most 2000. Measured with BenchmarkInsertText500 (CPU per
// message, run alternately): one statement per row in a pipelined batch
// 5.9 µs, one statement of unnested arrays per 100 rows 3.2-3.5 µs, one for
// all 500 2.4-2.7 µs.
const insertChunk = 2000

// insertMessages inserts msgs with one statement per insertChunk rows,
// each row's columns passed as arrays, and writes their ids to ids.
//
// The ids come back through RETURNING, whose order SQL does not promise;
// they are sorted instead. The identity draws them in the order the rows
// are inserted, which is unnest's order, and messages_in_commit_order
// holds every other writer off until this transaction ends: the ids of
// one statement are increasing in the order of msgs.
func insertMessages(ctx context.Context, tx pgx.Tx, msgs []store.Message, ids []int64) error {
	if len(msgs) == 0 {
		return nil
	}
	// The names of the topics are added with their counts (queueTopics),
	// under this lock, taken in the same round trip as the first insert.
	var b pgx.Batch
	b.Queue(`SELECT pg_advisory_xact_lock_shared($1)`, topicsLock)
	n := min(len(msgs), insertChunk)
	var (
		topics, clients = make([]string, 0, n), make([]string, 0, n)
		payloads        = make([][]byte, 0, n)
		qos             = make([]int16, 0, n)
		retained, dup   = make([]bool, 0, n), make([]bool, 0, n)
		at              = make([]time.Time, 0, n)
		packets         = make([]int32, 0, n)
		keys            = make([]int64, 0, n)
	)
	for from := 0; from < len(msgs); from += insertChunk {
		chunk := msgs[from:min(from+insertChunk, len(msgs))]
		topics, clients, payloads, qos = topics[:0], clients[:0], payloads[:0], qos[:0]
		retained, dup, at, packets, keys = retained[:0], dup[:0], at[:0], packets[:0], keys[:0]
		for _, m := range chunk {
			payload := m.Payload
			if payload == nil {
				payload = []byte{}
			}
			topics, payloads, qos = append(topics, m.Topic), append(payloads, payload), append(qos, int16(m.QoS))
			retained, dup, at = append(retained, m.Retained), append(dup, m.Duplicate), append(at, m.ReceivedAt)
			clients, packets, keys = append(clients, m.ClientID), append(packets, int32(m.PacketID)), append(keys, m.BatchKey)
		}
		got := ids[from:from]
		b.Queue(insertRows, topics, payloads, qos, retained, dup, at, clients, packets, keys).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					return err
				}
				got = append(got, id)
			}
			return rows.Err()
		})
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return err
		}
		b = pgx.Batch{}
		if len(got) != len(chunk) {
			return fmt.Errorf("insert of %d rows returned %d ids", len(chunk), len(got))
		}
		slices.Sort(got)
	}
	return nil
}

// queueTopics queues the counts and the oldest and newest messages of the
// topics of msgs (whose ids are ids), adding the names not yet known. Rows
// are sorted by name, so that writers lock them in one order.
func queueTopics(b *pgx.Batch, msgs []store.Message, ids []int64) {
	if len(msgs) == 0 {
		return
	}
	type stat struct {
		n               int64
		firstID, lastID int64
		firstAt, lastAt time.Time
	}
	stats := map[string]*stat{}
	for i, m := range msgs {
		st := stats[m.Topic]
		if st == nil {
			st = &stat{firstID: ids[i], firstAt: m.ReceivedAt}
			stats[m.Topic] = st
		}
		st.n++
		st.lastID, st.lastAt = ids[i], m.ReceivedAt
	}
	names := make([]string, 0, len(stats))
	for name := range stats {
		names = append(names, name)
	}
	slices.Sort(names)
	counts, firstIDs, lastIDs := make([]int64, len(names)), make([]int64, len(names)), make([]int64, len(names))
	firstAts, lastAts := make([]time.Time, len(names)), make([]time.Time, len(names))
	for k, name := range names {
		st := stats[name]
		counts[k], firstIDs[k], firstAts[k], lastIDs[k], lastAts[k] = st.n, st.firstID, st.firstAt, st.lastID, st.lastAt
	}
	b.Queue(`INSERT INTO topics (name, count, first_id, first_at, last_id, last_at)
		SELECT unnest($1::text[]), unnest($2::bigint[]), unnest($3::bigint[]), unnest($4::timestamptz[]), unnest($5::bigint[]), unnest($6::timestamptz[])
		ON CONFLICT (name) DO UPDATE SET count = topics.count + excluded.count,
		first_id = CASE WHEN topics.first_id = 0 THEN excluded.first_id ELSE topics.first_id END,
		first_at = CASE WHEN topics.first_id = 0 THEN excluded.first_at ELSE topics.first_at END,
		last_id = GREATEST(topics.last_id, excluded.last_id),
		last_at = CASE WHEN excluded.last_id > topics.last_id THEN excluded.last_at ELSE topics.last_at END`,
		names, counts, firstIDs, firstAts, lastIDs, lastAts)
}

// queueSession queues c's session state; ids are the ids of c.Messages,
// pages and epoch what sessionPages read.
func queueSession(b *pgx.Batch, c *store.Commit, ids []int64, pages map[int64]*store.Page, epoch int64) {
	if len(c.Acked) > 0 {
		conns, seqs := make([]int64, 0, len(c.Acked)), make([]int64, 0, len(c.Acked))
		for conn, seq := range c.Acked {
			conns, seqs = append(conns, conn), append(seqs, seq)
		}
		b.Queue(`INSERT INTO acked (client_id, conn, seq) SELECT $1, unnest($2::bigint[]), unnest($3::bigint[])
			ON CONFLICT (client_id, conn) DO UPDATE SET seq = GREATEST(acked.seq, excluded.seq)`, c.ClientID, conns, seqs)
	}
	b.Queue(`INSERT INTO sessions (client_id, attempted, connected, epoch, uncertain)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (client_id) DO UPDATE SET
		attempted = GREATEST(sessions.attempted, excluded.attempted),
		connected = GREATEST(sessions.connected, excluded.connected),
		epoch = GREATEST(sessions.epoch, excluded.epoch),
		uncertain = GREATEST(sessions.uncertain, excluded.uncertain)`,
		c.ClientID, c.Attempted, c.Connected, c.Epoch, c.Uncertain)
	// Once a connection (c.Connected) it also forgets what a new session
	// made void, and the marks of connections no delivery refers to any
	// more.
	queuePages(b, c, ids, pages, epoch)
}

const columns = "id, topic, payload, qos, retained, duplicate, received_at, client_id, packet_id, batch_key"

// scanMessage reads a row of columns; it is the row function of
// pgx.CollectRows for every read of messages.
func scanMessage(row pgx.CollectableRow) (store.Message, error) { return scan(row) }

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

// List returns messages matching q, newest first (oldest first with q.Oldest).
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
	if q.After > 0 {
		arg("id > ?", q.After)
	}
	dir := "DESC"
	if q.Oldest {
		dir = "ASC"
	}
	// sel selects cols of the rows of q, in q's order.
	var sel func(cols string) string
	if expanded {
		// The first Limit ids of each name, merged; then their rows.
		args = append(args, q.Limit, names)
		limit, list := "$"+strconv.Itoa(len(args)-1), "$"+strconv.Itoa(len(args))
		sel = func(cols string) string {
			return "SELECT " + cols + " FROM messages WHERE id IN (SELECT n.id FROM unnest(" + list + "::text[]) AS t(name)" +
				" CROSS JOIN LATERAL (SELECT id FROM messages WHERE " + strings.Join(where, " AND ") +
				" ORDER BY id " + dir + " LIMIT " + limit + ") AS n ORDER BY n.id " + dir + " LIMIT " + limit + ") ORDER BY id " + dir
		}
	} else {
		args = append(args, q.Limit)
		limit := "$" + strconv.Itoa(len(args))
		sel = func(cols string) string {
			query := "SELECT " + cols + " FROM messages"
			if len(where) > 0 {
				query += " WHERE " + strings.Join(where, " AND ")
			}
			return query + " ORDER BY id " + dir + " LIMIT " + limit
		}
	}
	query := sel(columns)
	if q.MaxBytes > 0 {
		// The cut is made in the database, so that the rows past it never
		// leave it: the payload sizes come from the row headers
		// (octet_length does not read a TOASTed value), and only the
		// payloads of the rows kept are read.
		args = append(args, q.MaxBytes)
		query = "SELECT " + columns + " FROM messages WHERE id IN (SELECT id FROM (" +
			"SELECT id, sum(n) OVER (ORDER BY id " + dir + " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before" +
			" FROM (" + sel("id, octet_length(payload)::bigint AS n") + ") AS l) AS w" +
			" WHERE coalesce(before, 0) < $" + strconv.Itoa(len(args)) + ") ORDER BY id " + dir
	}
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	msgs, err := pgx.CollectRows(rows, scanMessage)
	if err != nil {
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

// Get returns the message with id.
func (s *Store) Get(ctx context.Context, id int64) (store.Message, error) {
	m, err := scan(s.pool.QueryRow(ctx, "SELECT "+columns+" FROM messages WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Message{}, store.ErrNotFound
	}
	if err != nil {
		return store.Message{}, fmt.Errorf("get message %d: %w", id, err)
	}
	return m, nil
}

// LoadSession reads clientID's session.
func (s *Store) LoadSession(ctx context.Context, clientID string) (store.Session, error) {
	var ses store.Session
	err := s.pool.QueryRow(ctx, `SELECT attempted, connected, epoch, uncertain
		FROM sessions WHERE client_id = $1`, clientID).Scan(&ses.Attempted, &ses.Connected, &ses.Epoch, &ses.Uncertain)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.Session{}, nil
	case err != nil:
		return store.Session{}, fmt.Errorf("load session of %s: %w", clientID, err)
	}
	ses.Acked = map[int64]int64{}
	rows, err := s.pool.Query(ctx, `SELECT conn, seq FROM acked WHERE client_id = $1`, clientID)
	if err != nil {
		return store.Session{}, fmt.Errorf("load session of %s: %w", clientID, err)
	}
	var conn, seq int64
	if _, err := pgx.ForEachRow(rows, []any{&conn, &seq}, func() error { ses.Acked[conn] = seq; return nil }); err != nil {
		return store.Session{}, fmt.Errorf("load session of %s: %w", clientID, err)
	}
	if ses.Deliveries, err = s.loadDeliveries(ctx, clientID, ses.Epoch); err != nil {
		return store.Session{}, fmt.Errorf("load session of %s: %w", clientID, err)
	}
	return ses, nil
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
		return nil, s.recover(ctx, fmt.Errorf("find batch %x: %w", uint64(key), err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, s.recover(ctx, fmt.Errorf("find batch %x: %w", uint64(key), err))
	}
	return ids, nil
}

// DeleteBefore deletes at most limit of the oldest rows received before
// cutoff and their values (for each topic, those up to the newest of its
// rows deleted), and keeps topics: the names left without rows go, the
// others' counts and oldest and newest messages follow.
func (s *Store) DeleteBefore(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM messages WHERE id IN
			(SELECT id FROM messages WHERE received_at < $1 ORDER BY received_at LIMIT $2) RETURNING topic, received_at`, cutoff, limit)
		if err != nil {
			return err
		}
		gone := map[string]int64{}
		upto := map[string]time.Time{}
		var topic string
		var at time.Time
		if _, err := pgx.ForEachRow(rows, []any{&topic, &at}, func() error {
			gone[topic]++
			if at.After(upto[topic]) {
				upto[topic] = at
			}
			n++
			return nil
		}); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		names := make([]string, 0, len(gone))
		for name := range gone {
			names = append(names, name)
		}
		slices.Sort(names)
		counts, ats := make([]int64, len(names)), make([]time.Time, len(names))
		for k, name := range names {
			counts[k], ats[k] = gone[name], upto[name]
		}
		// Waits for the Inserts in flight, so that the next statements
		// see their rows; Inserts after it wait for this commit and then
		// add the names again.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, topicsLock); err != nil {
			return err
		}
		var b pgx.Batch
		b.Queue(`DELETE FROM topics WHERE name = ANY($1)
			AND NOT EXISTS (SELECT 1 FROM messages WHERE topic = topics.name)`, names)
		b.Queue(`UPDATE topics t SET count = t.count - d.n,
			first_id = f.id, first_at = f.received_at, last_id = l.id, last_at = l.received_at
			FROM unnest($1::text[], $2::bigint[]) AS d(name, n)
			CROSS JOIN LATERAL (SELECT id, received_at FROM messages WHERE topic = d.name ORDER BY id LIMIT 1) f
			CROSS JOIN LATERAL (SELECT id, received_at FROM messages WHERE topic = d.name ORDER BY id DESC LIMIT 1) l
			WHERE t.name = d.name`, names, counts)
		// The chunks all of whose values go, then those with some left.
		b.Queue(`DELETE FROM value_chunks c USING series s, unnest($1::text[], $2::timestamptz[]) AS d(name, upto)
			WHERE s.topic = d.name AND c.series_id = s.id AND c.last_at <= d.upto`, names, ats)
		b.Queue(`UPDATE value_chunks c SET (first_at, ats, message_ids, numbers) =
				(SELECT min(u.at), array_agg(u.at), array_agg(u.message_id), array_agg(u.number)
				FROM unnest(c.ats, c.message_ids, c.numbers) AS u(at, message_id, number) WHERE u.at > d.upto)
			FROM series s, unnest($1::text[], $2::timestamptz[]) AS d(name, upto)
			WHERE s.topic = d.name AND c.series_id = s.id
				AND c.last_at > d.upto AND c.last_at < d.upto + $3::interval AND c.first_at <= d.upto`, names, ats, chunkSpan)
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return 0, fmt.Errorf("delete messages before %s: %w", cutoff.Format(time.RFC3339), err)
	}
	return n, nil
}
