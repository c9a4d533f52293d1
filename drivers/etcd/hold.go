package etcd

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// HoldMargin is added to the lease TTL for how long removals stay held
// after etcd comes back: the agents' own reconnection takes a moment.
const HoldMargin = time.Second

// RemovalHold decides when the removal of a target becomes visible to
// Prometheus. It serves the master's file_sd and every agent's http_sd
// alike, so both follow one rule:
//
//   - While etcd answers and has answered for at least the hold (lease TTL +
//     HoldMargin), a removal is visible at once: a dead agent's targets
//     leave when its lease expires.
//   - After etcd was silent (an outage, a partition, a restart: no answer
//     for longer than Gap), every agent's lease may have expired at once,
//     and the agents need up to a TTL to re-register. Removals seen in the
//     first hold after etcd answers again are held until the hold ends;
//     a key published again meanwhile cancels its removal. A target whose
//     agent really died leaves when the hold ends, TTL + HoldMargin after
//     etcd came back.
//
// The consumer keeps the last value of every key; RemovalHold only says
// when a removal may take effect. It reports every answer of etcd
// (Contact: a read, a watch response, a progress notification; keep a
// watch talking with RequestProgressEvery) and each removal and re-put.
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
	return &RemovalHold{hold: ttl + HoldMargin, gap: ttl / 2, pending: map[string]time.Time{}}
}

// Hold is how long removals are held after etcd answers again: the lease
// TTL plus HoldMargin.
func (h *RemovalHold) Hold() time.Duration { return h.hold }

// Gap is the silence after which etcd counts as having been away: half a
// TTL, shorter than any silence that can expire a lease kept alive every
// third of a TTL.
func (h *RemovalHold) Gap() time.Duration { return h.gap }

// Heartbeat is how often a consumer should make etcd answer when nothing
// changes (RequestProgressEvery), well within Gap.
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

// RequestProgressEvery asks etcd every interval for a progress notification
// on the watch stream of ctx (pass the context the watch was opened with),
// so that a consumer hears from etcd when nothing changes and can tell a
// quiet etcd from an unreachable one. It returns when ctx ends. While etcd
// is unreachable a request waits, so run it beside the loop that reads the
// watch.
func RequestProgressEvery(ctx context.Context, w clientv3.Watcher, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = w.RequestProgress(ctx) // fails only when ctx ends or the watcher closes
		}
	}
}
