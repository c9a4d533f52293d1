// Package process is the driver that runs local binaries as child processes
// of the agent: on bare metal without Docker, and in tests with the real
// Prometheus and node_exporter.
//
// Each workload lives in one directory as three files: <name>.log (stdout
// and stderr, appended), <name>.pid and <name>.json (the spec hash, labels,
// pid and start time). A child runs in its own process group, so that a
// stop reaches its children and a terminal's signals do not reach it; it
// outlives the agent, and the next agent adopts it by its pid file when the
// pid is alive, started at the recorded time and runs the recorded binary.
// Under systemd this needs KillMode=process in the agent's unit.
//
// The environment is Spec.Env alone (plus a default PATH); the working
// directory is the driver's directory. These Spec fields do not apply and
// are ignored: Image, Hostname, Mounts, Resources and Restart (the
// Supervisor restarts a stopped process; nothing does while the agent is
// down).
//
// It must never signal a pid it cannot prove it started.
package process
