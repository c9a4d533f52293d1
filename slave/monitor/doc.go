// Package monitor is the node monitor: the agent measures the processes
// chosen in [[monitor.processes]] (by pid, pidfile, systemd unit, name,
// command line or a monitor file the application writes) and every
// container of the host's Docker engine, and serves the figures at
// GET /metrics/monitor, published as a target of job agent-monitor.
//
// A Monitor reads /proc and the cgroup files once per interval into an
// immutable Snapshot (Run); a scrape only renders the last one, so the
// agent's API never waits for /proc. Processes are tracked across
// refreshes by pid and start time, as ncabatoff/process-exporter does: the
// counters of a group add up what its processes used while they were
// seen, so they keep growing when a process exits or restarts, and a group
// whose processes are gone reports up 0 rather than vanishing.
//
// What vanishes mid-read is skipped; a permission error is counted and
// logged once. The monitor never signals, writes to or otherwise touches
// what it measures.
package monitor
