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
	// StatusCrashLooping: it exited at least CrashLoopThreshold times in a
	// row, each time after a start, and has not run for the Supervisor's
	// BackoffMax since. Only the Supervisor says this, never a driver: it
	// is about a workload's history, not one look at it. A workload that
	// crashes at once looks "running" for the instant after each restart;
	// this status says what it does over time.
	StatusCrashLooping Status = "crash-looping"
)

// CrashLoopThreshold is how many exits in a row make a workload
// crash-looping. One exit can be a kill -9 or an OOM kill; a second one
// before the workload has run for BackoffMax is a pattern.
const CrashLoopThreshold = 2

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
	// Restarts counts the restarts of the workload the Supervisor saw
	// since the agent started: its own starts of a stopped workload plus
	// the runtime's (Docker's restart policy). A driver reports only the
	// runtime's count (Docker's RestartCount; process: 0), which the
	// Supervisor replaces with its total.
	Restarts int `json:"restarts"`
	// LastOutput holds the last lines the workload wrote to stdout and
	// stderr (process: its log file; docker: the container's log), filled
	// by the Supervisor while the workload is crash-looping, so that
	// `agent status` says why it exits. Lines are cut at MaxOutputLine
	// bytes.
	LastOutput []string `json:"last_output,omitempty"`
}

// Output limits for State.LastOutput.
const (
	// OutputLines is how many lines of output a crash-looping state holds.
	OutputLines = 5
	// MaxOutputLine is the longest line kept, in bytes; longer ones are
	// cut and end in "...".
	MaxOutputLine = 300
)

// Running reports whether the workload runs or the runtime is restarting
// it. A crash-looping workload is not running, whatever it did at the
// instant it was last seen.
func (s State) Running() bool {
	return s.Status == StatusRunning || s.Status == StatusRestarting
}
