package etcd

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// HoldMargin is added to the time the agents need to re-register for how
// long removals stay held after etcd comes back: granting a lease and
// writing the keys take a moment.
const HoldMargin = time.Second

// RejoinMax is the longest an agent waits between two attempts to reach
// etcd again (slave.Node caps its retry delay, jitter included, at it). An
// agent that lost its session in an outage tries again at most RejoinMax
// after etcd is back, however long the outage was, so removals are held
// for at least that long whatever the TTL.
const RejoinMax = 5 * time.Second

// RemovalHold decides when the removal of a target becomes visible to
// Prometheus. It is the one rule for the master's file_sd
// (master/targetsync) and every agent's http_sd, /api/v1/targets and
// status (slave.Snapshot):
//
//   - While etcd answers and has answered for at least the hold, a removal
//     is visible at once: a dead agent's targets leave when its lease
//     expires.
//   - After etcd was silent (an outage, a partition, a restart: no answer
//     for longer than Gap), every agent's lease may have expired at once,
//     and the agents need time to re-register: up to a TTL for an agent
//     whose lease etcd restored (it notices the loss only when the lease
//     expires), up to RejoinMax for one already waiting to retry. Removals
//     seen in the first hold (HoldFor: the longer of the two, plus
//     HoldMargin) after etcd answers again are held until the hold ends;
//     a key published again meanwhile cancels its removal. A target whose
//     agent really died leaves when the hold ends: 6 s after etcd came back
//     with the default 5 s TTL.
//
// The consumer keeps the last value of every key; RemovalHold only says
// when a removal may take effect. It reports every answer of etcd
// (Contact: a read, a watch response, Heartbeats while the watch is
// quiet) and each removal and re-put.
// RemovalHold is not safe for concurrent use: one goroutine owns it.
type RemovalHold struct {
	hold    time.Duration
	gap     time.Duration
	last    time.Time // last answer from etcd; zero: none yet
	healthy time.Time // etcd answers again since; zero: for longer than we know
	pending map[string]time.Time
}

// NewRemovalHold returns the rule for agents whose leases have the given
// TTL.
func NewRemovalHold(ttl time.Duration) *RemovalHold {
	return &RemovalHold{hold: HoldFor(ttl), gap: ttl / 2, pending: map[string]time.Time{}}
}

// HoldFor is how long removals are held after etcd answers again, for
// agents whose leases have the given TTL: max(TTL, RejoinMax) + HoldMargin.
func HoldFor(ttl time.Duration) time.Duration { return max(ttl, RejoinMax) + HoldMargin }

// Hold is how long removals are held after etcd answers again (HoldFor).
func (h *RemovalHold) Hold() time.Duration { return h.hold }

// Gap is the silence after which etcd counts as having been away: half a
// TTL, shorter than any silence that can expire a lease kept alive every
// third of a TTL.
func (h *RemovalHold) Gap() time.Duration { return h.gap }

// Heartbeat is how often a consumer should make etcd answer when nothing
// changes (the interval of Heartbeats), well within Gap.
func (h *RemovalHold) Heartbeat() time.Duration { return h.gap / 3 }

// Contact records an answer from etcd at now. It reports whether it ends a
// silence longer than Gap, which starts a hold. The very first answer
// starts none: there is no earlier view to keep.
func (h *RemovalHold) Contact(now time.Time) (recovered bool) {
	recovered = !h.last.IsZero() && now.Sub(h.last) > h.gap
	if recovered {
		h.healthy = now
	}
	h.last = now
	return recovered
}

// Healthy reports whether etcd answered within Gap of now.
func (h *RemovalHold) Healthy(now time.Time) bool {
	return !h.last.IsZero() && now.Sub(h.last) <= h.gap
}

// LastContact is when etcd last answered (zero: never). Once etcd is not
// Healthy, what the consumer shows is etcd as of then: LastContact is the
// "stale since" of its answers, and LastContact + Gap the moment it stops
// being Healthy.
func (h *RemovalHold) LastContact() time.Time { return h.last }

// Remove reports whether the removal of key, seen at now, is held: then the
// consumer keeps serving the key's last value until Due returns the key (or
// Put cancels the removal). Otherwise the removal is visible at once.
func (h *RemovalHold) Remove(key string, now time.Time) (held bool) {
	if _, ok := h.pending[key]; ok {
		return true
	}
	if h.healthy.IsZero() {
		return false
	}
	end := h.healthy.Add(h.hold)
	if !now.Before(end) {
		return false
	}
	h.pending[key] = end
	return true
}

// Put records that key is published again, cancelling a held removal.
func (h *RemovalHold) Put(key string) { delete(h.pending, key) }

// Held reports whether key's removal is pending.
func (h *RemovalHold) Held(key string) bool {
	_, ok := h.pending[key]
	return ok
}

// Due returns the keys whose hold has ended by now and forgets them; their
// removal is visible now.
func (h *RemovalHold) Due(now time.Time) []string {
	var due []string
	for key, end := range h.pending {
		if !now.Before(end) {
			due = append(due, key)
			delete(h.pending, key)
		}
	}
	return due
}

// Next returns when the next held removal becomes visible; ok is false
// when none is held.
func (h *RemovalHold) Next() (at time.Time, ok bool) {
	for _, end := range h.pending {
		if !ok || end.Before(at) {
			at, ok = end, true
		}
	}
	return at, ok
}

// Reset forgets every answer and held removal: the consumer starts again
// from nothing (a master whose term ended while etcd answered).
func (h *RemovalHold) Reset() {
	h.last, h.healthy = time.Time{}, time.Time{}
	clear(h.pending)
}

// Heartbeats makes etcd answer every interval while ctx lasts, and sends
// the time of each answer on answered (or drops it while the consumer has
// not taken the one before), so that a consumer of a watch hears from etcd
// when nothing changes and can tell a quiet etcd from a silent one
// (RemovalHold.Contact). Each answer is a count of the keys under prefix
// (pass a small prefix, such as Keys.Members), read linearizably: the
// cluster answers, not one member, and the read fails while etcd is
// unreachable or has no leader. A read gets interval*3 to answer.
//
// A progress notification on the watch would cost less, but etcd 3.6+
// sends none for a watch that started at a revision it has not reached
// yet: a watch from the current revision in a quiet cluster, or one the
// client resumed after a reconnect. Such a consumer would take a quiet
// cluster for an outage.
func Heartbeats(ctx context.Context, kv clientv3.KV, prefix string, interval time.Duration, answered chan<- time.Time) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 3*interval)
		_, err := kv.Get(rctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			continue
		}
		select {
		case answered <- time.Now():
		default:
		}
	}
}
