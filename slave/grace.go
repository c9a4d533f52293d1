package slave

import "time"

// outageGrace is the rule that keeps target groups served across an etcd
// outage. When etcd comes back after an outage longer than the TTL, every
// lease expires at once (or each agent revokes its lost lease as it
// rejoins), so for a moment targets/ is nearly empty; Prometheus must not
// see that as "every target is gone". The rule:
//
//   - while etcd cannot be reached, nothing is removed (there is nothing
//     new to know);
//   - a key that goes away while etcd is down, or within grace after it is
//     reachable again, is still served until that grace has passed, so the
//     nodes have time to re-register; a node that does re-register replaces
//     its held groups at once;
//   - at any other time a key that goes away leaves at once, so a node that
//     really died still leaves within its TTL (plus the watch latency).
//
// It is kept apart from the snapshot so that one shared rule can replace
// it. Not safe for concurrent use: the Snapshot calls it under its lock.
type outageGrace struct {
	grace     time.Duration
	down      bool
	downSince time.Time
	upSince   time.Time // when etcd was last reachable again after an outage
}

// Down records that etcd cannot be reached; it reports whether that is
// news.
func (g *outageGrace) Down(now time.Time) bool {
	if g.down {
		return false
	}
	g.down, g.downSince = true, now
	return true
}

// Up records that etcd answered; it reports whether that ends an outage.
func (g *outageGrace) Up(now time.Time) bool {
	if !g.down {
		return false
	}
	g.down, g.upSince = false, now
	return true
}

// IsDown reports whether etcd is considered unreachable, and since when.
func (g *outageGrace) IsDown() (bool, time.Time) { return g.down, g.downSince }

// Holding reports whether a key that goes away at now is held rather than
// removed.
func (g *outageGrace) Holding(now time.Time) bool {
	return g.down || (!g.upSince.IsZero() && now.Before(g.upSince.Add(g.grace)))
}

// Until is when the held keys are dropped; ok is false while etcd is down
// (they are held until it is back, plus grace).
func (g *outageGrace) Until() (time.Time, bool) {
	if g.down {
		return time.Time{}, false
	}
	return g.upSince.Add(g.grace), true
}
