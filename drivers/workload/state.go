package workload

import "time"

// Status is what a driver observed.
type Status string

// Statuses.
const (
	// StatusRunning: the workload runs.
	StatusRunning Status = "running"
	// StatusExited: it ran and stopped (crashed, killed or finished).
	StatusExited Status = "exited"
	// StatusRestarting: the runtime is restarting it by its own policy.
	StatusRestarting Status = "restarting"
	// StatusMissing: no workload of that name exists.
	StatusMissing Status = "missing"
	// StatusUnmanaged: the driver does not run workloads (none); someone
	// else does.
	StatusUnmanaged Status = "unmanaged"
	// StatusCreated: it exists but was never started.
	StatusCreated Status = "created"
)

// State is what a driver observed about one workload, as `agent status`
// shows it.
type State struct {
	Name   string `json:"name"`
	Driver string `json:"driver"`
	Status Status `json:"status"`
	Image  string `json:"image,omitempty"`
	Binary string `json:"binary,omitempty"`
	// ID is the container id (docker) or the pid (process).
	ID string `json:"id,omitempty"`
	// Since is when the workload started (running) or stopped (exited).
	Since time.Time `json:"since,omitzero"`
	// ExitCode is the last exit code; -1 when it cannot be known (a
	// process adopted from an earlier agent).
	ExitCode int `json:"exit_code"`
	// LastError is the last error of the driver or the Supervisor about
	// this workload, empty when the last attempt worked.
	LastError string            `json:"last_error,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	// SpecHash is the LabelSpecHash the workload carries.
	SpecHash string `json:"spec_hash,omitempty"`
	// Restarts counts the starts of a stopped workload by the Supervisor
	// since the agent started (drivers leave it zero).
	Restarts int `json:"restarts"`
}

// Running reports whether the workload runs or the runtime is restarting it.
func (s State) Running() bool {
	return s.Status == StatusRunning || s.Status == StatusRestarting
}
