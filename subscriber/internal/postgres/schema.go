package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations[i] moves the schema from version i to i+1. Append only.
var migrations = []string{
	`CREATE TABLE messages (
		id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		-- "C": byte order, so a topic prefix is an index range.
		topic       text COLLATE "C" NOT NULL,
		payload     bytea       NOT NULL,
		qos         smallint    NOT NULL,
		retained    boolean     NOT NULL,
		duplicate   boolean     NOT NULL,
		received_at timestamptz NOT NULL,
		client_id   text        NOT NULL,
		packet_id   integer     NOT NULL
	);
	CREATE INDEX messages_topic_id ON messages (topic, id);
	CREATE INDEX messages_received_at ON messages (received_at);
	CREATE INDEX messages_client_packet ON messages (client_id, packet_id, id);
	CREATE INDEX messages_client_id ON messages (client_id, id);`,
	// The Insert that stored a row, to settle a commit whose outcome was
	// lost; 0 for rows stored before (a constant default: no table rewrite).
	`ALTER TABLE messages ADD COLUMN batch_key bigint NOT NULL DEFAULT 0;
	CREATE INDEX messages_batch_key ON messages (batch_key);`,
	// Cheaper inserts and indexed wildcard queries: a lost commit is now
	// looked up among the rows received since the batch's first arrival
	// (messages_received_at), and the redelivery count uses
	// messages_client_packet or the primary key. topics holds the distinct
	// topic names (Insert adds a batch's, DeleteBefore removes those left
	// without rows), against which List expands a wildcard filter.
	`DROP INDEX messages_batch_key;
	DROP INDEX messages_client_id;
	CREATE TABLE topics (name text COLLATE "C" PRIMARY KEY);
	INSERT INTO topics (name) SELECT DISTINCT topic FROM messages;`,
	// Duplicate detection without guessing from packet id numbering: the
	// broker session of each client (sessions), how far each connection's
	// acknowledgements are known to have reached the broker (acked), and
	// the latest delivery of each packet id (deliveries), kept by ingest.
	// What the rows already say is kept as connection 0, before every
	// connection to come and uncertain (sessions.uncertain 1): a redelivery
	// that matches it is stored flagged, never dropped.
	`CREATE TABLE sessions (
		client_id  text PRIMARY KEY,
		attempted  bigint NOT NULL DEFAULT 0,
		connected  bigint NOT NULL DEFAULT 0,
		epoch      bigint NOT NULL DEFAULT 0,
		uncertain  bigint NOT NULL DEFAULT 0
	);
	CREATE TABLE acked (
		client_id text   NOT NULL,
		conn      bigint NOT NULL,
		seq       bigint NOT NULL,
		PRIMARY KEY (client_id, conn)
	);
	CREATE TABLE deliveries (
		client_id  text     NOT NULL,
		packet_id  integer  NOT NULL,
		qos        smallint NOT NULL,
		conn       bigint   NOT NULL,
		seq        bigint   NOT NULL,
		message_id bigint   NOT NULL,
		hash       bigint   NOT NULL,
		pending    boolean  NOT NULL,
		PRIMARY KEY (client_id, packet_id)
	);
	INSERT INTO deliveries (client_id, packet_id, qos, conn, seq, message_id, hash, pending)
		SELECT DISTINCT ON (client_id, packet_id) client_id, packet_id, qos, 0, 0, id, 0, false
		FROM messages WHERE qos > 0 ORDER BY client_id, packet_id, id DESC;
	INSERT INTO sessions (client_id, uncertain) SELECT DISTINCT client_id, 1 FROM deliveries;
	DROP INDEX messages_client_packet;`,
	// Ids in commit order, and a wake-up at each commit, so that a
	// follower of the table (follow.go) can read it as a log: everything
	// after the last id it has seen, with no row committed later under a
	// smaller id. See orderTrigger for why a lock, and its cost.
	orderTrigger,
	valuesSchema,
	// Every message upserts its packet id's row of deliveries. In full
	// pages PostgreSQL writes each new version elsewhere, with a new entry
	// in the primary key: 2 % of the updates were HOT (heap-only) in
	// commits of 2000, and the 65,535 rows of a busy session took 20 MB.
	// With pages half filled, 98 % are, the index is not touched, and the
	// table stays at 13 MB. New pages only: a table filled before keeps
	// its pages until they are rewritten.
	`ALTER TABLE deliveries SET (fillfactor = 50);`,
	chunksSchema,
	pagesSchema,
}

// valuesSchema keeps the numbers of the payloads (package values) and what
// GET /topics shows of each topic.
//
// series names each topic and field once; message_values held one row per
// value (until chunksSchema moved them into value_chunks): its series, the message's received_at (at) and id, and the
// number. Its primary key, (series_id, at, message_id), is the order GET
// /series reads a series in, and INCLUDEs the value so that the read is an
// index-only scan of one range. Messages stored before this version get
// their values from FillValues, in the background: values_backfill is how
// far it has come (next_id) and where it stops (last_id, the newest id when
// this version first migrated the database). The view readings joins the
// two for dashboards (Grafana's PostgreSQL data source).
//
// topics gains what GET /topics shows: the count of stored messages and the
// oldest and newest of them (id and received_at), kept by Commit and
// DeleteBefore.
const valuesSchema = `CREATE TABLE series (
		id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		topic text COLLATE "C" NOT NULL,
		field text COLLATE "C" NOT NULL,
		UNIQUE (topic, field)
	);
	CREATE TABLE message_values (
		series_id  bigint           NOT NULL,
		at         timestamptz      NOT NULL,
		message_id bigint           NOT NULL,
		value      double precision NOT NULL,
		PRIMARY KEY (series_id, at, message_id) INCLUDE (value)
	);
	CREATE TABLE values_backfill (next_id bigint NOT NULL, last_id bigint NOT NULL);
	INSERT INTO values_backfill (next_id, last_id) SELECT 0, coalesce(max(id), 0) FROM messages;
	CREATE VIEW readings AS
		SELECT v.at AS time, s.topic, s.field, v.value, v.message_id
		FROM message_values v JOIN series s ON s.id = v.series_id;

	ALTER TABLE topics
		ADD COLUMN count    bigint      NOT NULL DEFAULT 0,
		ADD COLUMN first_id bigint      NOT NULL DEFAULT 0,
		ADD COLUMN first_at timestamptz NOT NULL DEFAULT 'epoch',
		ADD COLUMN last_id  bigint      NOT NULL DEFAULT 0,
		ADD COLUMN last_at  timestamptz NOT NULL DEFAULT 'epoch';
	UPDATE topics t SET count = s.n, first_id = s.lo, last_id = s.hi
		FROM (SELECT topic, count(*) AS n, min(id) AS lo, max(id) AS hi FROM messages GROUP BY topic) s
		WHERE s.topic = t.name;
	UPDATE topics SET first_at = (SELECT received_at FROM messages WHERE id = first_id),
		last_at = (SELECT received_at FROM messages WHERE id = last_id)
		WHERE count > 0;`

// chunksSchema moves the values from a row each into chunks: a row of
// value_chunks holds the values of one series that one commit stored within
// one minute (chunkSpan), as three arrays in step (ats, message_ids,
// numbers, in no promised order), with the earliest and latest of the
// times. A commit of 2,000 messages of two values over 100 topics writes
// about 200 rows and index entries instead of 4,000: the rows and the
// index of message_values took about half of PostgreSQL's work a message
// (docs/performance.md). A chunk spans less than chunkSpan, so the chunks
// of a series that hold values of [since, until) are those with last_at in
// [since, until + chunkSpan): one range of value_chunks_series_last.
// Readers sort the values they take out of the chunks by (at, message_id),
// the order GET /series folds them in. last_message_id and last_number are
// the newest value's (of those at last_at, the one stored last), so that
// the index's order is that of the newest values and GET /topics takes a
// series' newest from one seek, without opening the arrays. The view
// readings keeps its columns.
const chunksSchema = `CREATE TABLE value_chunks (
		series_id       bigint             NOT NULL,
		first_at        timestamptz        NOT NULL,
		last_at         timestamptz        NOT NULL,
		last_message_id bigint             NOT NULL,
		last_number     double precision   NOT NULL,
		ats             timestamptz[]      NOT NULL,
		message_ids     bigint[]           NOT NULL,
		numbers         double precision[] NOT NULL
	);
	CREATE INDEX value_chunks_series_last ON value_chunks (series_id, last_at, last_message_id);
	INSERT INTO value_chunks (series_id, first_at, last_at, last_message_id, last_number, ats, message_ids, numbers)
		SELECT series_id, min(at), max(at),
			(array_agg(message_id ORDER BY at DESC, message_id DESC))[1], (array_agg(value ORDER BY at DESC, message_id DESC))[1],
			array_agg(at ORDER BY at, message_id), array_agg(message_id ORDER BY at, message_id), array_agg(value ORDER BY at, message_id)
		FROM message_values GROUP BY series_id, floor(extract(epoch FROM at) / 60);
	DROP VIEW readings;
	DROP TABLE message_values;
	CREATE VIEW readings AS
		SELECT u.at AS time, s.topic, s.field, u.value, u.message_id
		FROM value_chunks c JOIN series s ON s.id = c.series_id
		CROSS JOIN LATERAL unnest(c.ats, c.numbers, c.message_ids) AS u(at, value, message_id);`

// chunkSpan bounds how far apart the values of one chunk may be: the
// migration above groups by the minute, Commit by chunkSpan.
const chunkSpan = time.Minute

// orderTrigger makes every INSERT into messages take, before it draws its
// first id, a transaction-scoped exclusive advisory lock that is held until
// COMMIT, and queue a NOTIFY on channel "messages" (delivered at commit,
// never for a rollback). Ids are drawn when a row is inserted, not when it
// commits: without the lock, two share-group members inserting at once
// commit out of id order, and a reader that has seen id 12 misses the 11
// that commits a moment later. With it, a transaction draws ids only after
// every earlier drawer has committed or rolled back, so whoever sees a row
// also sees every row below it that will ever exist (a rolled-back id stays
// a hole) and the stream's Last-Event-ID is a complete position.
//
// Why not something cheaper: the alternatives keep writers concurrent but
// give up id order. Following the visibility horizon (rows whose
// transaction ended before the oldest running one, pg_snapshot_xmin) or a
// second, commit-ordered sequence orders rows by something other than the
// id, while the contract makes the id the event id and the resume point.
// A reader-side barrier (followers take the lock exclusively, writers
// shared) keeps writers apart from each other but stops every writer of the
// group for each follower's read, once per commit per member.
//
// The cost is that the members' insert transactions run one at a time:
// three writers store together about what one stores alone (1.0 to 1.3
// times as much, 0.9 with each also following the table) where they
// stored 1.6 times as much before (BenchmarkInsertWriters, figures in
// docs/scaling.md). A group gets no more insert throughput from its
// database than one member does; it still spreads the broker's deliveries,
// the logging and the HTTP readers. NOTIFY alone costs little: PostgreSQL
// serialises notifying commits as well (a cluster-wide lock from just
// before the commit until it is flushed), but only their flush. Under load
// each member's writer makes up for some of the waiting with bigger
// batches (up to 500 rows a commit).
//
// A trigger rather than statements in Insert: every writer of the table
// honours it, including a member still running the previous version
// during a rolling upgrade, whatever shape Insert takes. It runs once per
// INSERT statement, about 3 µs each (pg_stat_user_functions; re-taking a
// lock the transaction holds and a NOTIFY already queued are cheap). The
// key is "orde" (0x6f726465); an advisory lock is per database.
const orderTrigger = `CREATE FUNCTION messages_in_commit_order() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM pg_advisory_xact_lock(1869767781);
		PERFORM pg_notify('messages', '');
		RETURN NULL;
	END
	$$;
	CREATE TRIGGER messages_in_commit_order BEFORE INSERT ON messages
		FOR EACH STATEMENT EXECUTE FUNCTION messages_in_commit_order();`

// migrationLock serialises subscribers that start at once on one database.
const migrationLock = 0x6d717474 // "mqtt"

// migrate brings the database up to the last of steps (migrations, or a
// prefix of it in tests).
func migrate(ctx context.Context, pool *pgxpool.Pool, steps []string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var version int
		err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&version)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
				return fmt.Errorf("init schema_version: %w", err)
			}
		case err != nil:
			return fmt.Errorf("read schema_version: %w", err)
		}
		if version > len(steps) {
			return fmt.Errorf("schema version %d is newer than this program (%d)", version, len(steps))
		}
		for v := version; v < len(steps); v++ {
			if _, err := tx.Exec(ctx, steps[v]); err != nil {
				return fmt.Errorf("migrate to version %d: %w", v+1, err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1`, len(steps)); err != nil {
			return fmt.Errorf("update schema_version: %w", err)
		}
		return nil
	})
}
