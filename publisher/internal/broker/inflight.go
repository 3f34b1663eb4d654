package broker

import (
	"context"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// inflight bounds the QoS 1 and 2 publishes that await the broker's
// acknowledgement (MQTT_MAX_INFLIGHT). A broker counts them per client and
// does not tell an MQTT 3.1.1 client when it has too many: Mosquitto answers
// the publish past its max_inflight_messages as if it had taken it, and
// drops it (see mosquitto.conf). So the client must never have more out.
//
// A publish holds a slot from before it is handed to Paho until Paho deletes
// it from its store, which it does when the PUBACK (QoS 1) or PUBCOMP (QoS 2)
// arrives, on whichever connection that is: after a reconnect Paho sends
// again, by itself, every publish still in its store, so a publish whose
// caller got 503 or 504 keeps its slot until the broker has acknowledged the
// copy sent again. The slots are therefore kept by Paho's store, which this
// type wraps.
type inflight struct {
	mqtt.Store
	slots chan struct{} // one element per slot taken

	mu   sync.Mutex
	held map[string]struct{} // the store keys of the publishes holding a slot
}

func newInflight(max int) *inflight {
	return &inflight{
		Store: mqtt.NewMemoryStore(),
		slots: make(chan struct{}, max),
		held:  make(map[string]struct{}),
	}
}

// acquire takes a slot for a publish, waiting while all are taken. It fails
// with the deadline's error when that passes first, and with ErrNotConnected
// when the connection drops meanwhile (nothing was sent). waited is how long
// it waited; zero when a slot was free.
func (f *inflight) acquire(d *deadline, lost <-chan struct{}) (waited time.Duration, err error) {
	select {
	case f.slots <- struct{}{}:
		return 0, nil
	default:
	}
	if err := d.check(); err != nil {
		return 0, err
	}
	start := time.Now()
	select {
	case f.slots <- struct{}{}:
		return time.Since(start), nil
	case <-lost:
		return time.Since(start), ErrNotConnected
	case <-d.ctx.Done():
		return time.Since(start), context.Cause(d.ctx)
	case <-d.timer.C:
		d.expired = true
		return time.Since(start), d.err
	}
}

// release gives back a slot that no stored publish holds: its publish was
// refused by Paho before it was stored.
func (f *inflight) release() {
	select {
	case <-f.slots:
	default: // more releases than slots taken would be a bug; never block Paho on it
	}
}

// inUse is how many slots are taken.
func (f *inflight) inUse() int { return len(f.slots) }

// Put is Paho storing a packet it sends; an outgoing QoS 1 or 2 publish
// takes over the slot its caller acquired.
func (f *inflight) Put(key string, m packets.ControlPacket) {
	f.Store.Put(key, m)
	if p, ok := m.(*packets.PublishPacket); !ok || p.Qos == 0 || !strings.HasPrefix(key, outboundPrefix) {
		return
	}
	f.mu.Lock()
	_, again := f.held[key]
	f.held[key] = struct{}{}
	f.mu.Unlock()
	if again {
		// The key's earlier publish was never deleted; one slot per key.
		f.release()
	}
}

// Del is Paho forgetting a packet: for a publish, its acknowledgement came.
func (f *inflight) Del(key string) {
	f.Store.Del(key)
	f.mu.Lock()
	_, ok := f.held[key]
	delete(f.held, key)
	f.mu.Unlock()
	if ok {
		f.release()
	}
}

// Reset is Paho forgetting everything (a clean session's first connect):
// nothing it held will be sent again.
func (f *inflight) Reset() {
	f.Store.Reset()
	f.mu.Lock()
	n := len(f.held)
	clear(f.held)
	f.mu.Unlock()
	for range n {
		f.release()
	}
}

// outboundPrefix starts the keys of Paho's store under which it keeps what
// it sends (its outboundKeyFromMID).
const outboundPrefix = "o."
