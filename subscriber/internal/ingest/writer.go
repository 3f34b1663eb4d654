package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/store"
)

// Redelivery windows, in QoS 1 and 2 messages stored for this client after
// the candidate row. Mosquitto allocates packet ids sequentially (1..65535),
// so an id seen fewer than idReuseSafe messages ago cannot have been reused,
// and one seen 65535 or more messages ago certainly was.
const (
	idReuseSafe    = 32768
	idReuseCertain = 65535
)

type verdict int

const (
	fresh     verdict = iota // store it
	redundant                // already stored: acknowledge only
	ambiguous                // store it with duplicate: true
)

// write commits batches until ctx ends and returns what it could not commit.
func (i *Ingester) write(ctx context.Context) []arrival {
	for {
		select {
		case <-ctx.Done():
			return nil
		case a := <-i.queue:
			batch := i.collect([]arrival{a})
			if !i.commit(ctx, batch) {
				return batch
			}
		}
	}
}

// collect adds whatever is queued, up to MaxBatch.
func (i *Ingester) collect(batch []arrival) []arrival {
	for len(batch) < i.cfg.MaxBatch {
		select {
		case a := <-i.queue:
			batch = append(batch, a)
		default:
			i.m.QueueDepth.Set(float64(len(i.queue)))
			return batch
		}
	}
	i.m.QueueDepth.Set(float64(len(i.queue)))
	return batch
}

// commit stores batch, retrying with backoff until it succeeds (true) or
// ctx ends (false). Nothing is acknowledged unless it was committed.
func (i *Ingester) commit(ctx context.Context, batch []arrival) bool {
	backoff := 100 * time.Millisecond
	for {
		err := i.commitOnce(ctx, batch)
		if err == nil {
			if i.storeErr.Swap(nil) != nil {
				i.log.Info("store commits succeed again")
			}
			return true
		}
		i.m.StoreErrors.Inc()
		i.storeErr.Store(&err)
		i.log.Warn("commit failed; messages stay unacknowledged and are retried",
			"messages", len(batch), "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (i *Ingester) commitOnce(ctx context.Context, batch []arrival) error {
	rows := make([]store.Message, 0, len(batch))
	var dropped, dups int
	for k, a := range batch {
		m := a.msg
		if a.dup && m.QoS > 0 {
			v, err := i.classify(ctx, batch[:k], a)
			if err != nil {
				return err
			}
			switch v {
			case redundant:
				dropped++
				continue
			case ambiguous:
				m.Duplicate = true
				dups++
			}
		}
		rows = append(rows, m)
	}
	start := time.Now()
	if err := i.st.Insert(ctx, rows); err != nil {
		return err
	}
	i.m.CommitSeconds.Observe(time.Since(start).Seconds())
	i.m.BatchSize.Observe(float64(len(rows)))
	i.m.Stored.Add(float64(len(rows)))
	i.m.DuplicatesDropped.Add(float64(dropped))
	i.m.DuplicatesStored.Add(float64(dups))
	for _, a := range batch {
		a.ack()
	}
	if dropped > 0 {
		i.log.Info("redeliveries already stored were acknowledged, not stored again", "count", dropped)
	}
	if i.cfg.Committed != nil && len(rows) > 0 {
		i.cfg.Committed(rows)
	}
	return nil
}

// classify decides what to do with an arrival carrying the DUP flag: the
// broker resends unacknowledged messages with the same packet id after a
// reconnect, including ones we committed whose acknowledgement was lost.
func (i *Ingester) classify(ctx context.Context, earlier []arrival, a arrival) (verdict, error) {
	for k := len(earlier) - 1; k >= 0; k-- {
		if e := earlier[k].msg; e.PacketID == a.msg.PacketID && e.ClientID == a.msg.ClientID {
			// Its first delivery is in this very batch.
			if same(e, a.msg) {
				return redundant, nil
			}
			return fresh, nil
		}
	}
	r, err := i.st.LatestByPacketID(ctx, a.msg.ClientID, a.msg.PacketID, idReuseCertain)
	if errors.Is(err, store.ErrNotFound) {
		return fresh, nil
	}
	if err != nil {
		return fresh, fmt.Errorf("look up redelivery: %w", err)
	}
	switch {
	case !same(r.Message, a.msg):
		return fresh, nil // the first delivery never reached the store
	case r.Later < idReuseSafe:
		return redundant, nil
	case r.Later < idReuseCertain:
		return ambiguous, nil
	default:
		return fresh, nil // the packet id has been reused since
	}
}

func same(a, b store.Message) bool {
	return a.Topic == b.Topic && a.QoS == b.QoS && bytes.Equal(a.Payload, b.Payload)
}

// shutdown commits and acknowledges what is queued, then says offline and
// disconnects.
func (i *Ingester) shutdown(pending []arrival) error {
	close(i.stopping)
	ctx, cancel := context.WithTimeout(context.Background(), i.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	for {
		batch := i.collect(pending)
		pending = nil
		if len(batch) == 0 {
			break
		}
		if !i.commit(ctx, batch) {
			errs = append(errs, fmt.Errorf("shutdown: %d queued messages not committed (the broker will redeliver them)", len(batch)+len(i.queue)))
			break
		}
	}
	if i.client.IsConnectionOpen() {
		if err := i.publishStatus("offline", 2*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	i.client.Disconnect(250)
	i.log.Info("disconnected from broker")
	return errors.Join(errs...)
}
