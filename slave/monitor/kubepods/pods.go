package kubepods

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/agentproj/agent/slave/monitor/cgroup"
	"github.com/agentproj/agent/slave/monitor/proc"
)

// Config is what Pods reads and how often.
type Config struct {
	// Node is this node's name as Kubernetes knows it (spec.nodeName).
	Node string
	// Interval between readings of the cgroups.
	Interval time.Duration
	// ProcRoot is the host's /proc (the agent's pod runs with hostPID).
	ProcRoot string
	// CgroupRoot is the host's /sys/fs/cgroup; Cgroups, when set, is used
	// instead of detecting the hierarchy mounted there.
	CgroupRoot string
	Cgroups    *cgroup.Hierarchy
	// MaxSeries bounds the series served (monitor.max_series, a budget of
	// their own beside the processes' and containers'); pods past it are
	// left out, in namespace and name order, and counted. 0: no bound.
	MaxSeries int
}

// Usage are a cgroup's figures, as cgroup.Stats reads them.
type Usage = cgroup.Stats

// Snapshot is one reading of the node's pods, sorted by namespace and
// name; never modified once published.
type Snapshot struct {
	Time     time.Time
	Duration time.Duration
	Pods     []PodSample
	// States are the node's pods that are meant to run (pod_up: Running),
	// those without a cgroup yet included, in the same order.
	States []Pod
}

// PodSample is one pod: its identity from the watch, its figures from its
// cgroup, its network from its processes' namespace.
type PodSample struct {
	Pod
	Usage
	// Procs counts the processes of every container, sandbox included.
	Procs int
	// HasNet: the pod has a network namespace of its own, whose counters
	// NetRx/TxBytes are (a hostNetwork pod's would be the host's).
	HasNet                 bool
	NetRxBytes, NetTxBytes uint64
	Containers             []ContainerSample
}

// ContainerSample is one container of a pod, named from the pod's status.
type ContainerSample struct {
	ID, Name string
	Usage
	Procs int
}

// Pods is the pod monitor actor: a Watch of the node's pods and a reading
// of the kubepods cgroups every interval.
type Pods struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	watch   *Watch
	snap    atomic.Pointer[Snapshot]

	// Owned by Refresh.
	fs        *proc.FS
	cg        *cgroup.Hierarchy
	hostNetNS uint64
	found     map[string]*found
	stats     cgroup.Stats
	procs     []int
	logged    map[string]bool
}

// found is a pod's cgroups as one scan found them.
type found struct {
	path       string // the pod's own cgroup; "" when not seen
	containers []foundContainer
}

type foundContainer struct{ id, path string }

// New prepares the pod monitor of cfg.Node; nothing is read until Run or
// Refresh. Its own metrics (agent_monitor_pods*) go to reg; the pods'
// series are served by Collector.
func New(cfg Config, kube kubernetes.Interface, log *slog.Logger, reg prometheus.Registerer) (*Pods, error) {
	if cfg.Node == "" {
		return nil, fmt.Errorf("node: must be set for the pod monitor (the node name Kubernetes knows), got %q", cfg.Node)
	}
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("monitor.interval: must be > 0, got %s", cfg.Interval)
	}
	fs, err := proc.NewFS(cfg.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("monitor.proc_root: %w", err)
	}
	p := &Pods{cfg: cfg, log: log, metrics: newMetrics(), fs: fs, cg: cfg.Cgroups, found: map[string]*found{}, logged: map[string]bool{}}
	if err := p.metrics.register(reg); err != nil {
		return nil, fmt.Errorf("pod monitor: %w", err)
	}
	if p.cg == nil {
		if p.cg, err = cgroup.Detect(filepath.Join(cfg.ProcRoot, "self", "mountinfo"), cfg.CgroupRoot); err != nil {
			return nil, fmt.Errorf("pod monitor: %w", err)
		}
	}
	// The host's network namespace is init's; a pod's is its own.
	if p.hostNetNS, err = fs.NetNS(1); err != nil {
		p.hostNetNS, _ = fs.NetNS(os.Getpid())
	}
	p.watch = NewWatch(kube, cfg.Node, log, p.metrics)
	p.snap.Store(&Snapshot{})
	return p, nil
}

// Watch is the pods' watch (for tests and status).
func (p *Pods) Watch() *Watch { return p.watch }

// Collector serves the last snapshot's series; the node monitor's
// registry takes it, so they are at /metrics/monitor.
func (p *Pods) Collector() prometheus.Collector { return collector{p} }

// Snapshot is the last reading; empty before the first.
func (p *Pods) Snapshot() *Snapshot { return p.snap.Load() }

// Run watches the node's pods and, once they are listed, reads the
// cgroups at once and then every interval until ctx ends.
func (p *Pods) Run(ctx context.Context) error {
	p.log.Info("pod monitor started", "node", p.cfg.Node, "interval", p.cfg.Interval, "hierarchy", p.cg.String())
	done := make(chan error, 1)
	go func() { done <- p.watch.Run(ctx) }()
	select {
	case <-p.watch.Synced():
	case <-ctx.Done():
		return <-done
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		p.Refresh()
		select {
		case <-ctx.Done():
			return <-done
		case <-t.C:
		}
	}
}

// Refresh reads the kubepods cgroups once, publishes the snapshot and
// returns it. Only one Refresh may run at a time.
func (p *Pods) Refresh() *Snapshot {
	start := time.Now()
	for _, f := range p.found {
		f.path, f.containers = "", f.containers[:0]
	}
	err := p.cg.Scan(func(path string, id cgroup.Identity) {
		if id.PodUID == "" {
			return
		}
		f := p.found[id.PodUID]
		if f == nil {
			f = &found{}
			p.found[id.PodUID] = f
		}
		if id.ContainerID == "" {
			f.path = path
		} else {
			f.containers = append(f.containers, foundContainer{id.ContainerID, path})
		}
	})
	if err != nil {
		p.metrics.errors.WithLabelValues("cgroup").Inc()
		p.once("scan", func() { p.log.Warn("pod monitor: cannot scan the cgroups", "hierarchy", p.cg.String(), "err", err) })
	}
	snap := &Snapshot{Time: start, Pods: make([]PodSample, 0, len(p.found))}
	skippedPods, skippedContainers := 0, 0
	for uid, f := range p.found {
		if f.path == "" {
			delete(p.found, uid) // gone since the last scan
			continue
		}
		pod, ok := p.watch.Lookup(uid)
		if !ok {
			skippedPods++
			continue
		}
		s := PodSample{Pod: pod}
		s.Containers = nil
		if !p.read(f.path, &s.Usage) {
			continue
		}
		netPID := 0
		for _, c := range f.containers {
			p.procs, err = p.cg.Procs(c.path, p.procs[:0])
			if err != nil && !cgroup.IsGone(err) {
				p.metrics.errors.WithLabelValues("cgroup").Inc()
			}
			s.Procs += len(p.procs)
			if netPID == 0 && len(p.procs) > 0 {
				netPID = p.procs[0]
			}
			name, known := pod.Containers[c.id]
			if !known {
				skippedContainers++ // the sandbox, or not in the status yet
				continue
			}
			cs := ContainerSample{ID: c.id, Name: name, Procs: len(p.procs)}
			if p.read(c.path, &cs.Usage) {
				s.Containers = append(s.Containers, cs)
			}
		}
		s.Pod.Containers = nil // the samples name them
		slices.SortFunc(s.Containers, func(a, b ContainerSample) int { return strings.Compare(a.Name, b.Name) })
		if netPID != 0 {
			p.network(netPID, &s)
		}
		snap.Pods = append(snap.Pods, s)
	}
	slices.SortFunc(snap.Pods, func(a, b PodSample) int { return byName(&a.Pod, &b.Pod) })
	snap.States = p.watch.Pods()
	for i := range snap.States {
		snap.States[i].Containers = nil
	}
	slices.SortFunc(snap.States, func(a, b Pod) int { return byName(&a, &b) })
	limited := p.limitSeries(snap)
	snap.Duration = time.Since(start)
	p.snap.Store(snap)
	p.metrics.skipped.WithLabelValues("series").Set(float64(limited))
	p.metrics.pods.Set(float64(len(snap.Pods)))
	p.metrics.skipped.WithLabelValues("pod").Set(float64(skippedPods))
	p.metrics.skipped.WithLabelValues("container").Set(float64(skippedContainers))
	p.metrics.refreshSeconds.Set(snap.Duration.Seconds())
	return snap
}

// byName orders pods by namespace, then name.
func byName(a, b *Pod) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// Series a pod and each of its containers yield at most, for MaxSeries.
const (
	seriesPerPod       = 13
	seriesPerContainer = 11
)

// limitSeries keeps the pods whose series fit in MaxSeries and returns
// how many it left out.
func (p *Pods) limitSeries(s *Snapshot) int {
	if p.cfg.MaxSeries <= 0 {
		return 0
	}
	left := p.cfg.MaxSeries
	for i := range s.Pods {
		n := seriesPerPod + seriesPerContainer*len(s.Pods[i].Containers)
		if n > left {
			out := len(s.Pods) - i
			s.Pods = s.Pods[:i]
			p.once("max_series", func() {
				p.log.Warn("monitor.max_series reached: some pods are not served (agent_monitor_pods_skipped{what=\"series\"})", "max_series", p.cfg.MaxSeries)
			})
			return out
		}
		left -= n
	}
	return 0
}

// read reads one cgroup's figures into u; false when the cgroup went away
// meanwhile. Another failure is counted and leaves zeros.
func (p *Pods) read(path string, u *Usage) bool {
	if err := p.cg.Stats(path, &p.stats); err != nil {
		if cgroup.IsGone(err) {
			return false
		}
		p.metrics.errors.WithLabelValues("cgroup").Inc()
		p.once("stats", func() { p.log.Warn("pod monitor: cannot read a cgroup", "path", path, "err", err) })
	}
	*u = p.stats
	return true
}

// network reads the counters of pid's network namespace, shared by every
// container of the pod, unless it is the host's.
func (p *Pods) network(pid int, s *PodSample) {
	ns, err := p.fs.NetNS(pid)
	if err != nil {
		if !proc.IsGone(err) {
			p.metrics.errors.WithLabelValues("proc").Inc()
			p.once("netns", func() { p.log.Warn("pod monitor: cannot read a pod's network namespace", "pid", pid, "err", err) })
		}
		return
	}
	if ns == p.hostNetNS {
		return
	}
	rx, tx, err := p.fs.NetDev(pid)
	if err != nil {
		if !proc.IsGone(err) {
			p.metrics.errors.WithLabelValues("proc").Inc()
			p.once("netdev", func() { p.log.Warn("pod monitor: cannot read a pod's network counters", "pid", pid, "err", err) })
		}
		return
	}
	s.HasNet, s.NetRxBytes, s.NetTxBytes = true, rx, tx
}

// once runs fn the first time key is seen.
func (p *Pods) once(key string, fn func()) {
	if p.logged[key] {
		return
	}
	p.logged[key] = true
	fn()
}
