// Package relay is the master's metric relay: it receives Prometheus
// remote-write 1.0 and 2.0 on POST /api/v1/write (or in-process through
// Write), makes each request durable in a disk queue (package queue), once,
// in the version it came in, before answering 204, and forwards the data,
// with external labels merged in, to every configured upstream (the
// manager) in the version that upstream takes (protocol.go: auto falls back
// from 2.0 to 1.0 for a receiver that predates 2.0, converting and counting
// what 1.0 cannot carry), retrying until the upstream accepts it or refuses
// it with a 4xx (then it is dropped and counted, never resent). Samples of
// a series stay in order; across series an upstream's shards send the
// oldest data first (order.go).
//
// Lifecycle: New validates the config and opens the queue; Run (called
// exactly once) runs the queue's committer and one forwarder per upstream
// and shard, and returns after all of them exited and the queue files are
// closed; ServeHTTP answers 503 outside Run.
//
// It owns the queue directory and the connections to upstreams. It must
// never answer 429 (Prometheus would drop the batch), never answer 204
// before the data is fsync'd, never block ingest on a slow upstream (a full
// queue drops its oldest data instead), and never register metrics on the
// global registry.
package relay
