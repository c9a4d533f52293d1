// Package nodestack runs what every node runs: node_exporter (published as
// a target of job "node"), the trace agent and, with the vector log
// shipper, Vector.
//
// The trace agent is the project's OpenTelemetry Collector (otelcol): it
// forwards the node's OTLP to the Jaeger collector URL the master
// publishes in etcd, through a queue on disk, keeping the last URL while
// none is published; with the otelcol log shipper it also ships the logs
// of the containers the agent manages on this node and the configured
// files. Its own metrics are published as target otelcol/node-collector.
//
// Configs are rendered under <data_dir>/stack; a changed config of a running
// Vector or trace agent is reloaded with SIGHUP, not restarted, once its
// readiness probe answers (workload.Spec.Ready: the trace agent's health
// check, Vector's API GET /health on stack.vector.api_listen), since a
// SIGHUP before the program has installed its handler kills it. The node
// stack keeps running when the agent stops, so the next agent adopts it.
package nodestack
