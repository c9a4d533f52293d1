package none

import (
	"context"
	"fmt"

	"github.com/agentproj/agent/drivers/workload"
)

// DriverName is State.Driver of this driver.
const DriverName = "none"

// Driver starts nothing.
type Driver struct{}

// New returns the driver.
func New() *Driver { return &Driver{} }

// Name implements workload.Driver.
func (*Driver) Name() string { return DriverName }

// Ensure implements workload.Driver: it validates spec and starts nothing.
func (*Driver) Ensure(_ context.Context, spec workload.Spec) (workload.State, error) {
	if err := spec.Validate(); err != nil {
		return workload.State{}, fmt.Errorf("none: %w", err)
	}
	return workload.State{
		Name:     spec.Name,
		Driver:   DriverName,
		Status:   workload.StatusUnmanaged,
		Image:    spec.Image,
		Binary:   spec.Binary,
		Labels:   workload.DriverLabels(spec.Labels, spec.Hash()),
		SpecHash: spec.Hash(),
	}, nil
}

// Inspect implements workload.Driver: whatever runs is someone else's.
func (*Driver) Inspect(_ context.Context, name string) (workload.State, error) {
	return workload.State{Name: name, Driver: DriverName, Status: workload.StatusUnmanaged}, nil
}

// Remove implements workload.Driver: there is nothing of the agent's to remove.
func (*Driver) Remove(context.Context, string) error { return nil }

// List implements workload.Driver: the agent manages nothing.
func (*Driver) List(context.Context, map[string]string) ([]workload.State, error) { return nil, nil }

var _ workload.Driver = (*Driver)(nil)
