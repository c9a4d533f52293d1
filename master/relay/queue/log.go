package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrClosed is returned by Append and Next once Run has returned.
var ErrClosed = errors.New("queue: closed")

// Cursor names one reader of the log: an upstream and the shard it reads.
type Cursor struct {
	Name  string // file name under <dir>/cursors; [a-zA-Z0-9._-]
	Shard int
	// Stream, when set, groups the cursors that together read every record
	// for one consumer (an upstream), one shard each, named
	// <Stream>-<Shard>. When their number changes, Open moves them back so
	// that no record is skipped (see reshard).
	Stream string
}

// Options configure a Log.
type Options struct {
	Dir      string
	MaxBytes int64
	// MinFreeBytes is what the log leaves free on the filesystem of Dir:
	// before a commit would leave less, it drops its oldest segments as it
	// does at MaxBytes, so a disk filled (by the log or by anything else)
	// costs the oldest data rather than every new append. 0: no such limit.
	MinFreeBytes int64
	// SegmentBytes is the size at which a segment is sealed; 0 means
	// MaxBytes/8, at most 64 MiB. Dropping for space drops one segment.
	SegmentBytes int64
	// IdleSeal is how often the committer looks whether every cursor has
	// acknowledged all of the active segment, and if so seals it early so
	// that it can be deleted: once everything is delivered the queue
	// shrinks to about nothing, not to up to a segment. 0 means 5 s.
	IdleSeal time.Duration
	// LockWait is how long Open waits for the directory's lock while
	// another holder has it (a Log closing, or a process being started
	// that shares the file until it execs); 0: it does not wait.
	LockWait time.Duration
	// Shards is how many shards records are spread over; a record of shard
	// s belongs to the cursors of shard s % Shards.
	Shards  int
	Cursors []Cursor
	Logger  *slog.Logger
	// OnDrop reports records the space limit removed before cursor i read
	// them. OnCorrupt reports a corrupt or truncated record cursor i skipped.
	// Both are called with no lock a reader needs held, and must not block.
	OnDrop    func(cursor, records, samples int)
	OnCorrupt func(cursor int)
}

// Log is the on-disk queue. Open it, then Run it; Append and Reader are safe
// for concurrent use.
type Log struct {
	opts      Options
	lock      *os.File
	appendCh  chan *appendReq
	persistCh chan struct{} // nudges the cursor persister
	stopped   chan struct{}
	buf       []byte // committer only

	mu      sync.Mutex
	segs    []segment // ordered by id; the last one is active
	active  *os.File
	total   int64
	cursors []*cursorState
	notify  chan struct{} // closed and replaced after every commit

	streams   map[string][]*cursorState // the cursors of each Cursor.Stream
	barriers  map[string][]Position     // per stream, ascending (see barrier.go)
	barrierCh chan struct{}             // closed and replaced when a cursor of a stream with barriers moves

	freeBytes func() (int64, error) // free bytes on Dir's filesystem
	freeErr   bool                  // the last freeBytes failed (logged once)
}

type segment struct {
	id   uint64
	size int64 // bytes readers may read
}

type appendReq struct {
	recs []Record
	done chan error
}

// Open locks dir, recovers segments and cursors, and starts a new segment.
// Cursors without a file start at the end of the log (new data only).
func Open(opts Options) (*Log, error) {
	if opts.Shards < 1 {
		opts.Shards = 1
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = min(opts.MaxBytes/8, 64<<20)
	}
	if opts.IdleSeal <= 0 {
		opts.IdleSeal = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnDrop == nil {
		opts.OnDrop = func(int, int, int) {}
	}
	if opts.OnCorrupt == nil {
		opts.OnCorrupt = func(int) {}
	}
	l := &Log{opts: opts, appendCh: make(chan *appendReq), persistCh: make(chan struct{}, 1), stopped: make(chan struct{}), notify: make(chan struct{}),
		streams: map[string][]*cursorState{}, barriers: map[string][]Position{}, barrierCh: make(chan struct{})}
	l.freeBytes = func() (int64, error) { return freeBytes(opts.Dir) }
	if err := l.open(); err != nil {
		l.closeFiles()
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	dir := l.opts.Dir
	if err := os.MkdirAll(filepath.Join(dir, "cursors"), 0o750); err != nil {
		return fmt.Errorf("create queue dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return fmt.Errorf("open lock: %w", err)
	}
	l.lock = lock
	for deadline, wait := time.Now().Add(l.opts.LockWait), time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			return fmt.Errorf("lock queue dir %s (another relay uses it?): %w", dir, err)
		}
		time.Sleep(wait)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list queue dir: %w", err)
	}
	for _, e := range entries {
		id, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), ".seg"), 10, 64)
		if err != nil || !strings.HasSuffix(e.Name(), ".seg") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return fmt.Errorf("stat segment: %w", err)
		}
		l.segs = append(l.segs, segment{id: id, size: info.Size()})
	}
	slices.SortFunc(l.segs, func(a, b segment) int { return cmp.Compare(a.id, b.id) })
	next := uint64(1)
	if len(l.segs) > 0 {
		next = l.segs[len(l.segs)-1].id + 1
	}
	if err := l.openCursors(Position{Segment: next}); err != nil {
		return err
	}
	// Segments every cursor is past are garbage.
	low := Position{Segment: next}
	for _, c := range l.cursors {
		low = minPos(low, c.acked)
	}
	for len(l.segs) > 0 && l.segs[0].id < low.Segment {
		if err := os.Remove(l.segPath(l.segs[0].id)); err != nil {
			return fmt.Errorf("remove segment: %w", err)
		}
		l.segs = l.segs[1:]
	}
	for _, s := range l.segs {
		l.total += s.size
	}
	for _, c := range l.cursors {
		for _, s := range l.segs {
			if s.id >= c.acked.Segment {
				from := int64(0)
				if s.id == c.acked.Segment {
					from = c.acked.Offset
				}
				r, n := l.count(s, from, c.Shard)
				c.records += int64(r)
				c.samples += int64(n)
			}
		}
	}
	if err := l.newSegment(next); err != nil {
		return err
	}
	l.makeRoom(0)
	return nil
}

// makeRoom drops the oldest segments until n more bytes fit under MaxBytes
// and leave MinFreeBytes free on the filesystem, keeping the active
// segment. Called with mu held.
func (l *Log) makeRoom(n int64) {
	limit, why := l.opts.MaxBytes, "queue_max_bytes"
	if l.opts.MinFreeBytes > 0 && len(l.segs) > 1 {
		// Space a dropped segment held counts as freed at once, even while
		// a reader still has it open.
		free, err := l.freeBytes()
		if err != nil && !l.freeErr {
			l.opts.Logger.Warn("queue: cannot read the free space of its filesystem; only queue_max_bytes limits it", "dir", l.opts.Dir, "err", err)
		}
		l.freeErr = err != nil
		if err == nil && l.total+free-l.opts.MinFreeBytes < limit {
			limit, why = l.total+free-l.opts.MinFreeBytes, "queue_min_free_bytes"
		}
	}
	for l.total+n > limit && len(l.segs) > 1 {
		l.dropOldest(why)
	}
}

// freeBytes returns the bytes an unprivileged writer may still use on the
// filesystem that holds dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

func minPos(a, b Position) Position {
	if b.Less(a) {
		return b
	}
	return a
}

func (l *Log) segPath(id uint64) string {
	return filepath.Join(l.opts.Dir, fmt.Sprintf("%020d.seg", id))
}

// newSegment creates segment id as the active one.
func (l *Log) newSegment(id uint64) error {
	f, err := os.OpenFile(l.segPath(id), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	if err := syncDir(l.opts.Dir); err != nil {
		f.Close()
		return err
	}
	if l.active != nil {
		l.active.Close()
	}
	l.active = f
	l.segs = append(l.segs, segment{id: id})
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	return nil
}

// count returns how many records of shard, and their samples, segment s
// holds from offset from on. It reads headers only.
func (l *Log) count(s segment, from int64, shard int) (records, samples int) {
	f, err := os.Open(l.segPath(s.id))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	var hb [headerSize]byte
	for off := from; off+headerSize <= s.size; {
		if _, err := f.ReadAt(hb[:], off); err != nil {
			break
		}
		h, ok := parseHeader(hb[:])
		if !ok {
			break
		}
		if int(h.shard)%l.opts.Shards == shard {
			records++
			samples += int(h.samples)
		}
		off += headerSize + int64(h.length)
	}
	return records, samples
}

// dropOldest removes the oldest segment and moves every cursor still in it
// to the next one; why names the limit that made it. Called with mu held
// and at least two segments. The
// segment may hold nothing undelivered (cursors acknowledged it but are not
// persisted yet, the persister being behind): then nothing is lost, and
// nothing is reported.
func (l *Log) dropOldest(why string) {
	s := l.segs[0]
	lost := 0
	for i, c := range l.cursors {
		if c.acked.Segment > s.id {
			continue
		}
		r, n := l.count(s, c.acked.Offset, c.Shard)
		c.records = max(0, c.records-int64(r))
		c.samples = max(0, c.samples-int64(n))
		c.acked = Position{Segment: s.id + 1}
		l.moved(c)
		if err := c.persist(c.acked); err != nil {
			l.opts.Logger.Error("persist cursor", "cursor", c.Name, "err", err)
		} else {
			c.durable = c.acked
		}
		if r > 0 {
			l.opts.OnDrop(i, r, n)
			lost += r
		}
	}
	if err := os.Remove(l.segPath(s.id)); err != nil {
		l.opts.Logger.Error("remove segment", "segment", s.id, "err", err)
	}
	if lost > 0 {
		l.opts.Logger.Warn("queue full: dropped oldest segment", "segment", s.id, "bytes", s.size, "undelivered_records", lost, "limit", why)
	}
	l.segs = l.segs[1:]
	l.total -= s.size
}

// Append makes recs durable: it returns nil once they are written and
// fdatasync'd, together with whatever other appends were waiting.
func (l *Log) Append(ctx context.Context, recs []Record) error {
	req := &appendReq{recs: recs, done: make(chan error, 1)}
	select {
	case l.appendCh <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.stopped:
		return ErrClosed
	}
	// The committer reads recs until it answers; wait for it regardless of
	// ctx so the caller may reuse the buffers.
	return <-req.done
}

// Run commits appends until ctx ends, then fails waiting appends with
// ErrClosed and closes the files. Stop every reader before.
func (l *Log) Run(ctx context.Context) error {
	defer l.closeFiles()
	defer close(l.stopped)
	pdone := make(chan struct{})
	go func() {
		defer close(pdone)
		for {
			select {
			case <-l.persistCh:
				l.persistCursors()
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		<-pdone
		l.persistCursors() // the last acks before shutdown
	}()
	seal := time.NewTicker(l.opts.IdleSeal)
	defer seal.Stop()
	var batch []*appendReq
	for {
		select {
		case <-seal.C:
			l.sealIfDelivered()
		case <-ctx.Done():
			for {
				select {
				case req := <-l.appendCh:
					req.done <- ErrClosed
				default:
					return nil
				}
			}
		case req := <-l.appendCh:
			batch = append(batch[:0], req)
		drain:
			for len(batch) < 4096 {
				select {
				case req := <-l.appendCh:
					batch = append(batch, req)
				default:
					break drain
				}
			}
			err := l.commit(batch)
			for i, req := range batch {
				req.done <- err
				batch[i] = nil
			}
		}
	}
}

func (l *Log) commit(batch []*appendReq) error {
	now := time.Now().UnixMilli()
	buf := l.buf[:0]
	for _, req := range batch {
		for _, r := range req.recs {
			buf = appendRecord(buf, r.Shard, r.Flags, r.Samples, now, r.Data)
		}
	}
	l.buf = buf
	n := int64(len(buf))

	l.mu.Lock()
	cur := &l.segs[len(l.segs)-1]
	if cur.size > 0 && cur.size+n > l.opts.SegmentBytes {
		if err := l.newSegment(cur.id + 1); err != nil {
			l.mu.Unlock()
			return err
		}
	}
	l.makeRoom(n)
	f, off := l.active, l.segs[len(l.segs)-1].size
	l.mu.Unlock()

	_, err := f.Write(buf)
	if err == nil {
		err = syscall.Fdatasync(int(f.Fd()))
	}
	if err != nil {
		// Readers never read past the committed size of this run's
		// segments; cut the rest and continue in a fresh segment.
		_ = f.Truncate(off)
		l.mu.Lock()
		rerr := l.newSegment(l.segs[len(l.segs)-1].id + 1)
		l.mu.Unlock()
		return fmt.Errorf("write queue: %w", errors.Join(err, rerr))
	}

	l.mu.Lock()
	l.segs[len(l.segs)-1].size += n
	l.total += n
	for _, req := range batch {
		for _, r := range req.recs {
			for _, c := range l.cursors {
				if r.Shard%l.opts.Shards == c.Shard {
					c.records++
					c.samples += int64(r.Samples)
				}
			}
		}
	}
	close(l.notify)
	l.notify = make(chan struct{})
	l.mu.Unlock()
	return nil
}

// sealIfDelivered starts a new segment when every cursor has acknowledged
// all of the active one, and has the persister delete it. Called by the
// committer only (it writes to the active segment without holding mu).
func (l *Log) sealIfDelivered() {
	l.mu.Lock()
	cur := l.segs[len(l.segs)-1]
	end := Position{Segment: cur.id, Offset: cur.size}
	done := cur.size > 0
	for _, c := range l.cursors {
		done = done && !c.acked.Less(end)
	}
	var err error
	if done {
		err = l.newSegment(cur.id + 1)
	}
	l.mu.Unlock()
	if err != nil {
		l.opts.Logger.Error("seal delivered segment", "err", err)
		return
	}
	if done {
		l.nudgePersist()
	}
}

// Close releases the files and the lock of a Log that was opened but is
// not to be Run (Run closes them itself when it returns).
func (l *Log) Close() { l.closeFiles() }

func (l *Log) closeFiles() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active != nil {
		l.active.Close()
		l.active = nil
	}
	for _, c := range l.cursors {
		c.f.Close()
	}
	if l.lock != nil {
		l.lock.Close() // releases the flock
		l.lock = nil
	}
}

// CursorStats is what cursor i has not yet acknowledged.
type CursorStats struct {
	Bytes   int64 // log bytes from the cursor to the end (all shards)
	Records int64
	Samples int64
}

// Stats reports cursor i's backlog.
func (l *Log) Stats(i int) CursorStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.cursors[i]
	st := CursorStats{Records: c.records, Samples: c.samples}
	for _, s := range l.segs {
		if s.id >= c.acked.Segment {
			st.Bytes += s.size
		}
	}
	st.Bytes = max(0, st.Bytes-c.acked.Offset)
	return st
}

// Bytes is the size of the log on disk.
func (l *Log) Bytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
