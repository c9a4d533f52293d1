package remotewrite

import (
	"bytes"
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// labelCacheBytes bounds the label bytes the cache keeps (about 64k series
// of 250 bytes). Series beyond it are validated in full every time.
const labelCacheBytes = 16 << 20

// labelCache remembers label sets that passed validation, keyed by their
// exact encoded bytes, with the plan for merging external labels into them.
// Prometheus sends the same series every scrape interval, so most series
// skip per-label parsing. Entries are never evicted: the cache stops
// growing at its byte limit.
type labelCache struct {
	max    int
	shards [16]struct {
		mu   sync.RWMutex
		m    map[uint64]*cacheEntry
		size int
	}
}

type cacheEntry struct {
	key    []byte // the label fields, as received
	ins    []int  // Rewriter.series' insertion offsets for external labels
	addLen int
	n      int    // labels
	ident  uint64 // hash of the final label set (Rewriter.series)
}

func newLabelCache(max int) *labelCache {
	c := &labelCache{max: max / len(labelCache{}.shards)}
	for i := range c.shards {
		c.shards[i].m = map[uint64]*cacheEntry{}
	}
	return c
}

// lookup finds the run of label fields that starts body and returns its
// end, its hash and, if these exact bytes were validated before, the entry.
func (c *labelCache) lookup(body []byte) (*cacheEntry, int, uint64) {
	off := 0
	for off < len(body) && body[off] == tsLabels<<3|2 {
		l, m := consumeVarint(body[off+1:])
		if m < 0 || l > uint64(len(body)-off-1-m) {
			return nil, 0, 0
		}
		off += 1 + m + int(l)
	}
	if off == 0 {
		return nil, 0, 0
	}
	h := xxhash.Sum64(body[:off])
	sh := &c.shards[h%uint64(len(c.shards))]
	sh.mu.RLock()
	e := sh.m[h]
	sh.mu.RUnlock()
	if e == nil || !bytes.Equal(e.key, body[:off]) {
		return nil, off, h
	}
	return e, off, h
}

func (c *labelCache) put(h uint64, key []byte, ins []int, addLen, n int, ident uint64) {
	sh := &c.shards[h%uint64(len(c.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[h]; ok || sh.size+len(key) > c.max {
		return
	}
	sh.m[h] = &cacheEntry{key: bytes.Clone(key), ins: slices.Clone(ins), addLen: addLen, n: n, ident: ident}
	sh.size += len(key) + 64
}
