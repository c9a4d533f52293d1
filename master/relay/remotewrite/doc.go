// Package remotewrite speaks Prometheus remote-write 1.0 on the wire: it
// validates a decoded prometheus.WriteRequest in full while scanning it
// (every field's wire type at every depth, strings, labels, native
// histogram spans; label sets that passed are cached, bounded), rewrites it
// (external labels merged, time series split into shards by a hash of their
// final label set) without building structs, joins snappy blocks, and
// encodes or decodes requests for tests and tools.
//
// It owns the protobuf and snappy framing only. It must never do I/O, keep any
// state but that cache, or depend on github.com/prometheus/prometheus.
package remotewrite
