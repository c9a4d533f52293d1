// Package clusterstack is the master duty that runs the cluster's
// Prometheus server and Jaeger v2 collector for the length of a term, and
// publishes the collector's own metrics as scrape target jaeger/collector
// of the master's node while the term lasts.
//
// At the start of a term it renders their configs under <data_dir>/stack,
// hands their specs to a workload.Supervisor, and stops them when the term
// ends. A Prometheus of this stack whose config changed while running is
// reloaded with SIGHUP through the driver once it answers /-/ready, not
// restarted; nothing the agent
// did not start or adopt (by its labels) is ever reloaded, signalled or
// stopped, whatever listens on the configured port. RemoveLeftovers, called when an agent starts, stops
// what a crashed earlier master left behind on this host, so a restarted
// old master never keeps a second Prometheus running.
package clusterstack
