// Package sqlite is the embedded Store: one SQLite file in WAL mode, written
// through a single connection and read through a small pool.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

// Store is a store.Store on one SQLite file. The file is watched: when it
// is deleted or replaced under the running service, the store opens the
// path again (creating and migrating a new file) rather than go on writing
// into a file nobody will read.
type Store struct {
	path string
	dsn  string // the writer's
	rdsn string // the readers'

	mu sync.Mutex // serialises reopening
	h  atomic.Pointer[handles]

	stopCheckpoints context.CancelFunc
	checkpoints     sync.WaitGroup
	checkpointErr   atomic.Pointer[error] // the last checkpoint's error, nil after a success
	walFrames       atomic.Int64          // the WAL's length at the last passive checkpoint
	checkpointing   sync.Mutex            // held while a checkpoint runs
}

// handles are the connections to one file.
type handles struct {
	file fileID
	w    *sql.DB // the one writer connection
	r    *sql.DB // readers (WAL lets them run beside the writer)

	inserts      [len(chunkSizes)]*sql.Stmt // multi-row inserts on w, by chunk size
	pageWrites   [len(chunkSizes)]*sql.Stmt // multi-row writes of delivery pages on w, by chunk size
	pageRead     *sql.Stmt                  // a range of delivery pages, on w
	chunkInserts [len(chunkSizes)]*sql.Stmt // the same, of value_chunks
	topicUpserts [len(chunkSizes)]*sql.Stmt // the counts of topics, by chunk size
	series       seriesCache
	topics       topicCache
	stmts        stmtCache // of listTopics, on r
}

var _ store.Store = (*Store)(nil)

// Option changes how Open opens the file, not what it stores.
type Option func(*url.Values)

// CacheSize gives each connection a page cache of kib KiB instead of
// SQLite's 2 MiB: for a bulk load, whose inserts into the (topic, id) index
// touch more pages than the default cache holds.
func CacheSize(kib int) Option {
	return func(q *url.Values) { q.Add("_pragma", fmt.Sprintf("cache_size(%d)", -kib)) }
}

// readerCacheKiB is each reader connection's page cache.
const readerCacheKiB = 512

// Open opens or creates the database file at path and migrates its schema.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	if err := register(); err != nil {
		return nil, fmt.Errorf("register sql functions: %w", err)
	}
	q := url.Values{}
	// synchronous=FULL: a commit is on disk before the broker is told, so
	// an acknowledged message survives a power loss, not only a crash.
	// wal_autocheckpoint(0): checkpoints run in the background
	// (checkpoint), not inside whichever commit crosses the threshold.
	// temp_store(MEMORY): the statement journal of a multi-row statement
	// that needs one (the delivery pages' INSERT OR REPLACE) stays in
	// memory instead of a temporary file written with a system call per
	// page.
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(ON)",
		"wal_autocheckpoint(0)", "journal_size_limit(67108864)", "temp_store(MEMORY)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	for _, o := range opts {
		o(&q)
	}
	// Unless CacheSize says otherwise, readers get a smaller page cache
	// than the writer's 2 MiB: a query reads few pages twice (a page of
	// 10,000 topics looks up 10,000 rows wherever they are), the kernel's
	// page cache holds the file anyway, and up to four readers kept 2 MiB
	// each.
	r := maps.Clone(q)
	if !slices.ContainsFunc(q["_pragma"], func(p string) bool { return strings.HasPrefix(p, "cache_size(") }) {
		r["_pragma"] = append(slices.Clone(q["_pragma"]), fmt.Sprintf("cache_size(%d)", -readerCacheKiB))
	}
	s := &Store{path: path, dsn: path + "?" + q.Encode(), rdsn: path + "?" + r.Encode()}
	h, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	s.h.Store(h)
	ctx, s.stopCheckpoints = context.WithCancel(context.WithoutCancel(ctx))
	s.checkpoints.Go(func() { s.checkpoint(ctx) })
	return s, nil
}

// open opens the file at s.path (creating and migrating it) and prepares
// the writer's statements. The file's identity is taken before and after
// the writer opens it: a file replaced in between is opened again, so that
// the identity is the one of the file the writer writes.
func (s *Store) open(ctx context.Context) (*handles, error) {
	if dir := filepath.Dir(s.path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create directory of %s: %w", s.path, err)
		}
	}
	for attempt := 1; ; attempt++ {
		f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", s.path, err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("open %s: %w", s.path, err)
		}
		before, err := identify(s.path)
		if err != nil {
			return nil, err
		}
		h, err := s.openHandles(ctx)
		if err != nil {
			return nil, err
		}
		h.file, err = identify(s.path)
		if err == nil && h.file == before {
			return h, nil
		}
		if cerr := h.close(); cerr != nil || attempt == 5 {
			return nil, errors.Join(fmt.Errorf("open %s: the file keeps changing under it", s.path), err, cerr)
		}
	}
}

func (s *Store) openHandles(ctx context.Context) (*handles, error) {
	w, err := sql.Open("sqlite", s.dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", s.path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	h := &handles{w: w}
	if err := migrate(ctx, w, migrations); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrate %s: %w", s.path, err)
	}
	r, err := sql.Open("sqlite", s.rdsn)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", s.path, err)
	}
	r.SetMaxOpenConns(4)
	h.r = r
	for k, n := range chunkSizes {
		if h.inserts[k], err = w.PrepareContext(ctx, insertSQL(n)); err != nil {
			return nil, errors.Join(fmt.Errorf("prepare insert of %d rows: %w", n, err), h.close())
		}
		if h.pageWrites[k], err = w.PrepareContext(ctx, pageWriteSQL(n)); err != nil {
			return nil, errors.Join(fmt.Errorf("prepare the write of %d delivery pages: %w", n, err), h.close())
		}
		if h.chunkInserts[k], err = w.PrepareContext(ctx, chunkInsertSQL(n)); err != nil {
			return nil, errors.Join(fmt.Errorf("prepare insert of %d chunks of values: %w", n, err), h.close())
		}
		if h.topicUpserts[k], err = w.PrepareContext(ctx, topicUpsertSQL(n)); err != nil {
			return nil, errors.Join(fmt.Errorf("prepare the counts of %d topics: %w", n, err), h.close())
		}
	}
	if h.pageRead, err = w.PrepareContext(ctx, pageReadSQL); err != nil {
		return nil, errors.Join(fmt.Errorf("prepare the read of delivery pages: %w", err), h.close())
	}
	return h, nil
}

func (h *handles) close() error {
	errs := []error{h.stmts.close()}
	for _, st := range append(append(append(append(h.inserts[:], h.pageWrites[:]...), h.chunkInserts[:]...), h.topicUpserts[:]...), h.pageRead) {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if h.r != nil {
		errs = append(errs, h.r.Close())
	}
	return errors.Join(append(errs, h.w.Close())...)
}

// fileID identifies a file whatever its name.
type fileID struct{ dev, ino uint64 }

func identify(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, nil // no identity to compare on this system
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

// moved reports whether the file at s.path is no longer the one h writes
// (deleted, or replaced by another file), or err says that h's file lost
// its schema (a connection that opened the path again found another file).
func (s *Store) moved(h *handles, err error) bool {
	if err != nil && strings.Contains(err.Error(), "no such table") {
		return true
	}
	id, serr := identify(s.path)
	return serr != nil || id != h.file
}

// reopen replaces h, whose file is gone from s.path, by handles on a file
// opened (and, if need be, created) at s.path. It returns store.ErrReset,
// wrapped, once it has, so that the caller knows to write again what the
// old file held of its own.
func (s *Store) reopen(ctx context.Context, h *handles) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h.Load() == h {
		nh, err := s.open(ctx)
		if err != nil {
			return fmt.Errorf("sqlite file %s was deleted or replaced; opening it again: %w", s.path, err)
		}
		s.h.Store(nh)
		s.walFrames.Store(0)
		s.checkpointErr.Store(nil)
		// Queries under way on the old file finish first: Close waits.
		go h.close()
	}
	return fmt.Errorf("sqlite file %s was deleted or replaced and has been opened again: %w", s.path, store.ErrReset)
}

// Close stops the checkpointer and closes the file.
func (s *Store) Close() error {
	if s.stopCheckpoints != nil {
		s.stopCheckpoints()
		s.checkpoints.Wait()
	}
	return s.h.Load().close()
}

// Checkpoint pacing: a passive checkpoint every checkpointEvery copies the
// WAL into the database file beside the writer, which it never blocks. It
// cannot let the WAL start over while the writer never pauses (a drain of a
// long queue): new frames keep arriving while it copies. So once the WAL
// holds more than walRestartFrames the writer itself, right after a
// commit, runs a passive checkpoint too: it copies what the background
// ones have not (at most checkpointEvery of commits), and with every frame
// copied the next commit starts the WAL at its beginning. That keeps the
// WAL (and the work of Close) bounded.
//
// Passive, not RESTART: a restarting checkpoint waits in the busy
// handler, whose sleeps grow to 100 ms, until no reader is left on the
// WAL; with the stream's readers following every commit that held the
// writer, and every commit behind it, for up to 256 ms (end-to-end p99
// 94.9 ms in one bench run). A passive checkpoint never waits for
// anyone; the WAL starts over as soon as the readers have moved on.
const (
	checkpointEvery  = 250 * time.Millisecond
	walRestartFrames = 8192 // 32 MiB of 4 KiB pages
)

// checkpoint runs passive WAL checkpoints on a reader connection until ctx
// ends. (SQLite checkpoints once more when Close closes the last
// connection.) A failed checkpoint only leaves the WAL longer; Ping
// reports it until one succeeds.
func (s *Store) checkpoint(ctx context.Context) {
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var busy, frames, copied int
		s.checkpointing.Lock()
		err := s.h.Load().r.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
		s.checkpointing.Unlock()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			err = fmt.Errorf("checkpoint wal: %w", err)
			s.checkpointErr.Store(&err)
		default:
			s.checkpointErr.Store(nil)
			s.walFrames.Store(int64(frames))
		}
	}
}

// restartWAL runs on the writer after a commit when the WAL has grown past
// walRestartFrames. The commit stands whatever happens here.
func (s *Store) restartWAL(ctx context.Context, h *handles) {
	if s.walFrames.Load() <= walRestartFrames {
		return
	}
	// Not while a background checkpoint runs: the next commit tries again.
	if !s.checkpointing.TryLock() {
		return
	}
	defer s.checkpointing.Unlock()
	var busy, frames, copied int
	err := h.w.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
	if err != nil {
		err = fmt.Errorf("checkpoint wal: %w", err)
		s.checkpointErr.Store(&err)
		return
	}
	if busy == 0 && copied == frames {
		s.walFrames.Store(0)
	}
}

// Ping checks that the file can be read and is still the one at the path;
// a file deleted or replaced is opened again (and Ping fails this time).
func (s *Store) Ping(ctx context.Context) error {
	h := s.h.Load()
	var one int
	err := h.r.QueryRowContext(ctx, "SELECT 1 FROM schema_version").Scan(&one)
	if s.moved(h, err) {
		return fmt.Errorf("ping sqlite: %w", s.reopen(ctx, h))
	}
	if err != nil {
		return fmt.Errorf("ping sqlite: %w", err)
	}
	if p := s.checkpointErr.Load(); p != nil {
		return fmt.Errorf("ping sqlite: %w", *p)
	}
	return nil
}

// chunkSizes are the row counts of the prepared multi-row inserts, largest
// first: a batch is cut greedily into chunks of these sizes, so that a
// statement runs per chunk, not per row, and a handful of statements
// serve every batch size.
var chunkSizes = [...]int{128, 32, 8, 1}

const insertColumns = 9

// insertSQL inserts rows messages. OR FAIL, as chunkInsertSQL: no
// statement journal for a statement whose failure rolls back the whole
// transaction anyway (0.3 to 1.1 µs of CPU a message in commits of 2,000).
func insertSQL(rows int) string {
	return `INSERT OR FAIL INTO messages
		(topic, payload, qos, retained, duplicate, received_at, client_id, packet_id, batch_key) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?, ?),", rows), ",")
}

// Insert stores msgs in one transaction.
func (s *Store) Insert(ctx context.Context, msgs []store.Message) error {
	return s.Commit(ctx, &store.Commit{Messages: msgs})
}

// Commit stores c in one transaction. A file found deleted or replaced
// after the commit means the commit went where nobody will read it: the
// path is opened again and Commit returns store.ErrReset.
func (s *Store) Commit(ctx context.Context, c *store.Commit) error {
	h := s.h.Load()
	ids, err := h.commit(ctx, c)
	if s.moved(h, err) {
		return s.reopen(ctx, h)
	}
	if err != nil {
		return err
	}
	for i := range c.Messages {
		c.Messages[i].ID = ids[i]
	}
	if len(c.Messages) > 0 {
		s.restartWAL(ctx, h)
	}
	return nil
}

func (h *handles) commit(ctx context.Context, c *store.Commit) (ids []int64, err error) {
	// Before the transaction: the writer is not held for parsing.
	vals := store.ExtractValues(c.Messages)
	tx, err := h.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreDone(tx.Rollback()))
		}
	}()
	if ids, err = h.insert(ctx, tx, c.Messages); err != nil {
		return nil, err
	}
	created, err := h.insertValues(ctx, tx, c.Messages, ids, vals)
	if err != nil {
		return nil, err
	}
	if err := h.countTopics(ctx, tx, c.Messages, ids); err != nil {
		return nil, err
	}
	if c.ClientID != "" {
		if err := h.writeSession(ctx, tx, c, ids); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	h.series.add(created)
	return ids, nil
}

// insert adds msgs in chunks of the prepared multi-row inserts and returns
// their ids.
func (h *handles) insert(ctx context.Context, tx *sql.Tx, msgs []store.Message) ([]int64, error) {
	ids := make([]int64, len(msgs))
	args := make([]any, 0, chunkSizes[0]*insertColumns)
	for done := 0; done < len(msgs); {
		k := 0
		for chunkSizes[k] > len(msgs)-done {
			k++
		}
		n := chunkSizes[k]
		args = args[:0]
		for _, m := range msgs[done : done+n] {
			args = append(args, m.Topic, nonNil(m.Payload), int64(m.QoS), m.Retained, m.Duplicate,
				m.ReceivedAt.UnixMicro(), m.ClientID, int64(m.PacketID), m.BatchKey)
		}
		res, err := tx.StmtContext(ctx, h.inserts[k]).ExecContext(ctx, args...)
		if err != nil {
			return nil, fmt.Errorf("insert %d messages: %w", n, err)
		}
		last, err := res.LastInsertId()
		if err != nil {
			return nil, fmt.Errorf("insert %d messages: %w", n, err)
		}
		// One statement on the only writer: its rows take consecutive
		// ids (AUTOINCREMENT gives each the largest id so far plus one),
		// and the last one is last_insert_rowid().
		for j := range n {
			ids[done+j] = last - int64(n-1-j)
		}
		done += n
	}
	return ids, nil
}

// writeSession records c's session state; ids are the ids of c.Messages.
func (h *handles) writeSession(ctx context.Context, tx *sql.Tx, c *store.Commit, ids []int64) error {
	if err := h.writeDeliveries(ctx, tx, c, ids); err != nil {
		return err
	}
	for conn, seq := range c.Acked {
		if _, err := tx.ExecContext(ctx, `INSERT INTO acked (client_id, conn, seq) VALUES (?, ?, ?)
			ON CONFLICT (client_id, conn) DO UPDATE SET seq = max(seq, excluded.seq)`, c.ClientID, conn, seq); err != nil {
			return fmt.Errorf("record acknowledgements of connection %d: %w", conn, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO sessions
		(client_id, attempted, connected, epoch, uncertain) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (client_id) DO UPDATE SET
		attempted = max(attempted, excluded.attempted), connected = max(connected, excluded.connected),
		epoch = max(epoch, excluded.epoch), uncertain = max(uncertain, excluded.uncertain)`,
		c.ClientID, c.Attempted, c.Connected, c.Epoch, c.Uncertain); err != nil {
		return fmt.Errorf("record session: %w", err)
	}
	if c.Connected != 0 {
		// Once a connection: forget what a new session made void, and
		// the marks of connections no delivery refers to any more.
		if err := h.forgetVoid(ctx, tx, c.ClientID, c.Connected); err != nil {
			return err
		}
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

// maxExpand is the most topic names a wildcard filter is expanded to. Up
// to it, List reads the newest ids of each name through messages_topic_id
// (at most Limit index entries a name) and merges them; above it, so many
// topics match that walking all rows newest first meets Limit matches
// soon.
const maxExpand = 200

// List returns messages matching q, newest first (oldest first with q.Oldest).
func (s *Store) List(ctx context.Context, q store.Query) ([]store.Message, error) {
	h := s.h.Load()
	if q.Filter == "" || !strings.ContainsAny(q.Filter, "+#") {
		return h.listWhere(ctx, q, nil)
	}
	names, ok := []string(nil), false
	if q.Filter != "#" { // matches nearly every row: the walk is best
		var err error
		if names, ok, err = h.topics.expand(ctx, h.r, q.Filter); err != nil {
			return nil, fmt.Errorf("list messages: %w", err)
		}
	}
	if !ok {
		return h.listWhere(ctx, q, []string{matchFunc + "(?, topic)"}, q.Filter)
	}
	return h.listTopics(ctx, q, names)
}

// conditions are q's time and cursor bounds as SQL, after extra.
func conditions(q store.Query, extra []string, args ...any) ([]string, []any) {
	where := extra
	if !q.Since.IsZero() {
		where, args = append(where, "received_at >= ?"), append(args, q.Since.UnixMicro())
	}
	if !q.Until.IsZero() {
		where, args = append(where, "received_at < ?"), append(args, q.Until.UnixMicro())
	}
	if q.Before > 0 {
		where, args = append(where, "id <= ?"), append(args, q.Before)
	}
	if q.After > 0 {
		where, args = append(where, "id > ?"), append(args, q.After)
	}
	return where, args
}

// order is the ORDER BY direction of q.
func order(q store.Query) string {
	if q.Oldest {
		return "ASC"
	}
	return "DESC"
}

// listWhere reads q in id order: for an exact filter through
// messages_topic_id, else by walking ids down and testing each row with
// extra.
func (h *handles) listWhere(ctx context.Context, q store.Query, extra []string, args ...any) ([]store.Message, error) {
	if q.Filter != "" && extra == nil {
		extra, args = []string{"topic = ?"}, []any{q.Filter}
	}
	where, args := conditions(q, extra, args...)
	query := "SELECT " + columns + " FROM messages"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY id " + order(q) + " LIMIT ?"
	rows, err := h.r.QueryContext(ctx, query, append(args, q.Limit)...)
	return collect(rows, err, q.MaxBytes)
}

// listTopics reads the first q.Limit ids of each name (newest, or oldest
// with q.Oldest), keeps the first q.Limit of them all, and reads those rows: one statement, so that only
// the rows shown leave SQLite.
func (h *handles) listTopics(ctx context.Context, q store.Query, names []string) ([]store.Message, error) {
	if len(names) == 0 {
		return []store.Message{}, nil
	}
	where, condArgs := conditions(q, []string{"topic = ?"}, "")
	dir := order(q)
	arm := "SELECT id FROM (SELECT id FROM messages WHERE " + strings.Join(where, " AND ") + " ORDER BY id " + dir + " LIMIT " + strconv.Itoa(q.Limit) + ")"
	args := make([]any, 0, len(names)*(len(condArgs)+1)+1)
	for _, name := range names {
		condArgs[0] = name
		args = append(args, condArgs...)
	}
	query := "SELECT " + columns + " FROM messages WHERE id IN (SELECT id FROM (" +
		strings.TrimSuffix(strings.Repeat(arm+" UNION ALL ", len(names)), " UNION ALL ") +
		") ORDER BY id " + dir + " LIMIT ?) ORDER BY id " + dir
	stmt, err := h.stmts.get(ctx, h.r, query)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	rows, err := stmt.QueryContext(ctx, append(args, q.Limit)...)
	return collect(rows, err, q.MaxBytes)
}

// stmtCache keeps the prepared statements of listTopics, whose text
// depends only on the number of names and on which bounds are set:
// preparing one with many arms costs more than running it.
type stmtCache struct {
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

// maxCachedStmts bounds the statements kept; past it they start over.
const maxCachedStmts = 64

func (c *stmtCache) get(ctx context.Context, db *sql.DB, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.stmts[query]; ok {
		return st, nil
	}
	if c.stmts == nil || len(c.stmts) >= maxCachedStmts {
		// A statement in use by a List keeps working until its rows
		// are closed: database/sql closes it only then.
		if err := c.closeLocked(); err != nil {
			return nil, err
		}
		c.stmts = map[string]*sql.Stmt{}
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.stmts[query] = st
	return st, nil
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeLocked()
}

func (c *stmtCache) closeLocked() error {
	var errs []error
	for _, st := range c.stmts {
		errs = append(errs, st.Close())
	}
	c.stmts = nil
	return errors.Join(errs...)
}

// collect reads rows until maxBytes of payload (0: all of them). SQLite
// steps through a result lazily, so the rows after the stop are never read.
func collect(rows *sql.Rows, err error, maxBytes int64) ([]store.Message, error) {
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	defer rows.Close()
	msgs := []store.Message{}
	var total int64
	for (maxBytes <= 0 || total < maxBytes) && rows.Next() {
		m, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list messages: %w", err)
		}
		msgs = append(msgs, m)
		total += int64(len(m.Payload))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	return msgs, nil
}

// topicCache holds the distinct topic names, as of a topics_version, and
// the expansions of recent filters.
type topicCache struct {
	mu       sync.Mutex
	loaded   bool
	version  int64
	names    []string // ascending
	expanded map[string][]string
	tooMany  map[string]bool
}

// maxCachedFilters bounds the expansions kept; past it they start over.
const maxCachedFilters = 256

// expand returns the known names filter matches, or ok false when there are
// more than maxExpand.
func (c *topicCache) expand(ctx context.Context, db *sql.DB, filter string) (names []string, ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var version int64
	if err := db.QueryRowContext(ctx, "SELECT version FROM topics_version").Scan(&version); err != nil {
		return nil, false, fmt.Errorf("read topics version: %w", err)
	}
	if !c.loaded || version != c.version {
		// Read after the version: the names are at least as new, and a
		// later change moves the version again.
		if c.names, err = topicNames(ctx, db); err != nil {
			return nil, false, err
		}
		c.loaded, c.version = true, version
		c.expanded, c.tooMany = map[string][]string{}, map[string]bool{}
	}
	if names, ok := c.expanded[filter]; ok {
		return names, true, nil
	}
	if c.tooMany[filter] {
		return nil, false, nil
	}
	if len(c.expanded)+len(c.tooMany) >= maxCachedFilters {
		c.expanded, c.tooMany = map[string][]string{}, map[string]bool{}
	}
	names, ok = topic.Expand(c.names, filter, maxExpand)
	if ok {
		c.expanded[filter] = names
	} else {
		c.tooMany[filter] = true
	}
	return names, ok, nil
}

func topicNames(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SELECT name FROM topics ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("read topic names: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("read topic names: %w", err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read topic names: %w", err)
	}
	return names, nil
}

// Get returns the message with id.
func (s *Store) Get(ctx context.Context, id int64) (store.Message, error) {
	m, err := scan(s.h.Load().r.QueryRowContext(ctx, "SELECT "+columns+" FROM messages WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Message{}, store.ErrNotFound
	}
	if err != nil {
		return store.Message{}, fmt.Errorf("get message %d: %w", id, err)
	}
	return m, nil
}

// LoadSession reads clientID's session through the writer connection, so
// that it sees every commit.
func (s *Store) LoadSession(ctx context.Context, clientID string) (store.Session, error) {
	w := s.h.Load().w
	var ses store.Session
	err := w.QueryRowContext(ctx, `SELECT attempted, connected, epoch, uncertain
		FROM sessions WHERE client_id = ?`, clientID).Scan(&ses.Attempted, &ses.Connected, &ses.Epoch, &ses.Uncertain)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Session{}, nil
	case err != nil:
		return store.Session{}, fmt.Errorf("load session of %s: %w", clientID, err)
	}
	ses.Acked = map[int64]int64{}
	rows, err := w.QueryContext(ctx, `SELECT conn, seq FROM acked WHERE client_id = ?`, clientID)
	if err != nil {
		return store.Session{}, fmt.Errorf("load session of %s: %w", clientID, err)
	}
	for rows.Next() {
		var conn, seq int64
		if err := rows.Scan(&conn, &seq); err != nil {
			rows.Close()
			return store.Session{}, fmt.Errorf("load session of %s: %w", clientID, err)
		}
		ses.Acked[conn] = seq
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return store.Session{}, fmt.Errorf("load session of %s: %w", clientID, err)
	}
	pages, nos, err := allPages(ctx, w, clientID)
	if err != nil {
		return store.Session{}, err
	}
	for _, no := range nos {
		ses.Deliveries = pages[no].AppendSince(ses.Deliveries, ses.Epoch)
	}
	return ses, nil
}

// Delivery reads clientID's record of packetID through the writer
// connection, so that it sees every commit.
func (s *Store) Delivery(ctx context.Context, clientID string, packetID uint16) (store.Delivery, error) {
	return delivery(ctx, s.h.Load().w, clientID, packetID)
}

// BatchIDs returns the ids of the rows stored with key, among those received
// since since (through messages_received_at). It reads through the writer
// connection so that it sees every committed batch.
func (s *Store) BatchIDs(ctx context.Context, key int64, since time.Time) ([]int64, error) {
	if key == 0 {
		return nil, store.ErrNoBatchKey
	}
	h := s.h.Load()
	rows, err := h.w.QueryContext(ctx, `SELECT id FROM messages
		WHERE received_at >= ? AND batch_key = ? ORDER BY id`, since.UnixMicro(), key)
	if s.moved(h, err) {
		return nil, s.reopen(ctx, h)
	}
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

// DeleteBefore deletes at most limit of the oldest rows received before
// cutoff, and their values: for each topic, those up to the newest of its
// rows deleted. (The triggers on messages keep topics.)
func (s *Store) DeleteBefore(ctx context.Context, cutoff time.Time, limit int) (n int64, err error) {
	h := s.h.Load()
	tx, err := h.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("delete messages before %s: %w", cutoff.Format(time.RFC3339), err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("delete messages before %s: %w", cutoff.Format(time.RFC3339), err), ignoreDone(tx.Rollback()))
		}
	}()
	rows, err := tx.QueryContext(ctx, `DELETE FROM messages WHERE id IN
		(SELECT id FROM messages WHERE received_at < ? ORDER BY received_at LIMIT ?) RETURNING topic, received_at`, cutoff.UnixMicro(), limit)
	if err != nil {
		return 0, err
	}
	upto := map[string]int64{}
	for rows.Next() {
		var topic string
		var at int64
		if err := rows.Scan(&topic, &at); err != nil {
			rows.Close()
			return 0, err
		}
		upto[topic] = max(upto[topic], at)
		n++
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, err
	}
	for topic, at := range upto {
		if err := deleteValues(ctx, tx, topic, at); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	return n, nil
}
