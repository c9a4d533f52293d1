package monitor

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/slave/monitor/cgroup"
)

// ContainerLister lists the containers of a Docker engine. The Engine API
// client (*client.Client of github.com/docker/docker) is one.
type ContainerLister interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
}

// containerState is what the refresh loop keeps about containers.
type containerState struct {
	acc   map[string]*containerAcc // by container id
	paths map[string]string        // container id -> cgroup path, from this refresh's scan
	// The engine's last list, asked again when the containers in the
	// cgroups change, after relistEvery, or after a failure: listing
	// decodes every container's JSON, the largest allocation of a refresh.
	list     []container.Summary
	listed   map[string]bool // container ids in the cgroups when listed
	listedAt time.Time
	down     bool // the engine did not answer last time
	procs    []int
	stats    cgroup.Stats
}

// relistEvery bounds how long a rename or a stop that the cgroups do not
// show (a restart within one interval) goes unseen.
const relistEvery = time.Minute

// containerAcc accumulates what a container's processes used, for the
// counters the cgroup does not keep (context switches) or may not (I/O).
type containerAcc struct {
	counters
	seen     uint64
	cgroupIO bool // the cgroup counts block I/O
	warned   bool // a problem with its cgroup was logged
}

// listTimeout bounds one listing, so a stuck engine cannot hold the
// refresh loop.
const listTimeout = 5 * time.Second

// sampleContainers reads every running container (and every stopped one
// the agent runs, as down) and returns them sorted by name, with the
// number of processes left out by the budget.
func (m *Monitor) sampleContainers(ctx context.Context, budget *int) ([]ContainerSample, int) {
	if !m.cfg.Containers || m.cfg.Docker == nil || m.cg == nil {
		return nil, 0
	}
	cs := &m.containers
	m.scanCgroups()
	if cs.list == nil || cs.down || time.Since(cs.listedAt) >= relistEvery || !sameKeys(cs.listed, cs.paths) {
		lctx, cancel := context.WithTimeout(ctx, listTimeout)
		list, err := m.cfg.Docker.ContainerList(lctx, container.ListOptions{All: true})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				m.metrics.errors.WithLabelValues("docker").Inc()
				if !cs.down {
					m.log.Warn("monitor: the Docker engine does not answer; containers are not measured until it does", "err", err)
				}
				cs.down = true
			}
			cs.list = nil
			return nil, 0
		}
		if cs.down {
			m.log.Info("monitor: the Docker engine answers again")
			cs.down = false
		}
		cs.list, cs.listedAt = list, time.Now()
		cs.listed = make(map[string]bool, len(cs.paths))
		for id := range cs.paths {
			cs.listed[id] = true
		}
	}
	list := cs.list
	out := make([]ContainerSample, 0, len(list))
	dropped := 0
	for _, c := range list {
		running := c.State == container.StateRunning
		// Stopped containers are history, except the agent's own: an app
		// that should run and does not is worth a 0.
		if !running && !workload.IsManaged(c.Labels) {
			continue
		}
		s := ContainerSample{ID: c.ID, Name: containerName(c), Image: c.Image, GUID: c.Labels[workload.LabelGUID]}
		if running {
			ok, d := m.sampleContainer(c.ID, &s, budget)
			dropped += d
			if !ok {
				continue // stopped while it was read
			}
		}
		out = append(out, s)
	}
	for id, a := range cs.acc {
		if a.seen != m.cycle {
			delete(cs.acc, id)
		}
	}
	slices.SortFunc(out, func(a, b ContainerSample) int { return strings.Compare(a.Name, b.Name) })
	return out, dropped
}

// sampleContainer reads one running container; false when it vanished.
func (m *Monitor) sampleContainer(id string, s *ContainerSample, budget *int) (ok bool, dropped int) {
	cs := &m.containers
	acc := cs.acc[id]
	if acc == nil {
		acc = &containerAcc{}
		cs.acc[id] = acc
	}
	acc.seen = m.cycle
	path, found := m.cgroupPath(id)
	if !found {
		m.metrics.errors.WithLabelValues("cgroup").Inc()
		if !acc.warned {
			acc.warned = true
			m.log.Warn("monitor: no cgroup found for a running container; it is reported up without figures",
				"container", s.Name, "id", shortID(id), "hierarchy", m.cg.String())
		}
		s.Up = true
		return true, 0
	}
	if err := m.cg.Stats(path, &cs.stats); err != nil {
		if cgroup.IsGone(err) {
			m.metrics.vanished.Inc()
			return false, 0
		}
		m.metrics.errors.WithLabelValues("cgroup").Inc()
		if !acc.warned {
			acc.warned = true
			m.log.Warn("monitor: cannot read a container's cgroup", "container", s.Name, "err", err)
		}
	}
	st := &cs.stats
	s.Up = true
	s.CPUUsageSeconds, s.CPUUserSeconds, s.CPUSystemSeconds = st.CPUUsageSeconds, st.CPUUserSeconds, st.CPUSystemSeconds
	s.MemoryUsage, s.MemoryWorkingSet, s.MemoryRSS, s.MemoryCache, s.MemoryLimit = st.MemoryUsage, st.MemoryWorkingSet, st.MemoryRSS, st.MemoryCache, st.MemoryLimit
	// Some kernels count nothing in the v1 blkio files (this project's test
	// machines: 6.18, virtio): until the cgroup shows any I/O, the
	// container's is what its processes did while they were measured.
	acc.cgroupIO = acc.cgroupIO || st.IOReadBytes+st.IOWriteBytes > 0
	var err error
	cs.procs, err = m.cg.Procs(path, cs.procs[:0])
	if err != nil && !cgroup.IsGone(err) {
		m.metrics.errors.WithLabelValues("cgroup").Inc()
	}
	var oldest *procInfo
	for _, pid := range cs.procs {
		p := m.procs[pid]
		if p == nil || p.seen != m.cycle {
			continue // started after the scan, or gone
		}
		switch m.measure(p, budget) {
		case measureDropped:
			dropped++
			continue
		case measureGone:
			continue
		}
		credit(&acc.counters, p.current(), &p.contCred, p.container == id)
		p.container = id
		s.add(p, m.bootTime, m.pageSize)
		if oldest == nil || p.start < oldest.start {
			oldest = p
		}
	}
	s.VoluntaryCtxtSwitches, s.NonvoluntaryCtxtSwitches = acc.VoluntaryCtxtSwitches, acc.NonvoluntaryCtxtSwitches
	if acc.cgroupIO {
		s.IOReadBytes, s.IOWriteBytes = st.IOReadBytes, st.IOWriteBytes
	} else {
		s.IOReadBytes, s.IOWriteBytes = acc.ReadBytes, acc.WriteBytes
	}
	if oldest != nil {
		m.network(oldest, &s.gauges)
	}
	return true, dropped
}

// scanCgroups finds the cgroup of every container on the host. It reads
// directories only, a few hundred on a busy host.
func (m *Monitor) scanCgroups() {
	cs := &m.containers
	clear(cs.paths)
	err := m.cg.Scan(func(path string, ident cgroup.Identity) {
		if ident.ContainerID != "" {
			cs.paths[ident.ContainerID] = path
		}
	})
	if err != nil {
		m.metrics.errors.WithLabelValues("cgroup").Inc()
		m.once("cgroup-scan", func() {
			m.log.Warn("monitor: cannot scan the cgroup hierarchy", "hierarchy", m.cg.String(), "err", err)
		})
	}
}

// cgroupPath is a container's cgroup as this refresh's scan found it.
func (m *Monitor) cgroupPath(id string) (string, bool) {
	p, ok := m.containers.paths[id]
	return p, ok
}

func sameKeys(a map[string]bool, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range b {
		if !a[k] {
			return false
		}
	}
	return true
}

func containerName(c container.Summary) string {
	if len(c.Names) > 0 {
		return strings.TrimPrefix(c.Names[0], "/")
	}
	return shortID(c.ID)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
