package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/tmpfs"
)

const (
	recordBytes = 32 << 10
	// slack is how far below MinFreeBytes the free space may fall: the log
	// counts the bytes of its records, the filesystem whole pages of every
	// file (segments, cursors, the lock).
	slack = 128 << 10
)

func record(i int) string { return fmt.Sprintf("%04d", i) + strings.Repeat("x", recordBytes) }

func diskOpts(dir string, logs *logbuf.Buffer) Options {
	o := opts(dir)
	o.MaxBytes, o.SegmentBytes, o.MinFreeBytes = 1<<30, 128<<10, 1<<20
	o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	return o
}

// A queue whose upstream is away fills the disk: it drops its oldest data,
// counted, instead of refusing new data once the disk is full, and leaves
// MinFreeBytes to everything else on the disk.
func TestFillingDiskDropsOldestData(t *testing.T) {
	dir := tmpfs.Mount(t, 4<<20)
	var logs logbuf.Buffer
	o := diskOpts(dir, &logs)
	h := start(t, o)
	const n = 200 // 6.4 MiB on a 4 MiB disk
	for i := range n {
		h.append(0, record(i))
		if f := tmpfs.Free(t, dir); f < o.MinFreeBytes-slack {
			t.Fatalf("after record %d: %d bytes free, want at least %d (queue_min_free_bytes) less %d", i, f, o.MinFreeBytes, slack)
		}
	}
	got := h.readAll(0, true)
	if len(got) == 0 || len(got) >= n || got[len(got)-1][:4] != fmt.Sprintf("%04d", n-1) {
		t.Fatalf("read %d records, want the newest ones, ending with %04d", len(got), n-1)
	}
	if want := int64(2 * (n - len(got))); h.dropped.Load() != want {
		t.Fatalf("dropped %d samples, want %d (two cursors, %d records each)", h.dropped.Load(), want, n-len(got))
	}
	if !strings.Contains(logs.String(), "limit=queue_min_free_bytes") {
		t.Fatalf("no drop logged with its limit:\n%s", logs.String())
	}
}

// The queue gives up space when something else fills the disk, on its
// next commit.
func TestDiskFilledByOthersDropsOldestData(t *testing.T) {
	dir := tmpfs.Mount(t, 4<<20)
	var logs logbuf.Buffer
	o := diskOpts(dir, &logs)
	h := start(t, o)
	const n = 40 // 1.3 MiB
	for i := range n {
		h.append(0, record(i))
	}
	if h.dropped.Load() != 0 {
		t.Fatalf("dropped %d samples with room on the disk", h.dropped.Load())
	}
	tmpfs.Fill(t, filepath.Join(dir, "other"), tmpfs.Free(t, dir)-o.MinFreeBytes/2)
	h.append(0, record(n))
	if f := tmpfs.Free(t, dir); f < o.MinFreeBytes-slack {
		t.Fatalf("%d bytes free after the commit, want at least %d (queue_min_free_bytes) less %d", f, o.MinFreeBytes, slack)
	}
	got := h.readAll(0, true)
	if len(got) >= n || got[len(got)-1][:4] != fmt.Sprintf("%04d", n) {
		t.Fatalf("read %d records, want fewer than %d, ending with %04d", len(got), n, n)
	}
	if want := int64(2 * (n + 1 - len(got))); h.dropped.Load() != want {
		t.Fatalf("dropped %d samples, want %d", h.dropped.Load(), want)
	}
}

// With nothing left to drop, a full disk fails the append (the relay
// answers 500) and loses nothing acknowledged; once there is space again
// appends succeed.
func TestFullDiskFailsAppendsUntilSpaceIsBack(t *testing.T) {
	dir := tmpfs.Mount(t, 2<<20)
	var logs logbuf.Buffer
	o := diskOpts(dir, &logs)
	o.MinFreeBytes = 0
	h := start(t, o)
	for i := range 10 {
		h.append(0, record(i))
	}
	filler := filepath.Join(dir, "other")
	tmpfs.Fill(t, filler, tmpfs.Free(t, dir))
	err := h.l.Append(context.Background(), []Record{{Samples: 1, Data: []byte(record(10))}})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk: %v, want ENOSPC", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	h.append(0, record(11))
	got := h.readAll(0, true)
	var ids []string
	for _, r := range got {
		ids = append(ids, r[:4])
	}
	if want := "0000 0001 0002 0003 0004 0005 0006 0007 0008 0009 0011"; strings.Join(ids, " ") != want {
		t.Fatalf("read %s, want %s", strings.Join(ids, " "), want)
	}
	if h.dropped.Load() != 0 {
		t.Fatalf("dropped %d samples", h.dropped.Load())
	}
}
