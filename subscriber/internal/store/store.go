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

	// ClientID and PacketID identify the delivery, so that a redelivery
	// (same packet id, DUP flag) can be recognised after a reconnect.
	ClientID string
	PacketID uint16

	// BatchKey names the Insert that stored the message (every row of one
	// Insert has the same key), so that a writer whose commit failed in
	// an unknown state can ask BatchIDs whether it happened. Zero is no
	// key: rows stored before keys existed.
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

// Redelivery is what a store knows about an earlier delivery with the same
// client and packet id.
type Redelivery struct {
	Message Message
	// Later counts the QoS 1 and 2 messages the same client stored after
	// Message, up to the bound given to LatestByPacketID.
	Later int
}

// ErrNotFound is returned when no row answers a lookup.
var ErrNotFound = errors.New("not found")

// ErrNoBatchKey is returned by BatchIDs for key zero, which rows stored
// without a key share.
var ErrNoBatchKey = errors.New("batch key 0 names no batch")

// Store keeps messages. Implementations are safe for concurrent use.
type Store interface {
	// Insert stores msgs in one transaction, in order, and sets their IDs.
	Insert(ctx context.Context, msgs []Message) error
	// List returns at most q.Limit messages matching q, newest first
	// (oldest first with q.Oldest).
	List(ctx context.Context, q Query) ([]Message, error)
	// LatestByPacketID returns the newest message stored by clientID with
	// packetID, counting later messages of that client up to max; it
	// returns ErrNotFound when there is none.
	LatestByPacketID(ctx context.Context, clientID string, packetID uint16, max int) (Redelivery, error)
	// BatchIDs returns the ids, ascending, of the rows stored with the
	// non-zero batch key, or none. As a batch is one transaction, it
	// finds all of a batch's rows or none of them. since is no later than
	// the earliest ReceivedAt of the batch's rows: it bounds the search to
	// recent rows, so batch keys need no index of their own.
	BatchIDs(ctx context.Context, key int64, since time.Time) ([]int64, error)
	// DeleteBefore deletes at most limit messages received before cutoff,
	// oldest first, and returns how many it deleted.
	DeleteBefore(ctx context.Context, cutoff time.Time, limit int) (int64, error)
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	Close() error
}
