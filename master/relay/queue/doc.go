// Package queue is the relay's durable buffer: one segmented, append-only log
// on disk shared by every upstream, with one persisted read cursor per
// (upstream, shard).
//
// A record is framed by a 32-byte header (magic, length, CRC32C, shard,
// samples, append time) and its payload. Appends are group-committed: one
// writer goroutine writes every waiting batch with one write and one
// fdatasync, then acknowledges them all. Each run starts a new segment, so a
// torn tail left by a crash is never appended to; readers skip corrupt or
// truncated records by resynchronising on the magic and count them. A cursor
// is persisted (two CRC-checked slots, fdatasync) only after its upstream
// acknowledged, so delivery is at least once; it also moves past other
// shards' records, so a shard with nothing to send pins no segment, and a
// fully delivered active segment is sealed early so it can be deleted.
// When the log would exceed its byte limit the oldest segment is dropped
// and the samples that cursors had not yet delivered are reported. When
// the number of shards of a stream (the cursors of one upstream) changes,
// its cursors go back to the oldest position any had and a persisted
// barrier keeps each series' records in order (barrier.go).
//
// It owns the files under its directory. It must never block an append on a
// slow reader, and never decode payloads.
package queue
