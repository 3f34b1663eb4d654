package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// sessionModel is what a store must keep of one client's session, kept
// the plain way: a record per packet id.
type sessionModel struct {
	epoch int64
	recs  map[uint16]store.Delivery
	acked map[int64]int64
}

// commit applies c as Commit does; ids are the ids c.Messages got.
func (m *sessionModel) commit(c *store.Commit) {
	for _, cd := range c.Deliveries {
		d := cd.Delivery
		if cd.Message >= 0 {
			d.MessageID = c.Messages[cd.Message].ID
		}
		m.recs[d.PacketID] = d
	}
	for _, id := range c.Released {
		if d, ok := m.recs[id]; ok {
			d.Pending = false
			m.recs[id] = d
		}
	}
	for conn, seq := range c.Acked {
		m.acked[conn] = max(m.acked[conn], seq)
	}
	m.epoch = max(m.epoch, c.Epoch)
	if c.Connected == 0 {
		return
	}
	oldest, found := c.Connected, false
	for id, d := range m.recs {
		if d.Conn < m.epoch {
			delete(m.recs, id)
		} else if !found || d.Conn < oldest {
			oldest, found = d.Conn, true
		}
	}
	for conn := range m.acked {
		if conn < oldest {
			delete(m.acked, conn)
		}
	}
}

// testSessionModel runs random commits of one session, with packet ids
// in runs as a broker hands them out, wrapping past 65535, and scattered,
// with releases (of recorded ids and of others), new broker sessions and
// acknowledgement marks, and checks after each what LoadSession and
// Delivery return against the model.
func testSessionModel(t *testing.T, o Opener) {
	s := open(t, o)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 13))
	m := &sessionModel{recs: map[uint16]store.Delivery{}, acked: map[int64]int64{}}
	next, conn, seq := uint16(65500), int64(1), int64(0)
	for round := range 40 {
		c := &store.Commit{ClientID: "model"}
		used := map[uint16]bool{}
		n := r.IntN(300)
		if round%10 == 9 {
			n = 0
		}
		for range n {
			id := next
			if r.IntN(8) == 0 {
				id = uint16(r.IntN(65535) + 1)
			} else {
				next++
				if next == 0 {
					next = 1
				}
			}
			if used[id] {
				continue
			}
			used[id] = true
			seq++
			qos := byte(1 + r.IntN(2))
			cd := store.CommitDelivery{Message: -1, Delivery: store.Delivery{
				PacketID: id, QoS: qos, Conn: conn, Seq: seq, MessageID: r.Int64N(1 << 40),
				Hash: r.Uint64(), Pending: qos == 2,
			}}
			if r.IntN(2) == 0 {
				cd.Message = len(c.Messages)
				c.Messages = append(c.Messages, msg(fmt.Sprintf("model/%d", id), 0))
			}
			c.Deliveries = append(c.Deliveries, cd)
		}
		for range r.IntN(20) {
			if r.IntN(2) == 0 && len(c.Deliveries) > 0 {
				c.Released = append(c.Released, c.Deliveries[r.IntN(len(c.Deliveries))].PacketID)
			} else {
				c.Released = append(c.Released, uint16(r.IntN(65535)+1))
			}
		}
		c.Acked = map[int64]int64{conn: seq - int64(r.IntN(50))}
		if round%7 == 6 {
			// The next connection; every other one a new broker session.
			conn++
			c.Attempted, c.Connected = conn, conn
			if round%14 == 13 {
				c.Epoch = conn
			}
		}
		if err := s.Commit(ctx, c); err != nil {
			t.Fatalf("round %d: commit: %v", round, err)
		}
		m.commit(c)

		ses, err := s.LoadSession(ctx, "model")
		if err != nil {
			t.Fatalf("round %d: load: %v", round, err)
		}
		got := map[uint16]store.Delivery{}
		for _, d := range ses.Deliveries {
			if _, dup := got[d.PacketID]; dup {
				t.Fatalf("round %d: packet id %d loaded twice", round, d.PacketID)
			}
			got[d.PacketID] = d
		}
		want := 0
		for id, d := range m.recs {
			if d.Conn < m.epoch {
				continue
			}
			want++
			if got[id] != d {
				t.Fatalf("round %d: delivery %d loaded as %+v, want %+v", round, id, got[id], d)
			}
		}
		if len(got) != want {
			t.Fatalf("round %d: %d deliveries loaded, want %d", round, len(got), want)
		}
		if fmt.Sprint(ses.Acked) != fmt.Sprint(m.acked) {
			t.Fatalf("round %d: acknowledgement marks %v, want %v", round, ses.Acked, m.acked)
		}
		for range 20 {
			id := uint16(r.IntN(65535) + 1)
			if r.IntN(2) == 0 && len(c.Deliveries) > 0 {
				id = c.Deliveries[r.IntN(len(c.Deliveries))].PacketID
			}
			d, err := s.Delivery(ctx, "model", id)
			w, ok := m.recs[id]
			switch {
			case !ok && !errors.Is(err, store.ErrNotFound):
				t.Fatalf("round %d: Delivery(%d) = %+v, %v, want ErrNotFound", round, id, d, err)
			case ok && (err != nil || d != w):
				t.Fatalf("round %d: Delivery(%d) = %+v, %v, want %+v", round, id, d, err, w)
			}
		}
	}
	if len(m.recs) == 0 {
		t.Fatal("the model ended with no records: the test tested nothing")
	}
}

// RowDeliveries are delivery records of two clients as a store kept them
// before pages, a row each (every field at its extremes): a store's test
// writes them into its schema before pages, migrates, and checks them with
// CheckDeliveries.
func RowDeliveries() map[string][]store.Delivery {
	return map[string][]store.Delivery{
		"a": {
			{PacketID: 1, QoS: 1, Conn: 2, Seq: 9, MessageID: 11, Hash: 1 << 63},
			{PacketID: 2, QoS: 2, Conn: 2, Seq: 10, MessageID: 12, Hash: 42, Pending: true},
			{PacketID: 15, QoS: 2, Conn: 3, Seq: 1 << 40, Hash: 1<<64 - 1},
			{PacketID: 16, QoS: 1, Conn: 3, Seq: 2, MessageID: 1<<63 - 1, Hash: 5},
			{PacketID: 65535, QoS: 2, Conn: 3, Seq: 3, MessageID: 99, Pending: true},
		},
		"b": {{PacketID: 1, QoS: 1, Conn: 1, Seq: 1, MessageID: 1, Hash: 1}},
	}
}

// CheckDeliveries checks that s returns want's records (sessions of epoch
// 1 or less), in order, from LoadSession and from Delivery.
func CheckDeliveries(t *testing.T, s store.Store, want map[string][]store.Delivery) {
	t.Helper()
	ctx := context.Background()
	for client, ds := range want {
		ses, err := s.LoadSession(ctx, client)
		if err != nil {
			t.Fatalf("load session of %s: %v", client, err)
		}
		if len(ses.Deliveries) != len(ds) {
			t.Fatalf("session of %s: %+v, want %+v", client, ses.Deliveries, ds)
		}
		for i, d := range ds {
			if ses.Deliveries[i] != d {
				t.Errorf("delivery %d of %s = %+v, want %+v", i, client, ses.Deliveries[i], d)
			}
			if got, err := s.Delivery(ctx, client, d.PacketID); err != nil || got != d {
				t.Errorf("Delivery(%s, %d) = %+v, %v, want %+v", client, d.PacketID, got, err, d)
			}
		}
	}
}

// testSessionConnackBeside commits a connection's records (Connected, as
// at a CONNACK, which forgets what the epoch voided) again and again while
// the writer commits deliveries, half of them void (of connection 0,
// before the epoch) so that each of those commits has records to forget
// in the pages the writer changes: no record of the epoch is lost to the
// other commit's rewrite of its page.
func testSessionConnackBeside(t *testing.T, o Opener) {
	s := open(t, o)
	ctx := context.Background()
	if err := s.Commit(ctx, &store.Commit{ClientID: "c", Attempted: 1, Connected: 1, Epoch: 1}); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	const rounds, per = 30, 200
	stop, done := make(chan struct{}), make(chan error, 1)
	go func() {
		for k := int64(2); ; k++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := s.Commit(ctx, &store.Commit{ClientID: "c", Attempted: k, Connected: k}); err != nil {
				done <- err
				return
			}
		}
	}()
	want := map[uint16]store.Delivery{}
	for r := range rounds {
		c := &store.Commit{ClientID: "c"}
		for k := range per {
			id := uint16((r*per+k)%65535 + 1)
			d := store.Delivery{PacketID: id, QoS: 1, Conn: int64(k % 2), Seq: int64(r*per + k + 1), MessageID: int64(r), Hash: uint64(k)}
			c.Deliveries = append(c.Deliveries, store.CommitDelivery{Message: -1, Delivery: d})
			if d.Conn == 1 {
				want[id] = d
			}
		}
		if err := s.Commit(ctx, c); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("connection records: %v", err)
	}
	ses, err := s.LoadSession(ctx, "c")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	got := map[uint16]store.Delivery{}
	for _, d := range ses.Deliveries {
		got[d.PacketID] = d // only those of the epoch
	}
	lost := 0
	for id, d := range want {
		if got[id] != d {
			lost++
		}
	}
	if lost > 0 || len(got) != len(want) {
		t.Errorf("%d of %d records lost or changed, %d loaded", lost, len(want), len(got))
	}
}
