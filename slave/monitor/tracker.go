package monitor

import (
	"strings"

	"github.com/agentproj/agent/slave/monitor/proc"
)

// procInfo is one process as the monitor knows it across refreshes. A
// process is its pid and start time: a pid reused by a new process is a
// new procInfo.
type procInfo struct {
	pid   int
	start uint64 // ticks since boot
	comm  string
	ppid  int
	seen  uint64 // refresh that last listed it

	// What is decided once per process: the first group whose static
	// selector (name, command line, unit) picks it, -1 for none.
	staticGroup int

	stat proc.Stat // of this refresh; stat.Comm is not kept

	// Read when measured, at most once per refresh.
	measured   uint64
	status     proc.Status
	io         proc.IO
	fds        int
	maxFDs     uint64
	maxFDsRead bool

	// group and container it was credited to last, with the cumulative
	// values credited, so the next refresh adds only the difference.
	groupIdx    int // -1: none
	groupCred   counters
	container   string
	contCred    counters
	member      int // group of this refresh, -1: none
	memberCycle uint64
}

// current is the process's cumulative figures now.
func (p *procInfo) current() counters {
	return counters{
		CPUUserSeconds:           float64(p.stat.UTime) / proc.UserHZ,
		CPUSystemSeconds:         float64(p.stat.STime) / proc.UserHZ,
		ReadBytes:                p.io.ReadBytes,
		WriteBytes:               p.io.WriteBytes,
		VoluntaryCtxtSwitches:    p.status.VoluntaryCtxtSwitches,
		NonvoluntaryCtxtSwitches: p.status.NonvoluntaryCtxtSwitches,
		MinorFaults:              p.stat.MinFlt,
		MajorFaults:              p.stat.MajFlt,
	}
}

// credit adds to acc what the process used since it was last credited to
// the same owner (everything, the first time), and remembers cur.
func credit(acc *counters, cur counters, last *counters, known bool) {
	if !known {
		*last = counters{}
	}
	acc.CPUUserSeconds += max(0, cur.CPUUserSeconds-last.CPUUserSeconds)
	acc.CPUSystemSeconds += max(0, cur.CPUSystemSeconds-last.CPUSystemSeconds)
	acc.ReadBytes += delta(cur.ReadBytes, last.ReadBytes)
	acc.WriteBytes += delta(cur.WriteBytes, last.WriteBytes)
	acc.VoluntaryCtxtSwitches += delta(cur.VoluntaryCtxtSwitches, last.VoluntaryCtxtSwitches)
	acc.NonvoluntaryCtxtSwitches += delta(cur.NonvoluntaryCtxtSwitches, last.NonvoluntaryCtxtSwitches)
	acc.MinorFaults += delta(cur.MinorFaults, last.MinorFaults)
	acc.MajorFaults += delta(cur.MajorFaults, last.MajorFaults)
	*last = cur
}

func delta(cur, last uint64) uint64 {
	if cur < last {
		return 0
	}
	return cur - last
}

// unitOf reports whether one of the cgroup paths has unit as a segment
// (/system.slice/nginx.service, or a sub-cgroup of it).
func unitOf(paths []string, unit string) bool {
	for _, p := range paths {
		for seg := range strings.SplitSeq(strings.Trim(p, "/"), "/") {
			if seg == unit {
				return true
			}
		}
	}
	return false
}

// addGauges adds one process's current figures to g.
func (g *gauges) add(p *procInfo, bootTime uint64, pageSize uint64) {
	g.Procs++
	g.Threads += int(p.stat.NumThreads)
	if p.stat.RSS > 0 {
		g.ResidentBytes += uint64(p.stat.RSS) * pageSize
	}
	g.VirtualBytes += p.stat.VSize
	g.SwapBytes += p.status.VmSwapBytes
	g.OpenFDs += p.fds
	start := float64(bootTime) + float64(p.start)/proc.UserHZ
	if g.StartTime == 0 || start < g.StartTime {
		g.StartTime = start
		g.MaxFDs = p.maxFDs
	}
	if p.maxFDs > 0 {
		g.WorstFDRatio = max(g.WorstFDRatio, float64(p.fds)/float64(p.maxFDs))
	}
}
