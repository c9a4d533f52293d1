package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
)

const slotSize = 32

var cursorName = regexp.MustCompile(`^[a-zA-Z0-9._-]+$`)

// cursorState is a cursor's positions and backlog (guarded by Log.mu) and its file (guarded by fmu). The file holds two slots of
// seq|segment|offset|crc; writes alternate, so a torn write leaves the other
// slot intact, and the valid slot with the higher seq wins.
type cursorState struct {
	Cursor
	f       *os.File
	acked   Position // delivered
	durable Position // persisted; never ahead of acked
	records int64
	samples int64

	fmu sync.Mutex
	seq uint64
}

// openCursors opens the cursor files of l.opts.Cursors, creating those
// that are missing: a cursor of a new stream (see Cursor.Stream) starts at
// end (new data only), one of a stream seen before as reshard says. Files
// of cursors no longer configured are deleted.
func (l *Log) openCursors(end Position) error {
	dir := filepath.Join(l.opts.Dir, "cursors")
	keep := map[string]bool{}
	dirty := map[*cursorState]bool{} // to persist
	for _, cur := range l.opts.Cursors {
		if !cursorName.MatchString(cur.Name) || cur.Shard < 0 || cur.Shard >= l.opts.Shards {
			return fmt.Errorf("open cursor: bad name or shard %q/%d", cur.Name, cur.Shard)
		}
		keep[cur.Name] = true
		f, err := os.OpenFile(filepath.Join(dir, cur.Name), os.O_CREATE|os.O_RDWR, 0o640)
		if err != nil {
			return fmt.Errorf("open cursor: %w", err)
		}
		c := &cursorState{Cursor: cur, f: f}
		l.cursors = append(l.cursors, c)
		if cur.Stream != "" {
			l.streams[cur.Stream] = append(l.streams[cur.Stream], c)
		}
		pos, seq, ok, empty, err := readCursor(f)
		switch {
		case err != nil:
			return err
		case ok:
			c.acked, c.seq = pos, seq
		case empty:
			c.acked = end
			dirty[c] = true
		default:
			// Both slots are damaged: resend everything rather than lose it.
			l.opts.Logger.Warn("cursor file damaged, starting from the oldest data", "cursor", cur.Name)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list cursors: %w", err)
	}
	var stale []string
	for _, e := range entries {
		if !keep[e.Name()] {
			stale = append(stale, e.Name())
		}
	}
	if err := l.loadBarriers(); err != nil {
		return err
	}
	if err := l.reshard(dir, stale, dirty, end); err != nil {
		return err
	}
	for _, c := range l.cursors {
		if len(l.segs) > 0 && c.acked.Segment < l.segs[0].id {
			c.acked = Position{Segment: l.segs[0].id}
		}
		if c.acked.Segment > end.Segment {
			c.acked = end
		}
		if dirty[c] {
			if err := c.persist(c.acked); err != nil {
				return err
			}
		}
		c.durable = c.acked
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	for _, name := range stale {
		// An upstream, or a shard of one, no longer configured must not pin
		// segments; a shard's position is its stream's other cursors' now.
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("remove stale cursor: %w", err)
		}
	}
	return nil
}

// reshard handles a stream whose number of shards changed: a cursor file
// of the stream is stale, or a cursor of it is new beside old ones. A
// shard's records are then read by other cursors than before, and a new
// cursor's records may lie behind every position, so every cursor of the
// stream goes back to the oldest position any of them had: what was
// delivered since is sent again (at least once), nothing is skipped. A
// barrier at end, where this run's records begin, keeps each series'
// records in order (see barrier.go). Cursors it moves are added to dirty.
func (l *Log) reshard(dir string, stale []string, dirty map[*cursorState]bool, end Position) error {
	type stream struct {
		cursors        []*cursorState
		changed, found bool
		oldest         Position
	}
	streams := map[string]*stream{}
	older := func(st *stream, pos Position) {
		if !st.found || pos.Less(st.oldest) {
			st.oldest, st.found = pos, true
		}
	}
	for _, c := range l.cursors {
		if c.Stream == "" {
			continue
		}
		st := streams[c.Stream]
		if st == nil {
			st = &stream{}
			streams[c.Stream] = st
		}
		st.cursors = append(st.cursors, c)
		if !dirty[c] {
			older(st, c.acked)
		}
	}
	for _, name := range stale {
		i := strings.LastIndexByte(name, '-')
		st := streams[name[:max(i, 0)]]
		if i < 0 || st == nil {
			continue
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("open stale cursor: %w", err)
		}
		pos, _, _, _, err := readCursor(f) // damaged: from the oldest data
		f.Close()
		if err != nil {
			return err
		}
		st.changed = true
		older(st, pos)
	}
	for name, st := range streams {
		for _, c := range st.cursors {
			st.changed = st.changed || dirty[c] && st.found
		}
		if !st.changed {
			continue
		}
		for _, c := range st.cursors {
			if st.oldest.Less(c.acked) {
				c.acked = st.oldest
				dirty[c] = true
			}
		}
		l.opts.Logger.Warn("queue: the number of shards changed; every shard starts again from the oldest position, what was delivered since is sent again, and new data waits until all of it is",
			"stream", name, "shards", len(st.cursors), "segment", st.oldest.Segment, "offset", st.oldest.Offset)
		if st.oldest.Less(end) {
			if err := l.addBarrier(name, end); err != nil {
				return err
			}
		}
	}
	return nil
}

// readCursor reads a cursor file: its position and seq when a slot is
// valid (ok), and whether the file is empty (a new cursor).
func readCursor(f *os.File) (pos Position, seq uint64, ok, empty bool, err error) {
	var raw [2 * slotSize]byte
	n, err := f.ReadAt(raw[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Position{}, 0, false, false, fmt.Errorf("read cursor: %w", err)
	}
	pos, seq, ok = loadSlots(raw[:n])
	return pos, seq, ok, n == 0, nil
}

func loadSlots(raw []byte) (Position, uint64, bool) {
	var best Position
	var bestSeq uint64
	found := false
	for i := 0; i+slotSize <= len(raw); i += slotSize {
		s := raw[i : i+slotSize]
		if crc32.Checksum(s[:24], castagnoli) != binary.LittleEndian.Uint32(s[24:]) {
			continue
		}
		seq := binary.LittleEndian.Uint64(s)
		if !found || seq > bestSeq {
			found, bestSeq = true, seq
			best = Position{Segment: binary.LittleEndian.Uint64(s[8:]), Offset: int64(binary.LittleEndian.Uint64(s[16:]))}
		}
	}
	return best, bestSeq, found
}

// persist writes pos to the cursor file and fdatasyncs it.
func (c *cursorState) persist(pos Position) error {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	c.seq++
	var s [slotSize]byte
	binary.LittleEndian.PutUint64(s[0:], c.seq)
	binary.LittleEndian.PutUint64(s[8:], pos.Segment)
	binary.LittleEndian.PutUint64(s[16:], uint64(pos.Offset))
	binary.LittleEndian.PutUint32(s[24:], crc32.Checksum(s[:24], castagnoli))
	if _, err := c.f.WriteAt(s[:], int64(c.seq%2)*slotSize); err != nil {
		return fmt.Errorf("write cursor: %w", err)
	}
	if err := syscall.Fdatasync(int(c.f.Fd())); err != nil {
		return fmt.Errorf("sync cursor: %w", err)
	}
	return nil
}
