// Package remotewrite speaks Prometheus remote-write 1.0 and 2.0 on the
// wire: it validates a decoded prometheus.WriteRequest or
// io.prometheus.write.v2.Request in full while scanning it (every field's
// wire type at every depth, strings, names as Names says, sorted labels,
// 2.0 symbol references, native histogram spans; 1.0 label sets that
// passed are cached, bounded), rewrites it (external labels merged, time
// series split into shards by a hash of their final label set, the same
// for both versions; a 2.0 shard gets its own symbol table) without
// building structs, converts between the versions and escapes names for
// the forward path (Converter), joins snappy blocks, and encodes or decodes
// requests for tests and tools.
//
// It owns the protobuf and snappy framing only. It must never do I/O, keep any
// state but that cache, or depend on github.com/prometheus/prometheus.
package remotewrite
