// Package push is the push API, POST /api/v1/push?ns=NS on every agent:
// metrics from batch jobs and scripts, in the Prometheus text format,
// OpenMetrics or the JSON list of {name, timestamp, tags, value}, put into
// the local relay's durable queue as one remote-write request.
//
// A request is parsed and checked whole (package samples) before anything
// is stored: a bad line fails it with 400 and its line number, and nothing
// of it is kept. 204 means the samples are fdatasync'd in the queue, the
// same guarantee as Prometheus' own remote-write (the relay's Append).
//
// It never stores part of a request, never answers 204 before the relay
// did, and never registers metrics on the global registry.
package push
