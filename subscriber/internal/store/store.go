// Package store holds the domain of the subscriber: a received MQTT message
// and the Store that keeps it. The adapters (sqlite, postgres) implement
// Store; ingest writes to it and api reads from it.
package store

import (
	"context"
	"errors"
	"time"
)

// Message is one received PUBLISH as it is stored.
type Message struct {
	ID         int64 // assigned by the store, increasing with commit order
	Topic      string
	Payload    []byte
	QoS        byte
	Retained   bool
	Duplicate  bool // stored although it may be a redelivery of a stored message
	ReceivedAt time.Time

	// ClientID and PacketID say which session and packet brought the
	// message, for diagnosis; duplicate detection keeps its own records
	// (Delivery).
	ClientID string
	PacketID uint16

	// BatchKey names the Commit that stored the message (every row of one
	// Commit has the same key), so that a writer whose commit failed in
	// an unknown state can ask BatchIDs whether it happened. Zero is no
	// key.
	BatchKey int64
}

// Query selects stored messages, newest first (oldest first with Oldest).
type Query struct {
	Filter string    // a valid MQTT topic filter
	Since  time.Time // inclusive; zero means unbounded
	Until  time.Time // exclusive; zero means unbounded
	Before int64     // only ids <= Before; zero means unbounded
	After  int64     // only ids > After; zero means unbounded
	Limit  int       // at most this many rows
	// Oldest lists the oldest rows first, in ascending ids: with After,
	// the rows that follow a position, as a stream's replay reads them.
	Oldest bool

	// MaxBytes, when > 0, bounds the payload bytes read: a row is
	// returned only while the payloads of the rows before it total less
	// than MaxBytes, so the result ends with the row that reaches it. The
	// first row is returned however large it is.
	MaxBytes int64
}

// PayloadBytes is the total payload of msgs, the measure of
// Query.MaxBytes.
func PayloadBytes(msgs []Message) int64 {
	var n int64
	for _, m := range msgs {
		n += int64(len(m.Payload))
	}
	return n
}

// Full reports whether rows, the answer to q, stopped at one of q's bounds
// (Limit or MaxBytes) rather than at the last matching row: only then may
// more rows follow.
func Full(q Query, rows []Message) bool {
	return len(rows) >= q.Limit || q.MaxBytes > 0 && PayloadBytes(rows) >= q.MaxBytes
}

// Delivery is the record of the latest PUBLISH that a client's broker
// session delivered with one packet id: enough to tell, when a PUBLISH with
// that id comes again, whether it is a redelivery of a stored message.
type Delivery struct {
	PacketID uint16
	QoS      byte
	// Conn and Seq place the delivery: the number of the connection it
	// came on, and its position among that connection's arrivals, which
	// is also the order of their acknowledgements.
	Conn int64
	Seq  int64
	// MessageID is the row holding its content (0: none is known); Hash
	// is a hash of its topic and payload (0: unknown).
	MessageID int64
	Hash      uint64
	// Pending is true for QoS 2 from the commit (PUBREC) until the
	// broker's PUBREL is committed: while it is, a PUBLISH with this
	// packet id is the same message again (MQTT 3.1.1 section 4.3.3).
	Pending bool
}

// Session is what a store keeps of one client's broker session.
type Session struct {
	// Attempted is the last connection number handed out; Connected the
	// last one whose CONNACK was recorded. Attempted > Connected means a
	// connection's outcome was lost (a crash in between).
	Attempted, Connected int64
	// Epoch is the first connection of the broker session (a CONNACK
	// without session present): deliveries of earlier connections are
	// void. Deliveries of connections before Uncertain may belong to a
	// session the broker dropped without the subscriber knowing.
	Epoch, Uncertain int64
	// Acked maps a connection to the highest Seq of its arrivals whose
	// acknowledgement the broker is known to have processed.
	Acked      map[int64]int64
	Deliveries []Delivery
}

// Commit is one transaction of the subscriber's writer: messages to store
// and, for ClientID's session, the records that go with them. The zero
// values of the session fields change nothing.
type Commit struct {
	Messages []Message // stored in order; their IDs are set on success

	ClientID string
	// Deliveries are upserted by packet id (at most one per id). One whose
	// Message is >= 0 refers to Messages[Message] for its MessageID.
	Deliveries []CommitDelivery
	// Released clears Pending of these packet ids (PUBREL received).
	Released []uint16
	// Acked raises the per-connection acknowledgement marks.
	Acked map[int64]int64
	// Attempted, Connected, Epoch and Uncertain raise the session's
	// fields of the same names.
	Attempted, Connected, Epoch, Uncertain int64
}

// CommitDelivery is a Delivery to record, possibly of a message of the
// same Commit.
type CommitDelivery struct {
	Delivery
	Message int // index into Commit.Messages, or -1
}

// ErrNotFound is returned when no row answers a lookup.
var ErrNotFound = errors.New("not found")

// ErrNoBatchKey is returned by BatchIDs for key zero, which rows stored
// without a key share.
var ErrNoBatchKey = errors.New("batch key 0 names no batch")

// ErrReset reports that the store had lost its schema or its file (a
// database dropped and created again, a file deleted or replaced) and has
// been set up again, empty: nothing of the failed call was kept, and what
// the caller keeps only in the store must be written again.
var ErrReset = errors.New("store was reset")

// Store keeps messages. Implementations are safe for concurrent use.
type Store interface {
	// Commit stores c in one transaction.
	Commit(ctx context.Context, c *Commit) error
	// Insert stores msgs in one transaction, in order, and sets their IDs.
	Insert(ctx context.Context, msgs []Message) error
	// List returns at most q.Limit messages matching q, newest first
	// (oldest first with q.Oldest).
	List(ctx context.Context, q Query) ([]Message, error)
	// Get returns the message with id, or ErrNotFound.
	Get(ctx context.Context, id int64) (Message, error)
	// LoadSession returns what the store keeps of clientID's session (the
	// zero Session when nothing).
	LoadSession(ctx context.Context, clientID string) (Session, error)
	// Delivery returns clientID's delivery record of packetID, or
	// ErrNotFound.
	Delivery(ctx context.Context, clientID string, packetID uint16) (Delivery, error)
	// BatchIDs returns the ids, ascending, of the rows stored with the
	// non-zero batch key, or none. As a Commit is one transaction, it
	// finds all of its rows or none of them. since is no later than the
	// earliest ReceivedAt of the batch's rows: it bounds the search to
	// recent rows, so batch keys need no index of their own.
	BatchIDs(ctx context.Context, key int64, since time.Time) ([]int64, error)
	// DeleteBefore deletes at most limit messages received before cutoff,
	// oldest first, with their values, and returns how many it deleted.
	DeleteBefore(ctx context.Context, cutoff time.Time, limit int) (int64, error)
	// Series returns the values of the messages q selects as time
	// buckets, one Series per topic and field (see SeriesQuery).
	Series(ctx context.Context, q SeriesQuery) ([]Series, error)
	// Topics returns the stored topics q selects, by name (see
	// TopicQuery).
	Topics(ctx context.Context, q TopicQuery) ([]Topic, error)
	// FillValues extracts and stores the values of up to limit messages
	// stored before the store kept values (a database made by an earlier
	// version), oldest first, in one short transaction. It returns how
	// many it read and about how many are left to read (0: all done).
	FillValues(ctx context.Context, limit int) (read int, left int64, err error)
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	Close() error
}
