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
	wantAll(t, 0, h.readAll(0, true), "old2", "mid2", "new0")
	wantAll(t, 1, h.readAll(1, true), "old3", "mid3")
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
