// Package stackconfig owns the agent's own configuration and everything the
// agent renders for the stack it runs.
//
// The agent's configuration is layered: defaults (DefaultConfig), then a TOML
// file, then AGENT_* environment variables, then command-line flags; unknown
// keys are an error and Validate names the field and the bad value. Nothing in
// this package touches the network, etcd or a container: it only turns values
// into checked values and checked values into files.
package stackconfig
