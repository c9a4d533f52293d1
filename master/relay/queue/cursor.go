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

func (l *Log) openCursors(end Position) error {
	dir := filepath.Join(l.opts.Dir, "cursors")
	keep := map[string]bool{}
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
		var raw [2 * slotSize]byte
		n, err := f.ReadAt(raw[:], 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read cursor: %w", err)
		}
		pos, seq, ok := loadSlots(raw[:n])
		switch {
		case ok:
			c.acked, c.seq = pos, seq
		case n == 0:
			c.acked = end // a new upstream starts with new data
			if err := c.persist(end); err != nil {
				return err
			}
		default:
			// Both slots are damaged: resend everything rather than lose it.
			l.opts.Logger.Warn("cursor file damaged, starting from the oldest data", "cursor", cur.Name)
		}
		if len(l.segs) > 0 && c.acked.Segment < l.segs[0].id {
			c.acked = Position{Segment: l.segs[0].id}
		}
		if c.acked.Segment > end.Segment {
			c.acked = end
		}
		c.durable = c.acked
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list cursors: %w", err)
	}
	for _, e := range entries {
		if !keep[e.Name()] {
			// An upstream no longer configured must not pin segments.
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("remove stale cursor: %w", err)
			}
		}
	}
	return nil
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
