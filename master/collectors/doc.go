// Package collectors is the master duty that publishes where the cluster's
// services listen: collectors/<name> = {"url": "..."} for the Prometheus
// server, the Jaeger collector's OTLP endpoints and the metric relay.
//
// Every write is fenced on the term and carries the master's lease, so the
// URLs vanish with a dead master and a stale master cannot overwrite a newer
// one's.
package collectors
