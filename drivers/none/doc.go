// Package none is the driver for operators who run the stack themselves:
// it starts, stops and lists nothing, and reports every workload as
// unmanaged. The agent still renders the stack's configuration.
//
// It ignores every Spec field but Name (and validates the spec, so that a
// bad one is caught the same way whichever driver is chosen).
package none
