// Package plugins runs the [[plugins]] of the agent: executables (a
// command, or the "plugin" file at the root of a git repository cloned
// into the plugins directory) that print metrics in the push API's JSON
// list or the Prometheus text format, on a schedule or on demand over the
// API. Their samples, named plugin_<name>_<metric> with the labels ns,
// node and cluster, go into the relay's durable queue like pushed ones.
//
// A run is bounded: at its timeout, or when its output passes
// MaxOutputBytes, the plugin is killed with its whole process group; what
// it printed is refused whole when one line is bad. A failure is recorded
// in the plugin's status and never touches the other plugins or the agent.
//
// Nothing from the network reaches a command line or a file path: a run's
// param is handed over in the PLUGIN_PARAM variable only (never as an
// argument, which a plugin could read as an option, and never through a
// shell); plugin names are checked against stackconfig.ValidPluginName;
// git URLs come from the config file only.
//
// Lifecycle: New checks what the config cannot (users, git); Run (called
// once) clones missing git plugins, schedules runs, and returns once every
// run it or the API started has ended; the API answers 503 outside Run.
package plugins
