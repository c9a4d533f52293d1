// Package samples parses the metrics that the push API receives and that
// plugins print: the Prometheus text format, OpenMetrics, delimited
// protobuf (through github.com/prometheus/common/expfmt) or a JSON list of
// {"name", "timestamp", "tags", "value"}; and turns them into one
// remote-write 1.0 WriteRequest for the relay's queue.
//
// A body is checked whole before anything is returned: the first bad line
// fails it with its line number and the reason (*Error), so a caller never
// keeps part of a request. The labels the agent sets itself (ns, node,
// cluster) are added to every sample, and a sample that brings one of them
// is refused rather than silently rewritten.
//
// It owns no state and starts no goroutines.
package samples
