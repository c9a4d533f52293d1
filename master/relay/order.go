package relay

import (
	"context"
	"math"
	"sync"
	"time"
)

// defaultShardLead bounds how far, in queue time, one shard of an upstream
// may run ahead of the others. Prometheus' own shards stay within a few
// seconds of each other (they read one WAL), and receivers built for it
// (its TSDB, which refuses samples older than its head, or any store with a
// bounded out-of-order window) expect requests roughly ordered in time
// across all series, not only within one.
const defaultShardLead = 5 * time.Second

// order keeps the shards of one upstream sending the oldest data first: a
// shard sends no record appended more than lead after the oldest record
// another shard of the same upstream still has to send. The shard holding
// the oldest record never waits, so all of them progress.
type order struct {
	lead time.Duration

	mu      sync.Mutex
	heads   []int64       // per shard, append time (unix ms) of the oldest record it has to send; idle: none
	changed chan struct{} // closed and replaced when a head moves
}

// idle is the head of a shard that has nothing to send.
const idle = math.MaxInt64

func newOrder(shards int, lead time.Duration) *order {
	o := &order{lead: lead, heads: make([]int64, shards), changed: make(chan struct{})}
	for i := range o.heads {
		o.heads[i] = idle
	}
	return o
}

// set publishes shard's head: the append time of the oldest record it has
// to send, or idle.
func (o *order) set(shard int, ms int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.heads[shard] == ms {
		return
	}
	o.heads[shard] = ms
	close(o.changed)
	o.changed = make(chan struct{})
}

// limit is the newest append time (unix ms) shard may send now, and a
// channel closed when that may change.
func (o *order) limit(shard int) (int64, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	low := int64(idle)
	for i, h := range o.heads {
		if i != shard {
			low = min(low, h)
		}
	}
	if low == idle {
		return idle, o.changed
	}
	return low + o.lead.Milliseconds(), o.changed
}

// wait blocks until shard may send a record appended at ms.
func (o *order) wait(ctx context.Context, shard int, ms int64) error {
	for {
		lim, changed := o.limit(shard)
		if ms <= lim {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
