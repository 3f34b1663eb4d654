package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// migrations[i] moves the schema from version i to i+1. Append only.
var migrations = []string{
	`CREATE TABLE messages (
		id          INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: ids are cursors
		topic       TEXT    NOT NULL,
		payload     BLOB    NOT NULL,
		qos         INTEGER NOT NULL,
		retained    INTEGER NOT NULL,
		duplicate   INTEGER NOT NULL,
		received_at INTEGER NOT NULL, -- Unix microseconds, UTC
		client_id   TEXT    NOT NULL,
		packet_id   INTEGER NOT NULL
	);
	-- Topic prefix ranges, newest first within a topic.
	CREATE INDEX messages_topic_id ON messages (topic, id);
	-- Time ranges and retention.
	CREATE INDEX messages_received_at ON messages (received_at);
	-- Redelivery lookup: newest row of a client with a packet id.
	CREATE INDEX messages_client_packet ON messages (client_id, packet_id, id);
	CREATE INDEX messages_client_id ON messages (client_id, id);`,
	// The Insert that stored a row, to settle a commit whose outcome was
	// lost; 0 for rows stored before.
	`ALTER TABLE messages ADD COLUMN batch_key INTEGER NOT NULL DEFAULT 0;
	CREATE INDEX messages_batch_key ON messages (batch_key);`,
	// Cheaper inserts and indexed wildcard queries. Two indexes served rare
	// paths on every insert: a lost commit is now looked up among the rows
	// received since the batch's first arrival (messages_received_at), and
	// the redelivery count walks ids forward. The distinct topic names are
	// kept in topics by triggers, so any writer of messages keeps them
	// right, and a wildcard filter is expanded against them (List);
	// topics_version moves whenever a name comes or goes, so a reader can
	// cache the names.
	`DROP INDEX messages_batch_key;
	DROP INDEX messages_client_id;
	CREATE TABLE topics (name TEXT PRIMARY KEY) WITHOUT ROWID;
	INSERT INTO topics (name) SELECT DISTINCT topic FROM messages;
	CREATE TABLE topics_version (version INTEGER NOT NULL);
	INSERT INTO topics_version (version) VALUES (0);
	CREATE TRIGGER messages_topic_added AFTER INSERT ON messages
		WHEN NOT EXISTS (SELECT 1 FROM topics WHERE name = new.topic)
		BEGIN INSERT INTO topics (name) VALUES (new.topic); END;
	CREATE TRIGGER messages_topic_gone AFTER DELETE ON messages
		WHEN NOT EXISTS (SELECT 1 FROM messages WHERE topic = old.topic)
		BEGIN DELETE FROM topics WHERE name = old.topic; END;
	CREATE TRIGGER topics_added AFTER INSERT ON topics
		BEGIN UPDATE topics_version SET version = version + 1; END;
	CREATE TRIGGER topics_removed AFTER DELETE ON topics
		BEGIN UPDATE topics_version SET version = version + 1; END;`,
	// Duplicate detection without guessing from packet id numbering: the
	// broker session of each client (sessions), how far each connection's
	// acknowledgements are known to have reached the broker (acked), and
	// the latest delivery of each packet id (deliveries), kept by ingest.
	// What the rows already say is kept as connection 0, before every
	// connection to come and uncertain (sessions.uncertain 1): a redelivery
	// that matches it is stored flagged, never dropped. A bare column
	// with max() takes the values of the row of the maximum.
	`CREATE TABLE sessions (
		client_id  TEXT PRIMARY KEY,
		attempted  INTEGER NOT NULL DEFAULT 0,
		connected  INTEGER NOT NULL DEFAULT 0,
		epoch      INTEGER NOT NULL DEFAULT 0,
		uncertain  INTEGER NOT NULL DEFAULT 0
	) WITHOUT ROWID;
	CREATE TABLE acked (
		client_id TEXT    NOT NULL,
		conn      INTEGER NOT NULL,
		seq       INTEGER NOT NULL,
		PRIMARY KEY (client_id, conn)
	) WITHOUT ROWID;
	CREATE TABLE deliveries (
		client_id  TEXT    NOT NULL,
		packet_id  INTEGER NOT NULL,
		qos        INTEGER NOT NULL,
		conn       INTEGER NOT NULL,
		seq        INTEGER NOT NULL,
		message_id INTEGER NOT NULL,
		hash       INTEGER NOT NULL,
		pending    INTEGER NOT NULL,
		PRIMARY KEY (client_id, packet_id)
	) WITHOUT ROWID;
	INSERT INTO deliveries (client_id, packet_id, qos, conn, seq, message_id, hash, pending)
		SELECT client_id, packet_id, qos, 0, 0, max(id), 0, 0 FROM messages WHERE qos > 0
		GROUP BY client_id, packet_id;
	INSERT INTO sessions (client_id, uncertain) SELECT DISTINCT client_id, 1 FROM deliveries;
	DROP INDEX messages_client_packet;`,
	valuesSchema,
	chunksSchema,
	// The subscriber's own rows have their topic's name added by Commit
	// (countTopics), in the same transaction; the trigger's lookup of the
	// name for each of them was work done twice (3 to 4 % of the store's
	// CPU in commits of 2,000, BenchmarkInsertBatch2000 run alternately).
	// Rows written by another program (batch_key 0) still get it.
	`DROP TRIGGER messages_topic_added;
	CREATE TRIGGER messages_topic_added AFTER INSERT ON messages
		WHEN new.batch_key = 0 AND NOT EXISTS (SELECT 1 FROM topics WHERE name = new.topic)
		BEGIN INSERT INTO topics (name) VALUES (new.topic); END;`,
	pagesSchema,
	// The trigger that added the names of rows written by another
	// program ran for every row the subscriber inserts, to find its batch
	// key non-zero: about 1 µs of CPU a message, 8 % of a commit of 2,000
	// (docs/performance.md). Such a program now adds the names itself,
	// with the counts (importedRows).
	`DROP TRIGGER messages_topic_added`,
}

// valuesSchema keeps the numbers of the payloads (package values) and what
// GET /topics shows of each topic.
//
// series names each topic and field once; message_values held one row per
// value (until chunksSchema), clustered by series and time (WITHOUT ROWID), so that a series'
// values over a time range are one contiguous range of the table: what GET
// /series reads. Each row names its message (message_id), and the time is
// the message's received_at. Messages stored before this version get their
// values from FillValues, in the background: values_backfill is how far it
// has come (next_id) and where it stops (last_id, the newest id when this
// version first opened the file).
//
// topics gains what GET /topics shows: the count of stored messages and the
// oldest and newest of them (id and received_at). Commit adds each batch's
// counts with one statement per batch: measured with BenchmarkInsertText500
// (batches of 500 over 50 topics), that costs 0.2 to 0.25 µs of CPU a
// message, 3 % of the batch, where an upsert per row in the trigger cost 1.1
// to 1.5 µs, 13 to 21 %. The triggers went on keeping the
// names, so that rows written by another program were found by wildcard
// queries, but such rows are not counted (see recountTopics; the trigger
// on inserts went later, see importedRows). Deletes keep
// the counts with the trigger per row: retention deletes in small batches.
const valuesSchema = `CREATE TABLE series (
		id    INTEGER PRIMARY KEY,
		topic TEXT NOT NULL,
		field TEXT NOT NULL,
		UNIQUE (topic, field)
	);
	CREATE TABLE message_values (
		series_id  INTEGER NOT NULL,
		at         INTEGER NOT NULL, -- the message's received_at, Unix microseconds
		message_id INTEGER NOT NULL,
		value      REAL    NOT NULL,
		PRIMARY KEY (series_id, at, message_id)
	) WITHOUT ROWID;
	CREATE TABLE values_backfill (next_id INTEGER NOT NULL, last_id INTEGER NOT NULL);
	INSERT INTO values_backfill (next_id, last_id) SELECT 0, coalesce(max(id), 0) FROM messages;

	ALTER TABLE topics ADD COLUMN count    INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE topics ADD COLUMN first_id INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE topics ADD COLUMN first_at INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE topics ADD COLUMN last_id  INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE topics ADD COLUMN last_at  INTEGER NOT NULL DEFAULT 0;
	` + recountTopics + `;
	DROP TRIGGER messages_topic_gone;
	CREATE TRIGGER messages_topic_gone AFTER DELETE ON messages BEGIN
		DELETE FROM topics WHERE name = old.topic AND NOT EXISTS (SELECT 1 FROM messages WHERE topic = old.topic);
		UPDATE topics SET count = max(count - 1, 0) WHERE name = old.topic;
		UPDATE topics SET (first_id, first_at) =
			(SELECT id, received_at FROM messages WHERE topic = old.topic ORDER BY id LIMIT 1)
			WHERE name = old.topic AND first_id = old.id;
		UPDATE topics SET (last_id, last_at) =
			(SELECT id, received_at FROM messages WHERE topic = old.topic ORDER BY id DESC LIMIT 1)
			WHERE name = old.topic AND last_id = old.id;
	END;`

// chunksSchema moves the values from a row each into chunks: a row of
// value_chunks holds the values of one series that one commit stored within
// one minute (chunkSpan), packed into data (encodeChunk: 24 bytes a
// value, its time in Unix microseconds, its message's id and the number,
// little-endian, ordered by time and id), with the earliest and latest of
// the times. A chunk of one value has no data: the value is its last. A commit of 2,000 messages of two values over 100
// topics writes about 200 rows instead of 4,000 (docs/performance.md). A
// chunk spans less than chunkSpan, so the chunks of a series that hold
// values of [since, until) are those with last_at in [since, until +
// chunkSpan): one range of the key. The table is clustered on it (WITHOUT
// ROWID), as message_values was: a series' chunks are neighbours, where in
// a table of rowids each chunk of a slow series (one value a commit) was
// on a page of its own. last_id and last_number are the newest value's
// message id and number (of those at last_at, the one stored last): the
// key's order is then the order of the newest values, and GET /topics
// takes a series' newest from one seek, as before the chunks; last_id also
// keeps apart two chunks whose last values have one time. The values stored
// before are extracted again from their messages, in the background
// (values_backfill from the first id on), as after the upgrade that
// brought values.
const chunksSchema = `CREATE TABLE value_chunks (
		series_id INTEGER NOT NULL,
		last_at     INTEGER NOT NULL, -- Unix microseconds
		last_id     INTEGER NOT NULL,
		last_number REAL    NOT NULL,
		first_at    INTEGER NOT NULL,
		data        BLOB    NOT NULL,
		PRIMARY KEY (series_id, last_at, last_id)
	) WITHOUT ROWID;
	DROP TABLE message_values;
	UPDATE values_backfill SET next_id = 0, last_id = (SELECT coalesce(max(id), 0) FROM messages)`

// importedRows is what a program that wrote rows into messages itself (an
// import, the bench harness's fill) runs afterwards: their topics' names,
// which Commit adds for its own rows, and every topic's counts.
const importedRows = `INSERT OR IGNORE INTO topics (name) SELECT DISTINCT topic FROM messages;
	` + recountTopics

// recountTopics sets the counts and the oldest and newest messages of every
// topic from the rows: once when the file is migrated, and by a program that
// wrote rows into messages itself (an import, the bench harness's fill).
const recountTopics = `UPDATE topics SET (count, first_id, last_id) =
		(SELECT count(*), min(id), max(id) FROM messages WHERE topic = topics.name);
	UPDATE topics SET first_at = (SELECT received_at FROM messages WHERE id = topics.first_id),
		last_at = (SELECT received_at FROM messages WHERE id = topics.last_id)`

// migrate brings db up to the last of steps (migrations, or a prefix of it
// in tests).
func migrate(ctx context.Context, db *sql.DB, steps []string) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreDone(tx.Rollback()))
		}
	}()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	var version int
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return fmt.Errorf("init schema_version: %w", err)
		}
	case err != nil:
		return fmt.Errorf("read schema_version: %w", err)
	}
	if version > len(steps) {
		return fmt.Errorf("schema version %d is newer than this program (%d)", version, len(steps))
	}
	for v := version; v < len(steps); v++ {
		if _, err := tx.ExecContext(ctx, steps[v]); err != nil {
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(steps)); err != nil {
		return fmt.Errorf("update schema_version: %w", err)
	}
	return tx.Commit()
}
