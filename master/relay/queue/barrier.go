package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// Barriers keep each series' records in order across a change of a
// stream's number of shards. The records before the change were put in
// shards by the old number, so a series' older records may be another
// cursor's than its newer ones. reshard moves every cursor of the stream
// back to the oldest position any had and puts a barrier where this run's
// records begin: no cursor of the stream reads past it until all of them
// have acknowledged everything before it. A series' older records, all in
// one old shard and so read by one cursor, are then delivered before its
// newer ones, whichever cursor reads those. (Without it a receiver that
// refuses samples older than a series' newest, as Prometheus' TSDB does,
// would refuse the older ones.)
//
// A stream's barriers are kept in <dir>/barriers/<stream> until every
// cursor of it is persisted past them, so a crash in between keeps them;
// a second change before the first barrier is passed adds a second one.

const barrierDir = "barriers"

// blocked reports whether cursor c may not read at pos: pos is at or after
// a barrier of its stream that some cursor of the stream has not yet
// acknowledged up to. Called with mu held.
func (l *Log) blocked(c *cursorState, pos Position) bool {
	if len(l.barriers) == 0 { // nearly always: no map lookup per record read
		return false
	}
	for _, b := range l.barriers[c.Stream] {
		if pos.Less(b) {
			return false // barriers ascend
		}
		for _, o := range l.streams[c.Stream] {
			if o.acked.Less(b) {
				return true
			}
		}
	}
	return false
}

// moved wakes the readers waiting at a barrier of c's stream after c's
// acknowledged position moved. Called with mu held.
func (l *Log) moved(c *cursorState) {
	if len(l.barriers) > 0 && len(l.barriers[c.Stream]) > 0 {
		close(l.barrierCh)
		l.barrierCh = make(chan struct{})
	}
}

// loadBarriers reads the barriers of the streams that have cursors and
// deletes the files of streams that have none (or of an interrupted write).
// A damaged file is logged and ignored: the order it kept is lost, not
// any record.
func (l *Log) loadBarriers() error {
	dir := filepath.Join(l.opts.Dir, barrierDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create barrier dir: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list barriers: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if l.streams[e.Name()] == nil {
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove stale barriers: %w", err)
			}
			continue
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read barriers: %w", err)
		}
		bs, ok := decodeBarriers(raw)
		if !ok {
			l.opts.Logger.Warn("queue: barrier file damaged, ignoring it; records queued before a change of shards may be delivered out of order", "stream", e.Name())
			continue
		}
		l.barriers[e.Name()] = bs
	}
	return nil
}

// addBarrier adds a barrier at pos to stream and persists its barriers.
// Called before Run.
func (l *Log) addBarrier(stream string, pos Position) error {
	bs := l.barriers[stream]
	if len(bs) > 0 && !bs[len(bs)-1].Less(pos) {
		return nil
	}
	l.barriers[stream] = append(bs, pos)
	return l.writeBarriers(stream, l.barriers[stream])
}

// passBarriers forgets the barriers every cursor of their stream is
// persisted past and rewrites the files that changed. Called by the
// persister, without mu held.
func (l *Log) passBarriers() {
	changed := map[string][]Position{}
	l.mu.Lock()
	for stream, bs := range l.barriers {
		keep := slices.DeleteFunc(slices.Clone(bs), func(b Position) bool {
			for _, c := range l.streams[stream] {
				if c.durable.Less(b) {
					return false
				}
			}
			return true
		})
		if len(keep) == len(bs) {
			continue
		}
		if len(keep) == 0 {
			delete(l.barriers, stream)
		} else {
			l.barriers[stream] = keep
		}
		changed[stream] = keep
	}
	l.mu.Unlock()
	for stream, bs := range changed {
		if err := l.writeBarriers(stream, bs); err != nil {
			l.opts.Logger.Error("persist barriers", "stream", stream, "err", err)
		}
	}
}

// writeBarriers replaces stream's barrier file with bs (removes it when bs
// is empty), atomically.
func (l *Log) writeBarriers(stream string, bs []Position) error {
	dir := filepath.Join(l.opts.Dir, barrierDir)
	path := filepath.Join(dir, stream)
	if len(bs) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove barriers: %w", err)
		}
		return syncDir(dir)
	}
	tmp := path + "~" // not a valid stream name
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("write barriers: %w", err)
	}
	_, err = f.Write(encodeBarriers(bs))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write barriers: %w", err)
	}
	return syncDir(dir)
}

// A barrier file is the positions, 16 bytes each (segment, offset), and
// the CRC32C of them.
func encodeBarriers(bs []Position) []byte {
	b := make([]byte, 0, 16*len(bs)+4)
	for _, p := range bs {
		b = binary.LittleEndian.AppendUint64(b, p.Segment)
		b = binary.LittleEndian.AppendUint64(b, uint64(p.Offset))
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeBarriers(raw []byte) ([]Position, bool) {
	n := len(raw) - 4
	if n < 16 || n%16 != 0 || crc32.Checksum(raw[:n], castagnoli) != binary.LittleEndian.Uint32(raw[n:]) {
		return nil, false
	}
	var bs []Position
	for i := 0; i < n; i += 16 {
		p := Position{Segment: binary.LittleEndian.Uint64(raw[i:]), Offset: int64(binary.LittleEndian.Uint64(raw[i+8:]))}
		if len(bs) > 0 && !bs[len(bs)-1].Less(p) {
			return nil, false
		}
		bs = append(bs, p)
	}
	return bs, true
}
