package monitor

import "time"

// Snapshot is one reading of everything the monitor measures. It is never
// modified once published.
type Snapshot struct {
	// Time is when the reading started; Duration how long it took.
	Time       time.Time
	Duration   time.Duration
	Groups     []GroupSample
	Containers []ContainerSample
}

// counters are the cumulative figures of a group or container, in the
// units of the metrics (seconds, bytes, counts).
type counters struct {
	CPUUserSeconds, CPUSystemSeconds float64
	ReadBytes, WriteBytes            uint64
	VoluntaryCtxtSwitches            uint64
	NonvoluntaryCtxtSwitches         uint64
	MinorFaults, MajorFaults         uint64
}

// gauges are the current figures of the processes of a group or container.
type gauges struct {
	Procs, Threads int
	// ResidentBytes, VirtualBytes, SwapBytes are summed over processes.
	ResidentBytes, VirtualBytes, SwapBytes uint64
	OpenFDs                                int
	// MaxFDs is the open-files soft limit of the oldest process (0:
	// unlimited or unknown); WorstFDRatio the highest open/limit of any.
	MaxFDs       uint64
	WorstFDRatio float64
	// StartTime is when the oldest process started (unix seconds).
	StartTime float64
	// HasNet says the processes live in a network namespace of their own,
	// whose counters NetRx/TxBytes are; on the host's namespace they would
	// only repeat the host's totals and are left out.
	HasNet                 bool
	NetRxBytes, NetTxBytes uint64
}

// GroupSample is a process group: its selector's processes and, unless
// children = false, their descendants.
type GroupSample struct {
	Name string
	// Service and IP come from a monitor file; GUID from the config.
	Service, IP, GUID string
	// Up: at least one selected process runs.
	Up bool
	counters
	gauges
}

// ContainerSample is one container: identity from the engine, resources
// from its cgroup, process figures from /proc.
type ContainerSample struct {
	ID, Name, Image, GUID string
	// Up: running, and its cgroup was read.
	Up bool
	// Cgroup figures (container_* semantics).
	CPUUsageSeconds, CPUUserSeconds, CPUSystemSeconds                  float64
	MemoryUsage, MemoryWorkingSet, MemoryRSS, MemoryCache, MemoryLimit uint64
	IOReadBytes, IOWriteBytes                                          uint64
	// From its processes.
	VoluntaryCtxtSwitches, NonvoluntaryCtxtSwitches uint64
	gauges
}
