package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type harness struct {
	t       *testing.T
	l       *Log
	cancel  context.CancelFunc
	done    chan error
	dropped atomic.Int64
	corrupt atomic.Int64
}

// start opens dir and runs the log until the test ends or stop is called.
func start(t *testing.T, opts Options) *harness {
	t.Helper()
	h := &harness{t: t}
	opts.OnDrop = func(_, _, samples int) { h.dropped.Add(int64(samples)) }
	opts.OnCorrupt = func(int) { h.corrupt.Add(1) }
	l, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.l, h.cancel, h.done = l, cancel, make(chan error, 1)
	go func() { h.done <- l.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Error(err)
	}
	h.cancel = nil
}

func (h *harness) append(shard int, payloads ...string) {
	h.t.Helper()
	var recs []Record
	for _, p := range payloads {
		recs = append(recs, Record{Shard: shard, Samples: 1, Data: []byte(p)})
	}
	if err := h.l.Append(context.Background(), recs); err != nil {
		h.t.Fatal(err)
	}
}

// readAll reads every committed record of cursor i without waiting, acking
// after each when ack is set.
func (h *harness) readAll(i int, ack bool) []string {
	h.t.Helper()
	r := h.l.Reader(i)
	defer r.Close()
	var got []string
	for {
		rec, end, wait, err := r.TryNext(nil)
		if err != nil {
			h.t.Fatal(err)
		}
		if wait != nil {
			return got
		}
		got = append(got, string(rec.Data))
		if ack {
			r.Ack(end, 1, rec.Samples)
		}
	}
}

// settled waits until every acknowledged position is persisted.
func (h *harness) settled() {
	h.t.Helper()
	poll.Until(h.t, 10*time.Second, func() bool {
		h.l.mu.Lock()
		defer h.l.mu.Unlock()
		for _, c := range h.l.cursors {
			if c.durable != c.acked {
				return false
			}
		}
		return true
	}, "cursors not persisted")
}

func opts(dir string) Options {
	return Options{Dir: dir, MaxBytes: 1 << 20, Shards: 1, Cursors: []Cursor{{Name: "a", Shard: 0}, {Name: "b", Shard: 0}}}
}

func TestRestartResumesFromAckedCursor(t *testing.T) {
	dir := t.TempDir()
	h := start(t, opts(dir))
	h.append(0, "r1", "r2")
	h.append(0, "r3")
	r := h.l.Reader(0)
	rec, end, err := r.Next(context.Background(), nil)
	if err != nil || string(rec.Data) != "r1" {
		t.Fatalf("first record %q, err %v", rec.Data, err)
	}
	r.Ack(end, 1, 1)
	r.Close()
	h.stop()

	h = start(t, opts(dir))
	h.append(0, "r4")
	if got := fmt.Sprint(h.readAll(0, true)); got != "[r2 r3 r4]" {
		t.Fatalf("cursor a after restart read %s", got)
	}
	if got := fmt.Sprint(h.readAll(1, false)); got != "[r1 r2 r3 r4]" {
		t.Fatalf("cursor b after restart read %s", got)
	}
	if st := h.l.Stats(1); st.Records != 4 || st.Samples != 4 {
		t.Fatalf("cursor b backlog %+v, want 4 records", st)
	}
}

func TestNewCursorStartsAtEnd(t *testing.T) {
	dir := t.TempDir()
	h := start(t, Options{Dir: dir, MaxBytes: 1 << 20, Cursors: []Cursor{{Name: "a"}}})
	h.append(0, "old")
	h.stop()
	h = start(t, opts(dir))
	h.append(0, "new")
	if got := fmt.Sprint(h.readAll(1, false)); got != "[new]" {
		t.Fatalf("new cursor read %s", got)
	}
	if got := fmt.Sprint(h.readAll(0, false)); got != "[old new]" {
		t.Fatalf("old cursor read %s", got)
	}
}

func TestCorruptRecordsSkippedAndCounted(t *testing.T) {
	dir := t.TempDir()
	h := start(t, opts(dir))
	h.append(0, "good1", "bad-crc", "good2")
	h.append(0, "torn-tail-record")
	h.stop()

	// Flip a payload byte of the second record and cut the last one short,
	// as a crash in the middle of a write would.
	seg := filepath.Join(dir, fmt.Sprintf("%020d.seg", 1))
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	second := headerSize + len("good1")
	data[second+headerSize] ^= 0xff
	data = data[:len(data)-5]
	if err := os.WriteFile(seg, data, 0o640); err != nil {
		t.Fatal(err)
	}

	h = start(t, opts(dir))
	h.append(0, "after")
	if got := fmt.Sprint(h.readAll(0, true)); got != "[good1 good2 after]" {
		t.Fatalf("read %s", got)
	}
	if n := h.corrupt.Load(); n != 2 {
		t.Fatalf("corrupt records counted %d, want 2", n)
	}
}

func TestFullQueueDropsOldest(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	o.MaxBytes, o.SegmentBytes = 4096, 1024
	h := start(t, o)
	payload := string(make([]byte, 200))
	for i := range 40 {
		h.append(0, fmt.Sprintf("%03d", i)+payload)
	}
	if b := h.l.Bytes(); b > o.MaxBytes {
		t.Fatalf("log holds %d bytes, limit %d", b, o.MaxBytes)
	}
	got := h.readAll(0, true)
	if len(got) == 0 || len(got) >= 40 || got[len(got)-1][:3] != "039" {
		t.Fatalf("read %d records, want the newest few ending with 039", len(got))
	}
	if first := got[0][:3]; first == "000" {
		t.Fatal("oldest record survived")
	}
	// Both cursors lost the same records.
	if want := int64(2 * (40 - len(got))); h.dropped.Load() != want {
		t.Fatalf("dropped %d samples, want %d", h.dropped.Load(), want)
	}
}

func TestSegmentsDeletedOnceAllCursorsAck(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	o.SegmentBytes = 100
	h := start(t, o)
	for range 10 {
		h.append(0, string(make([]byte, 90)))
	}
	before := h.l.Bytes()
	h.readAll(0, true)
	h.settled()
	if h.l.Bytes() != before {
		t.Fatal("segments deleted while cursor b still needs them")
	}
	h.readAll(1, true)
	poll.Until(t, 10*time.Second, func() bool { return h.l.Bytes() < before/5 },
		"log still %d bytes after both cursors acked (was %d)", poll.Latest(func() any { return h.l.Bytes() }), before)
}

func TestGroupCommitConcurrentAppends(t *testing.T) {
	h := start(t, Options{Dir: t.TempDir(), MaxBytes: 64 << 20, Shards: 2, Cursors: []Cursor{{Name: "s0", Shard: 0}, {Name: "s1", Shard: 1}}})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if err := h.l.Append(context.Background(), []Record{{Shard: (w + i) % 2, Samples: 3, Data: []byte{byte(w), byte(i)}}}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if a, b := len(h.readAll(0, true)), len(h.readAll(1, true)); a+b != 400 || a != 200 {
		t.Fatalf("shards read %d and %d records, want 200 each", a, b)
	}
}

func TestAppendAfterStopFails(t *testing.T) {
	h := start(t, opts(t.TempDir()))
	h.stop()
	if err := h.l.Append(context.Background(), []Record{{Data: []byte("x")}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after stop: %v, want ErrClosed", err)
	}
	r := h.l.Reader(0)
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := r.Next(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("next after stop: %v, want ErrClosed", err)
	}
}

func TestSecondOpenOfDirFails(t *testing.T) {
	dir := t.TempDir()
	start(t, opts(dir))
	if _, err := Open(opts(dir)); err == nil {
		t.Fatal("second Open of a locked dir succeeded")
	}
}

// TestShardWithoutRecordsDoesNotPinSegments: with few series some shards
// get nothing. Their cursors must still move past other shards' records,
// so that once everything is delivered the queue shrinks to nothing,
// instead of filling up and dropping "oldest" segments that were all
// delivered.
func TestShardWithoutRecordsDoesNotPinSegments(t *testing.T) {
	var logs logbuf.Buffer
	o := Options{
		Dir: t.TempDir(), MaxBytes: 8192, SegmentBytes: 1024, Shards: 2, IdleSeal: 10 * time.Millisecond,
		Cursors: []Cursor{{Name: "s0", Shard: 0}, {Name: "s1", Shard: 1}},
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
	}
	h := start(t, o)
	payload := string(make([]byte, 200))
	for i := range 100 { // 23 KiB through an 8 KiB queue
		h.append(0, fmt.Sprintf("%03d", i)+payload)
		if got := h.readAll(0, true); len(got) != 1 {
			t.Fatalf("shard 0 read %d records, want 1", len(got))
		}
		if got := h.readAll(1, true); len(got) != 0 {
			t.Fatalf("shard 1 read %d records, want none", len(got))
		}
	}
	for i := range 2 {
		if st := h.l.Stats(i); st.Bytes != 0 || st.Records != 0 {
			t.Errorf("cursor %d backlog %+v after everything was read, want none", i, st)
		}
	}
	poll.Until(t, 10*time.Second, func() bool { return h.l.Bytes() == 0 },
		"queue still holds %d bytes after everything was delivered", poll.Latest(func() any { return h.l.Bytes() }))
	if strings.Contains(logs.String(), "queue full") || h.dropped.Load() != 0 {
		t.Fatalf("queue dropped delivered data (%d samples):\n%s", h.dropped.Load(), logs.String())
	}
	// Cursors left at the end of a sealed, deleted segment resume after it.
	h.settled()
	h.stop()
	h = start(t, o)
	h.append(1, "new")
	if a, b := h.readAll(0, false), h.readAll(1, false); len(a) != 0 || fmt.Sprint(b) != "[new]" {
		t.Fatalf("after restart read %q and %q, want nothing and [new]", a, b)
	}
}

// TestFlagsKeptAcrossRestart: a record's flags (the relay's remote-write
// version) come back as written, also from a reopened log.
func TestFlagsKeptAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	h := start(t, opts(dir))
	recs := []Record{{Shard: 0, Samples: 1, Flags: 0, Data: []byte("v1")}, {Shard: 0, Samples: 2, Flags: 2, Data: []byte("v2")}}
	if err := h.l.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	h.stop()
	h = start(t, opts(dir)) // the cursor was persisted before the append
	r := h.l.Reader(0)
	defer r.Close()
	var got []uint16
	for {
		rec, _, wait, err := r.TryNext(nil)
		if err != nil {
			t.Fatal(err)
		}
		if wait != nil {
			break
		}
		got = append(got, rec.Flags)
	}
	if fmt.Sprint(got) != "[0 2]" {
		t.Fatalf("flags %v, want [0 2]", got)
	}
}

// A second Log on the same directory is refused once LockWait has passed;
// one that waits while the holder closes gets the directory.
func TestLockWaitsForTheHolder(t *testing.T) {
	dir := t.TempDir()
	first, err := Open(opts(dir))
	if err != nil {
		t.Fatal(err)
	}
	o := opts(dir)
	o.LockWait = 20 * time.Millisecond
	if _, err := Open(o); err == nil || !strings.Contains(err.Error(), "another relay uses it?") {
		t.Fatalf("second Open on a held directory: %v, want refused", err)
	}
	o.LockWait = time.Minute
	opened := make(chan error, 1)
	go func() {
		l, err := Open(o)
		if err == nil {
			l.Close()
		}
		opened <- err
	}()
	first.Close()
	if err := <-opened; err != nil {
		t.Fatalf("Open waiting for the holder to close: %v", err)
	}
}
