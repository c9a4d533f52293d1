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
	var last time.Time
	for d := time.Second; d <= 10*time.Second; d += h.Heartbeat() {
		if h.Contact(at(d)) {
			t.Fatalf("contact at %s after a heartbeat counted as a recovery", d)
		}
		last = at(d)
	}
	if !h.Healthy(at(10*time.Second)) || h.Healthy(at(10*time.Second+h.Gap()+1)) {
		t.Fatal("Healthy does not follow the last answer")
	}
	if got := h.LastContact(); !got.Equal(last) {
		t.Fatalf("LastContact = %s, want the last answer %s", got, last)
	}

	// A silence longer than Gap: the next answer starts a hold.
	back := at(20 * time.Second)
	if !h.Contact(back) {
		t.Fatal("answer after a silence not counted as a recovery")
	}
	end := back.Add(h.Hold())
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

// The hold covers what re-registering takes: a TTL for an agent whose lease
// etcd restored, RejoinMax for one waiting to retry, plus HoldMargin.
func TestHoldFor(t *testing.T) {
	for _, tc := range []struct{ ttl, want time.Duration }{
		{2 * time.Second, RejoinMax + HoldMargin},
		{5 * time.Second, 6 * time.Second},
		{10 * time.Second, 10*time.Second + HoldMargin},
	} {
		if got := HoldFor(tc.ttl); got != tc.want {
			t.Errorf("HoldFor(%s) = %s, want %s", tc.ttl, got, tc.want)
		}
		if got := NewRemovalHold(tc.ttl).Hold(); got != tc.want {
			t.Errorf("NewRemovalHold(%s).Hold() = %s, want %s", tc.ttl, got, tc.want)
		}
	}
}
