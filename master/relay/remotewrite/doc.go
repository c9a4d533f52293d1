// Package remotewrite speaks Prometheus remote-write 1.0 on the wire: it
// validates a decoded prometheus.WriteRequest while scanning it (caching
// label sets that passed, bounded), rewrites it
// (external labels merged, time series split into shards by series hash)
// without building structs, joins snappy blocks, and encodes or decodes small
// requests for tests and tools.
//
// It owns the protobuf and snappy framing only. It must never do I/O, keep any
// state but that cache, or depend on github.com/prometheus/prometheus.
package remotewrite
