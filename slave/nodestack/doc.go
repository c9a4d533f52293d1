// Package nodestack runs what every node runs: node_exporter (published as
// a target of job "node"), the Vector log shipper and the trace agent, an
// OTLP forwarder whose exporter endpoint is the Jaeger collector URL the
// master publishes in etcd.
//
// Configs are rendered under <data_dir>/stack; a changed config of a running
// Vector or trace agent is reloaded with SIGHUP, not restarted. The node
// stack keeps running when the agent stops, so the next agent adopts it.
package nodestack
