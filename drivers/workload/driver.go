package workload

import (
	"context"
	"errors"
	"syscall"
)

// ErrNotManaged is returned when a workload of the wanted name exists but was
// not started by a driver of the agent (it lacks LabelManaged): drivers never
// replace or remove it.
var ErrNotManaged = errors.New("workload: exists but is not managed by the agent")

// Driver makes the outside world match a Spec. Implementations are safe for
// concurrent use, and every method is idempotent.
type Driver interface {
	// Name is the driver's name as State.Driver shows it.
	Name() string
	// Ensure makes the named workload run as spec says and returns its
	// state:
	//  1. missing: create and start it;
	//  2. its LabelSpecHash differs from spec.Hash(): stop and remove it,
	//     then create and start it anew;
	//  3. stopped (exited, created): start it again (same container, new pid);
	//  4. running with the same hash: change nothing.
	// It returns ErrNotManaged (wrapped) for a workload it did not start.
	Ensure(ctx context.Context, spec Spec) (State, error)
	// Inspect returns the state of the named workload; a workload that does
	// not exist is State{Status: StatusMissing} and no error.
	Inspect(ctx context.Context, name string) (State, error)
	// Remove stops the named workload gracefully (SIGTERM, then a kill after
	// its stop timeout) and removes it. A missing workload is no error.
	Remove(ctx context.Context, name string) error
	// List returns the managed workloads whose labels carry every key and
	// value of selector, running or not, sorted by name.
	List(ctx context.Context, selector map[string]string) ([]State, error)
}

// OutputTailer is implemented by drivers that can read what a workload
// wrote: the Supervisor shows the last lines of a crash-looping workload.
type OutputTailer interface {
	// Tail returns up to lines last lines of the named workload's stdout
	// and stderr, oldest first, without the driver's own markers; none
	// when it wrote nothing or does not exist.
	Tail(ctx context.Context, name string, lines int) ([]string, error)
}

// Signaler is implemented by drivers that can send a signal to a running
// workload, for config reloads (SIGHUP to Vector or Prometheus).
type Signaler interface {
	Signal(ctx context.Context, name string, sig syscall.Signal) error
}
