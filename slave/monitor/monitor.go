package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/slave/monitor/cgroup"
	"github.com/agentproj/agent/slave/monitor/proc"
	"github.com/agentproj/agent/slave/reload"
	"github.com/agentproj/agent/stackconfig"
)

// Path is where the agent's API serves the monitor's metrics.
const Path = "/metrics/monitor"

// Job is the scrape job of the monitor's target; the recording rules
// select it.
const Job = stackconfig.MonitorJob

// Config is what a Monitor measures and how.
type Config struct {
	stackconfig.Monitor
	// Docker lists the host's containers when Containers is set; nil
	// measures none.
	Docker ContainerLister
	// Cgroups is the hierarchy containers are read from; nil: detected
	// from the mounts under CgroupRoot.
	Cgroups *cgroup.Hierarchy
	// Collectors are served at Path beside the monitor's own series: the
	// pods of a Kubernetes node (kubepods.Pods.Collector).
	Collectors []prometheus.Collector
}

// Monitor is the node monitor actor; see the package doc.
type Monitor struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	reg     *prometheus.Registry
	snap    atomic.Pointer[Snapshot]
	next    *reload.Pending[stackconfig.Monitor] // SetConfig's, for the refresh loop

	// Owned by the refresh loop.
	fs          *proc.FS
	cg          *cgroup.Hierarchy
	groups      []*group
	procs       map[int]*procInfo
	cycle       uint64
	bootTime    uint64
	pageSize    uint64
	hostNetNS   uint64
	needCmdline bool
	needCgroups bool
	pids        []int
	st          proc.Stat
	logged      map[string]bool
	containers  containerState
}

// New checks cfg and prepares a Monitor; nothing is read until Run or
// Refresh. Its own metrics (agent_monitor_*) go to reg and are served at
// Path beside what it measures.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Monitor, error) {
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("monitor.interval: must be > 0, got %s", cfg.Interval)
	}
	fs, err := proc.NewFS(cfg.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("monitor.proc_root: %w", err)
	}
	groups, err := newGroups(cfg.Processes)
	if err != nil {
		return nil, err
	}
	m := &Monitor{
		cfg: cfg, log: log, fs: fs, groups: groups,
		procs: map[int]*procInfo{}, pageSize: uint64(os.Getpagesize()), logged: map[string]bool{},
		containers: containerState{acc: map[string]*containerAcc{}, paths: map[string]string{}},
		next:       reload.NewPending[stackconfig.Monitor](),
	}
	m.setGroups(groups)
	if m.bootTime, err = fs.BootTime(); err != nil {
		return nil, fmt.Errorf("monitor: boot time: %w", err)
	}
	// The host's network namespace is init's; the agent may run in one of
	// its own.
	if m.hostNetNS, err = fs.NetNS(1); err != nil {
		m.hostNetNS, _ = fs.NetNS(os.Getpid())
	}
	m.cg = cfg.Cgroups
	if m.cg == nil && cfg.Containers && cfg.Docker != nil {
		m.cg, err = cgroup.Detect(filepath.Join(cfg.ProcRoot, "self", "mountinfo"), cfg.CgroupRoot)
		if err != nil {
			log.Warn("containers are not measured: no cgroup hierarchy found", "err", err)
		} else {
			log.Info("containers are read from cgroups", "hierarchy", m.cg.String())
		}
	}
	m.metrics = newMetrics()
	if err := m.metrics.register(reg); err != nil {
		return nil, err
	}
	m.reg = prometheus.NewRegistry()
	if err := m.metrics.register(m.reg); err != nil {
		return nil, err
	}
	if err := m.reg.Register(collector{m}); err != nil {
		return nil, err
	}
	for _, c := range cfg.Collectors {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("monitor: %w", err)
		}
	}
	m.snap.Store(&Snapshot{})
	return m, nil
}

// Run refreshes the snapshot at once and then every interval until ctx
// ends.
func (m *Monitor) Run(ctx context.Context) error {
	m.log.Info("node monitor started", "interval", m.cfg.Interval, "groups", len(m.groups), "containers", m.cfg.Containers && m.cfg.Docker != nil)
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		m.Refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.next.Ready():
			if m.reload() {
				t.Reset(m.cfg.Interval)
			}
		}
	}
}

// SetConfig has Run apply a reloaded [monitor] (SIGHUP) before its next
// reading, which it takes at once: the process groups, the interval and
// the two limits. A group that stays (same name and selector) keeps its
// counters; a new one starts from what its processes used so far, as at
// the start. The other keys (enabled, containers, pods and the mount
// points) are the ones the monitor was made with; stackconfig.Reload keeps
// them.
func (m *Monitor) SetConfig(cfg stackconfig.Monitor) { m.next.Set(cfg) }

// reload applies SetConfig's config, if it changes anything.
func (m *Monitor) reload() bool {
	next, ok := m.next.Take()
	if !ok || reflect.DeepEqual(next, m.cfg.Monitor) {
		return false
	}
	groups, err := newGroups(next.Processes)
	if err != nil { // stackconfig validated it: not expected
		m.log.Error("monitor: reloaded config rejected, keeping the running one", "err", err)
		return false
	}
	// A group that stays keeps what it counted and its pidfile's state;
	// a process keeps its place in it.
	moved := make([]int, len(m.groups)) // old index -> new, -1: gone
	for i, old := range m.groups {
		moved[i] = -1
		for j, g := range groups {
			if g.name == old.name && reflect.DeepEqual(g.cfg, old.cfg) {
				g.acc, g.file, g.pid, g.service, g.ip = old.acc, old.file, old.pid, old.service, old.ip
				moved[i] = j
				break
			}
		}
	}
	m.setGroups(groups)
	for _, p := range m.procs {
		if p.groupIdx >= 0 {
			p.groupIdx = moved[p.groupIdx]
		}
		m.classify(p)
	}
	m.cfg.Monitor = next
	clear(m.logged) // the limits' warnings may be due again
	m.log.Info("monitor: config reloaded", "interval", m.cfg.Interval, "groups", len(m.groups),
		"max_processes", m.cfg.MaxProcesses, "max_series", m.cfg.MaxSeries)
	return true
}

// setGroups makes groups the measured ones.
func (m *Monitor) setGroups(groups []*group) {
	m.groups = groups
	m.needCmdline, m.needCgroups = false, false
	for _, g := range groups {
		m.needCmdline = m.needCmdline || g.kind == byCmdline
		m.needCgroups = m.needCgroups || g.kind == byUnit
	}
}

// Snapshot is the last reading; empty before the first.
func (m *Monitor) Snapshot() *Snapshot { return m.snap.Load() }

// Handler serves the last reading in the Prometheus text format or
// OpenMetrics, as the Accept header asks.
func (m *Monitor) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, ErrorHandling: promhttp.ContinueOnError})
}

// Refresh reads /proc and the cgroups once, publishes the result as the
// snapshot and returns it. Only one Refresh may run at a time (Run calls
// it; tests and benchmarks call it directly instead).
func (m *Monitor) Refresh(ctx context.Context) *Snapshot {
	start := time.Now()
	m.cycle++
	budget := m.cfg.MaxProcesses
	dropped := 0
	m.scan()

	groups := make([]GroupSample, len(m.groups))
	for i, g := range m.groups {
		m.resolve(g)
		groups[i] = GroupSample{Name: g.name, GUID: g.guid, Service: g.service, IP: g.ip}
	}
	oldest := make([]*procInfo, len(m.groups))
	for _, pid := range m.pids {
		p := m.procs[pid]
		if p == nil || p.seen != m.cycle {
			continue
		}
		gi := m.memberOf(p)
		if gi < 0 {
			continue
		}
		switch m.measure(p, &budget) {
		case measureDropped:
			dropped++
			continue
		case measureGone:
			continue
		}
		g := m.groups[gi]
		credit(&g.acc, p.current(), &p.groupCred, p.groupIdx == gi)
		p.groupIdx = gi
		groups[gi].add(p, m.bootTime, m.pageSize)
		if o := oldest[gi]; o == nil || p.start < o.start {
			oldest[gi] = p
		}
	}
	for i, g := range m.groups {
		groups[i].counters = g.acc
		groups[i].Up = groups[i].Procs > 0
		if o := oldest[i]; o != nil {
			m.network(o, &groups[i].gauges)
		}
	}
	containers, cdropped := m.sampleContainers(ctx, &budget)
	dropped += cdropped

	snap := &Snapshot{Time: start, Groups: groups, Containers: containers}
	m.limitSeries(snap)
	snap.Duration = time.Since(start)
	m.snap.Store(snap)

	m.metrics.refreshes.Inc()
	m.metrics.refreshSeconds.Set(snap.Duration.Seconds())
	m.metrics.processes.Set(float64(m.cfg.MaxProcesses - budget))
	m.metrics.containers.Set(float64(len(snap.Containers)))
	if dropped > 0 {
		m.metrics.dropped.WithLabelValues("processes").Add(float64(dropped))
		m.once("max_processes", func() {
			m.log.Warn("monitor.max_processes reached: some processes are not measured (agent_monitor_dropped_total)", "max_processes", m.cfg.MaxProcesses, "dropped", dropped)
		})
	}
	return snap
}

// scan lists the processes and reads the stat file of each: their names
// and parents decide the groups.
func (m *Monitor) scan() {
	var err error
	m.pids, err = m.fs.PIDs(m.pids[:0])
	if err != nil {
		m.metrics.errors.WithLabelValues("proc").Inc()
		m.once("proc-list", func() { m.log.Error("cannot list processes", "proc_root", m.fs.Root(), "err", err) })
	}
	for _, pid := range m.pids {
		if err := m.fs.Stat(pid, &m.st); err != nil {
			m.readError("stat", pid, err)
			continue
		}
		p := m.procs[pid]
		switch {
		case p == nil || p.start != m.st.StartTime:
			p = &procInfo{pid: pid, start: m.st.StartTime, comm: string(m.st.Comm), groupIdx: -1, staticGroup: -1}
			m.procs[pid] = p
			m.classify(p)
		case string(m.st.Comm) != p.comm:
			// exec: a new program in the same process (a shell's child
			// is seen under the shell's name before it execs).
			p.comm = string(m.st.Comm)
			m.classify(p)
		}
		p.stat = m.st
		p.stat.Comm = nil
		p.ppid = m.st.PPID
		p.seen = m.cycle
	}
	for pid, p := range m.procs {
		if p.seen != m.cycle {
			delete(m.procs, pid)
		}
	}
}

// classify decides the first group whose name, command-line or unit
// selector picks p.
func (m *Monitor) classify(p *procInfo) {
	p.staticGroup = -1
	var cmdline string
	var cgroups []string
	if m.needCmdline {
		var err error
		if cmdline, err = m.fs.Cmdline(p.pid); err != nil {
			m.readError("cmdline", p.pid, err)
		}
	}
	if m.needCgroups {
		cgs, err := m.fs.Cgroups(p.pid)
		if err != nil {
			m.readError("cgroup", p.pid, err)
		}
		for _, c := range cgs {
			cgroups = append(cgroups, c.Path)
		}
	}
	for i, g := range m.groups {
		var ok bool
		switch g.kind {
		case byComm:
			ok = p.comm == g.comm
		case byCmdline:
			ok = cmdline != "" && g.cmdline.MatchString(cmdline)
		case byUnit:
			ok = unitOf(cgroups, g.unit)
		}
		if ok {
			p.staticGroup = i
			return
		}
	}
}

// resolve reads a group's pidfile or monitor file, if it has one.
func (m *Monitor) resolve(g *group) {
	if g.kind != byPIDFile && g.kind != byMonitorFile {
		return
	}
	pid, problem := g.file.refresh(g.path, g.kind == byMonitorFile)
	g.pid = pid
	if g.kind == byMonitorFile {
		g.service, g.ip = g.file.service, g.file.ip
	}
	if problem != "" {
		key := "pidfile"
		if g.kind == byMonitorFile {
			key = "monitor_file"
		}
		m.metrics.errors.WithLabelValues(key).Inc()
		args := []any{"group", g.name, key, g.path, "problem", problem}
		if g.file.pid > 0 {
			args = append(args, "keeping_pid", g.file.pid)
		}
		m.log.Warn("monitor: "+key+" of a process group", args...)
	}
}

// memberOf is the group p belongs to in this refresh, -1 for none: the
// first group that selects it, else its parent's group if that group
// counts children.
func (m *Monitor) memberOf(p *procInfo) int {
	if p.memberCycle == m.cycle {
		return p.member
	}
	p.memberCycle, p.member = m.cycle, -1 // also ends a cycle in the parent chain
	gi := m.selectedBy(p)
	if gi < 0 && p.ppid > 0 && p.ppid != p.pid {
		if parent := m.procs[p.ppid]; parent != nil && parent.seen == m.cycle && parent.start <= p.start {
			if pg := m.memberOf(parent); pg >= 0 && m.groups[pg].children {
				gi = pg
			}
		}
	}
	p.member = gi
	return gi
}

func (m *Monitor) selectedBy(p *procInfo) int {
	for i, g := range m.groups {
		switch g.kind {
		case byPID, byPIDFile, byMonitorFile:
			if g.pid != 0 && g.pid == p.pid {
				return i
			}
		default:
			if p.staticGroup == i {
				return i
			}
		}
	}
	return -1
}

type measureResult int

const (
	measureOK measureResult = iota
	measureDropped
	measureGone
)

// measure reads what a member process needs beyond its stat, once per
// refresh, within the max_processes budget.
func (m *Monitor) measure(p *procInfo, budget *int) measureResult {
	if p.measured == m.cycle {
		return measureOK
	}
	if *budget <= 0 {
		return measureDropped
	}
	*budget--
	p.measured = m.cycle
	if err := m.fs.Status(p.pid, &p.status); err != nil {
		if m.readError("status", p.pid, err) {
			return measureGone
		}
	}
	if err := m.fs.IO(p.pid, &p.io); err != nil {
		if m.readError("io", p.pid, err) {
			return measureGone
		}
	}
	n, err := m.fs.FDs(p.pid)
	if err != nil {
		if m.readError("fd", p.pid, err) {
			return measureGone
		}
	}
	p.fds = n
	if !p.maxFDsRead {
		if p.maxFDs, err = m.fs.MaxFDs(p.pid); err != nil {
			if m.readError("limits", p.pid, err) {
				return measureGone
			}
		} else {
			p.maxFDsRead = true
		}
	}
	return measureOK
}

// network fills the network counters from the namespace of p, when it is
// not the host's.
func (m *Monitor) network(p *procInfo, g *gauges) {
	// Read every time, not kept: a process may enter a namespace after it
	// started (unshare, ip netns exec), and this is one readlink per group
	// or container.
	ns, err := m.fs.NetNS(p.pid)
	if err != nil {
		m.readError("ns/net", p.pid, err)
		return
	}
	if ns == m.hostNetNS {
		return
	}
	rx, tx, err := m.fs.NetDev(p.pid)
	if err != nil {
		m.readError("net/dev", p.pid, err)
		return
	}
	g.HasNet, g.NetRxBytes, g.NetTxBytes = true, rx, tx
}

// readError counts err and reports whether the process is gone. A process
// that exits mid-read is normal; a permission error is logged once per
// file.
func (m *Monitor) readError(file string, pid int, err error) (gone bool) {
	switch {
	case proc.IsGone(err):
		m.metrics.vanished.Inc()
		return true
	case proc.IsPermission(err):
		m.metrics.permission.WithLabelValues(file).Inc()
		m.once("permission-"+file, func() {
			m.log.Warn("monitor: no permission to read a process file; its figures stay 0 (the agent needs root or CAP_SYS_PTRACE)",
				"file", file, "pid", pid, "err", err)
		})
	default:
		m.metrics.errors.WithLabelValues(file).Inc()
		m.once("error-"+file, func() { m.log.Warn("monitor: cannot read a process file", "file", file, "pid", pid, "err", err) })
	}
	return false
}

// once runs fn the first time key is seen.
func (m *Monitor) once(key string, fn func()) {
	if m.logged[key] {
		return
	}
	m.logged[key] = true
	fn()
}

// TargetGroups is the monitor's target as the TargetPublisher takes it:
// job agent-monitor at this agent's API, labelled with node and cluster,
// and __scheme__ when the API speaks https (the cluster Prometheus scrapes
// such targets with the agents' CA, stackconfig.JobAgentAPI).
func TargetGroups(node, cluster, scheme, apiAddr string) map[string]etcd.TargetGroup {
	labels := model.LabelSet{"node": model.LabelValue(node), "cluster": model.LabelValue(cluster), model.MetricsPathLabel: Path}
	if scheme != "http" {
		labels[model.SchemeLabel] = model.LabelValue(scheme)
	}
	return map[string]etcd.TargetGroup{Job + "/0": {Targets: []string{apiAddr}, Labels: labels}}
}
