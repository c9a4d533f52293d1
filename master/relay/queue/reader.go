package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Reader reads the records of one cursor's shard, from its last
// acknowledged position on. One goroutine uses a Reader.
type Reader struct {
	l   *Log
	idx int
	c   *cursorState
	pos Position
	// own is the position after the last record of the reader's shard it
	// returned: everything from there to pos belongs to other shards.
	own Position
	f   *os.File
	fid uint64
	hb  [headerSize]byte
}

// Reader returns a reader for cursor i (the index in Options.Cursors).
func (l *Log) Reader(i int) *Reader {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &Reader{l: l, idx: i, c: l.cursors[i], pos: l.cursors[i].acked, own: l.cursors[i].acked}
}

// Close releases the reader's file.
func (r *Reader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// Next returns the next record of the reader's shard and the position after
// it, waiting until one is committed. Its Data reuses buf when large enough.
func (r *Reader) Next(ctx context.Context, buf []byte) (Record, Position, error) {
	for {
		rec, end, wait, err := r.TryNext(buf)
		if err != nil || wait == nil {
			return rec, end, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return Record{}, Position{}, ctx.Err()
		case <-r.l.stopped:
			return Record{}, Position{}, ErrClosed
		}
	}
}

// TryNext is Next without waiting: when no record is committed yet it
// returns a channel that is closed at the next commit.
func (r *Reader) TryNext(buf []byte) (Record, Position, <-chan struct{}, error) {
	l := r.l
	for {
		l.mu.Lock()
		first := l.segs[0].id
		if r.pos.Segment < first {
			r.pos = Position{Segment: first} // dropped for space
		}
		i := int(r.pos.Segment - first)
		if i >= len(l.segs) {
			i = len(l.segs) - 1
			r.pos = Position{Segment: l.segs[i].id, Offset: l.segs[i].size}
		}
		if l.blocked(r.c, r.pos) {
			wait := l.barrierCh
			l.mu.Unlock()
			r.skipOthers()
			return Record{}, Position{}, wait, nil
		}
		limit, sealed, wait := l.segs[i].size, i < len(l.segs)-1, l.notify
		l.mu.Unlock()

		if r.pos.Offset >= limit {
			if sealed {
				r.pos = Position{Segment: r.pos.Segment + 1}
				continue
			}
			r.skipOthers()
			return Record{}, Position{}, wait, nil
		}
		if r.f == nil || r.fid != r.pos.Segment {
			r.Close()
			f, err := os.Open(l.segPath(r.pos.Segment))
			if errors.Is(err, fs.ErrNotExist) {
				continue // dropped meanwhile; the next round skips it
			}
			if err != nil {
				return Record{}, Position{}, nil, fmt.Errorf("open segment: %w", err)
			}
			r.f, r.fid = f, r.pos.Segment
		}
		rec, next, ok, err := r.read(r.pos.Offset, limit, buf, true)
		if err != nil {
			return Record{}, Position{}, nil, err
		}
		if !ok {
			l.opts.OnCorrupt(r.idx)
			l.opts.Logger.Warn("skipping corrupt queue record", "segment", r.pos.Segment, "offset", r.pos.Offset)
			if r.pos.Offset, err = r.resync(r.pos.Offset+1, limit, buf); err != nil {
				return Record{}, Position{}, nil, err
			}
			continue
		}
		r.pos.Offset = next
		if rec.Shard%l.opts.Shards == r.c.Shard {
			r.own = r.pos
			return rec, r.pos, nil, nil
		}
	}
}

// read reads and checks the record at off; ok is false for a corrupt or
// truncated one. With mine set, the payload of another shard's record is
// skipped (its header CRC was checked).
func (r *Reader) read(off, limit int64, buf []byte, mine bool) (rec Record, next int64, ok bool, err error) {
	if off+headerSize > limit {
		return rec, 0, false, nil
	}
	if _, err := r.f.ReadAt(r.hb[:], off); err != nil {
		return rec, 0, false, fmt.Errorf("read segment: %w", err)
	}
	h, ok := parseHeader(r.hb[:])
	if !ok || off+headerSize+int64(h.length) > limit {
		return rec, 0, false, nil
	}
	next = off + headerSize + int64(h.length)
	if mine && int(h.shard)%r.l.opts.Shards != r.c.Shard {
		return Record{Shard: int(h.shard)}, next, true, nil
	}
	if cap(buf) < int(h.length) {
		buf = make([]byte, h.length)
	}
	buf = buf[:h.length]
	if _, err := r.f.ReadAt(buf, off+headerSize); err != nil {
		return rec, 0, false, fmt.Errorf("read segment: %w", err)
	}
	if !h.valid(r.hb[:], buf) {
		return rec, 0, false, nil
	}
	return Record{Shard: int(h.shard), Samples: int(h.samples), Flags: h.flags, Time: time.UnixMilli(h.unixMS), Data: buf}, next, true, nil
}

// resync finds the next valid record at or after from, or returns limit.
func (r *Reader) resync(from, limit int64, buf []byte) (int64, error) {
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], magic)
	win := make([]byte, 1<<20)
	for from < limit {
		n := int(min(int64(len(win)), limit-from))
		if _, err := r.f.ReadAt(win[:n], from); err != nil {
			return 0, fmt.Errorf("read segment: %w", err)
		}
		for i := 0; i < n; {
			j := bytes.Index(win[i:n], m[:])
			if j < 0 {
				break
			}
			cand := from + int64(i+j)
			if _, _, ok, err := r.read(cand, limit, buf, false); err != nil {
				return 0, err
			} else if ok {
				return cand, nil
			}
			i += j + 1
		}
		// Overlap windows so a magic split across them is still found.
		from += int64(max(1, n-3))
	}
	return limit, nil
}

// Ack records that everything before pos was delivered (records and
// samples of them). The cursor is persisted in the background, batched with
// other cursors' acks, so delivery after a crash is at least once; segments
// are deleted once every cursor's persisted position is past them.
func (r *Reader) Ack(pos Position, records, samples int) {
	to := pos
	if pos == r.own {
		// Nothing of this shard is outstanding: what the reader skipped
		// after pos was other shards' and is done with too.
		to = r.pos
	}
	l := r.l
	l.mu.Lock()
	c := r.c
	if c.acked.Less(pos) { // else the space limit moved the cursor past it
		c.records = max(0, c.records-int64(records))
		c.samples = max(0, c.samples-int64(samples))
	}
	if c.acked.Less(to) {
		c.acked = to
		l.moved(c)
	}
	l.mu.Unlock()
	l.nudgePersist()
}

// skipOthers moves the cursor over the records of other shards the reader
// has passed, once every record of its own shard it returned is
// acknowledged. Without it a shard that gets no series (few series, many
// shards) would pin every segment until the queue is full. The move is
// persisted when it leaves a segment behind: that is what frees space,
// and a cursor persisted a little behind only rereads other shards'
// headers after a crash.
func (r *Reader) skipOthers() {
	l := r.l
	l.mu.Lock()
	c := r.c
	moved := false
	if !c.acked.Less(r.own) && c.acked.Less(r.pos) {
		c.acked = r.pos
		moved = c.acked.Segment != c.durable.Segment
		l.moved(c)
	}
	l.mu.Unlock()
	if moved {
		l.nudgePersist()
	}
}

func (l *Log) nudgePersist() {
	select {
	case l.persistCh <- struct{}{}:
	default:
	}
}

// persistCursors writes every cursor whose acknowledged position moved,
// then deletes the segments no cursor needs.
func (l *Log) persistCursors() {
	type job struct {
		c   *cursorState
		pos Position
	}
	var jobs []job
	l.mu.Lock()
	for _, c := range l.cursors {
		if c.durable != c.acked {
			jobs = append(jobs, job{c, c.acked})
		}
	}
	l.mu.Unlock()
	for _, j := range jobs {
		if err := j.c.persist(j.pos); err != nil {
			l.opts.Logger.Error("persist cursor", "cursor", j.c.Name, "err", err)
			continue
		}
		l.mu.Lock()
		if j.c.durable.Less(j.pos) {
			j.c.durable = j.pos
		}
		l.mu.Unlock()
	}
	l.passBarriers()
	l.mu.Lock()
	defer l.mu.Unlock()
	low := l.segs[len(l.segs)-1].id
	for _, c := range l.cursors {
		low = min(low, l.after(c.durable))
	}
	for len(l.segs) > 1 && l.segs[0].id < low {
		if err := os.Remove(l.segPath(l.segs[0].id)); err != nil {
			l.opts.Logger.Error("remove segment", "segment", l.segs[0].id, "err", err)
			return
		}
		l.total -= l.segs[0].size
		l.segs = l.segs[1:]
	}
}

// after returns the first segment a cursor at pos may still need: pos's own,
// or the next one when pos is at the end of a sealed segment (a cursor is
// left there when the segment is sealed under it). Called with mu held.
func (l *Log) after(pos Position) uint64 {
	first := l.segs[0].id
	if pos.Segment < first {
		return pos.Segment
	}
	if i := int(pos.Segment - first); i < len(l.segs)-1 && pos.Offset >= l.segs[i].size {
		return pos.Segment + 1
	}
	return pos.Segment
}
