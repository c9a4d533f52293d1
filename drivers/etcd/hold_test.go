package etcd

import (
	"slices"
	"testing"
	"time"
)

func TestRemovalHold(t *testing.T) {
	const ttl = 4 * time.Second
	h := NewRemovalHold(ttl)
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	// The first answer is no recovery: removals show at once.
	if h.Contact(at(0)) {
		t.Fatal("first contact counted as a recovery")
	}
	if h.Remove("k1", at(time.Second)) {
		t.Fatal("removal held while etcd answers")
	}
	// Answers closer than Gap keep etcd healthy.
	for d := time.Second; d <= 10*time.Second; d += h.Heartbeat() {
		if h.Contact(at(d)) {
			t.Fatalf("contact at %s after a heartbeat counted as a recovery", d)
		}
	}
	if !h.Healthy(at(10*time.Second)) || h.Healthy(at(10*time.Second+h.Gap()+1)) {
		t.Fatal("Healthy does not follow the last answer")
	}

	// A silence longer than Gap: the next answer starts a hold.
	back := at(20 * time.Second)
	if !h.Contact(back) {
		t.Fatal("answer after a silence not counted as a recovery")
	}
	end := back.Add(ttl + HoldMargin)
	if !h.Remove("k1", back) || !h.Remove("k2", back.Add(time.Second)) || !h.Remove("k3", back.Add(2*time.Second)) {
		t.Fatal("removals right after the recovery not held")
	}
	h.Put("k2") // re-registered
	if h.Held("k2") || !h.Held("k1") {
		t.Fatal("Put did not cancel the removal, or cancelled another")
	}
	if next, ok := h.Next(); !ok || !next.Equal(end) {
		t.Fatalf("Next = %s %v, want the end of the hold %s", next, ok, end)
	}
	if due := h.Due(end.Add(-time.Millisecond)); len(due) != 0 {
		t.Fatalf("due before the hold ended: %v", due)
	}
	due := h.Due(end)
	slices.Sort(due)
	if !slices.Equal(due, []string{"k1", "k3"}) {
		t.Fatalf("Due at the end of the hold = %v, want k1 k3", due)
	}
	if _, ok := h.Next(); ok {
		t.Fatal("something still held")
	}
	// After the hold, removals show at once again.
	if h.Remove("k4", end) {
		t.Fatal("removal held after the hold ended")
	}

	// Reset: the next answer, however late, is a first answer.
	h.Contact(back.Add(time.Hour))
	if !h.Remove("k5", back.Add(time.Hour)) {
		t.Fatal("setup: removal after a recovery not held")
	}
	h.Reset()
	if h.Contact(back.Add(3*time.Hour)) || h.Remove("k6", back.Add(3*time.Hour)) || h.Held("k5") {
		t.Fatal("Reset did not forget the answers and the held removals")
	}
}
