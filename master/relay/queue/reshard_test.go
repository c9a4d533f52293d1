package queue

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// streamOpts has one stream, "u", of the given number of shards. (The
// tests stop the log to restart it, which persists every cursor.)
func streamOpts(dir string, shards int) Options {
	o := Options{Dir: dir, MaxBytes: 1 << 20, Shards: shards}
	for s := range shards {
		o.Cursors = append(o.Cursors, Cursor{Name: fmt.Sprintf("u-%d", s), Shard: s, Stream: "u"})
	}
	return o
}

func wantAll(t *testing.T, cursor int, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Fatalf("cursor %d read %v, which lacks %s", cursor, got, w)
		}
	}
}

// Fewer shards (concurrency lowered): what the shards that went had not
// delivered is delivered by the shards that read their records now.
func TestFewerShardsSkipNothing(t *testing.T) {
	dir := t.TempDir()
	h := start(t, streamOpts(dir, 4))
	for _, round := range []string{"old", "mid"} {
		for s := range 4 {
			h.append(s, fmt.Sprintf("%s%d", round, s))
		}
		// Shards 0 and 1 deliver; 2 and 3 are behind (their upstream
		// requests still under way when the relay stops).
		h.readAll(0, true)
		h.readAll(1, true)
	}
	h.stop()

	h = start(t, streamOpts(dir, 2))
	h.append(0, "new0")
	wantAll(t, 0, h.readAll(0, true), "old2", "mid2")
	wantAll(t, 1, h.readAll(1, true), "old3", "mid3")
	wantAll(t, 0, h.readAll(0, true), "new0") // past the barrier once shard 1 is
	for _, gone := range []string{"u-2", "u-3"} {
		if _, err := os.Stat(filepath.Join(dir, "cursors", gone)); !os.IsNotExist(err) {
			t.Errorf("cursor file %s of a shard that went: %v, want it deleted", gone, err)
		}
	}
}

// More shards after fewer, before the records of the shards that went
// were delivered: the new shards deliver them.
func TestMoreShardsSkipNothing(t *testing.T) {
	dir := t.TempDir()
	h := start(t, streamOpts(dir, 4))
	h.append(2, "a2") // shard 2 behind
	h.append(0, "a0")
	h.readAll(0, true)
	h.stop()

	h = start(t, streamOpts(dir, 2)) // a2 is shard 0's now; it stops before reading it
	h.append(1, "b1")
	h.readAll(1, true)
	h.stop()

	h = start(t, streamOpts(dir, 4)) // and shard 2's again
	wantAll(t, 2, h.readAll(2, true), "a2")
}

// A stream that is new starts at the end, however many shards it has,
// and a stream whose shards did not change resumes where it was.
func TestUnchangedAndNewStreamsResume(t *testing.T) {
	dir := t.TempDir()
	h := start(t, streamOpts(dir, 2))
	h.append(0, "a0")
	h.append(1, "a1")
	h.readAll(0, true)
	h.stop()

	o := streamOpts(dir, 2)
	o.Cursors = append(o.Cursors, Cursor{Name: "v-0", Shard: 0, Stream: "v"}, Cursor{Name: "v-1", Shard: 1, Stream: "v"})
	h = start(t, o)
	if got := h.readAll(0, false); len(got) != 0 {
		t.Fatalf("cursor u-0 read %v again, want nothing", got)
	}
	if got := fmt.Sprint(h.readAll(1, false)); got != "[a1]" {
		t.Fatalf("cursor u-1 read %s, want [a1]", got)
	}
	if got := h.readAll(2, false); len(got) != 0 {
		t.Fatalf("cursor v-0 of a new stream read %v, want nothing", got)
	}
}

// After a change of shards a series' newer records may be another shard's
// than its older ones: no shard of the stream reads what was appended
// after the change until every shard has delivered what was before it.
func TestReshardKeepsEachSeriesInOrder(t *testing.T) {
	dir := t.TempDir()
	h := start(t, streamOpts(dir, 2))
	h.append(1, "x-old") // series x in shard 1 of 2; its upstream is behind
	h.stop()

	h = start(t, streamOpts(dir, 3))
	h.append(2, "x-new") // x in shard 2 of 3
	if got := h.readAll(2, true); len(got) != 0 {
		t.Fatalf("shard 2 read %v before shard 1 delivered x-old", got)
	}
	if got := fmt.Sprint(h.readAll(1, true)); got != "[x-old]" {
		t.Fatalf("shard 1 read %s, want [x-old]", got)
	}
	if got := h.readAll(2, true); len(got) != 0 {
		t.Fatalf("shard 2 read %v before shard 0 reached the barrier", got)
	}
	wait := waitChannel(t, h, 2)
	if got := h.readAll(0, true); len(got) != 0 {
		t.Fatalf("shard 0 read %v, want nothing", got)
	}
	select {
	case <-wait: // shard 0 reaching the barrier wakes the shards waiting at it
	default:
		t.Fatal("shard 2 not woken when the last shard reached the barrier")
	}
	if got := fmt.Sprint(h.readAll(2, true)); got != "[x-new]" {
		t.Fatalf("shard 2 read %s, want [x-new]", got)
	}
	h.stop()
	if _, err := os.Stat(filepath.Join(dir, barrierDir, "u")); !os.IsNotExist(err) {
		t.Fatalf("barrier file left once every shard is persisted past it: %v", err)
	}
}

// A barrier survives a restart until every shard is past it, and a
// second change before that adds a second one.
func TestBarrierSurvivesRestartAndSecondChange(t *testing.T) {
	dir := t.TempDir()
	h := start(t, streamOpts(dir, 2))
	h.append(1, "a-old")
	h.stop()

	h = start(t, streamOpts(dir, 3))
	h.append(2, "a-mid")
	h.stop() // nothing delivered

	h = start(t, streamOpts(dir, 4))
	h.append(3, "a-new")
	raw, err := os.ReadFile(filepath.Join(dir, barrierDir, "u"))
	if err != nil {
		t.Fatal(err)
	}
	if bs, ok := decodeBarriers(raw); !ok || len(bs) != 2 {
		t.Fatalf("barriers %v (valid %v), want two", bs, ok)
	}
	// In order: a-old (shard 1 of 4 now), then a-mid (shard 2), then a-new
	// (shard 3), though the shards are read from the last.
	var got []string
	for range 3 {
		for s := 3; s >= 0; s-- {
			got = append(got, h.readAll(s, true)...)
		}
	}
	if fmt.Sprint(got) != "[a-old a-mid a-new]" {
		t.Fatalf("read %v, want [a-old a-mid a-new]", got)
	}
}

// A damaged barrier file costs the order it kept, not a record, and does
// not stop the queue from opening.
func TestDamagedBarrierFileIsIgnored(t *testing.T) {
	dir := t.TempDir()
	h := start(t, streamOpts(dir, 2))
	h.append(1, "b-old")
	h.stop()
	h = start(t, streamOpts(dir, 3))
	h.stop()
	path := filepath.Join(dir, barrierDir, "u")
	if err := os.WriteFile(path, []byte("garbage"), 0o640); err != nil {
		t.Fatal(err)
	}
	h = start(t, streamOpts(dir, 3))
	h.append(2, "b-new")
	if got := fmt.Sprint(h.readAll(2, true)); got != "[b-new]" {
		t.Fatalf("shard 2 read %s, want [b-new] (no barrier left)", got)
	}
	wantAll(t, 1, h.readAll(1, true), "b-old")
}

// waitChannel returns the channel reader i's TryNext gives to wait on.
func waitChannel(t *testing.T, h *harness, i int) <-chan struct{} {
	t.Helper()
	r := h.l.Reader(i)
	defer r.Close()
	_, _, wait, err := r.TryNext(nil)
	if err != nil || wait == nil {
		t.Fatalf("reader %d: wait %v, err %v; want to wait", i, wait, err)
	}
	return wait
}
