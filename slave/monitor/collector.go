package monitor

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The metric names follow what people already query: process-exporter's
// namedprocess_namegroup_* for groups (with the label group where it has
// groupname) and cAdvisor's container_* for containers; docs/monitor.md
// maps each one. No metric carries node, cluster, job or instance: the
// target adds those, and a clash would turn them into exported_*.
var (
	groupLabels     = []string{"group", "service", "ip", "guid"}
	containerLabels = []string{"id", "name", "image", "guid"}

	gUp       = desc("namedprocess_namegroup_up", "1 when at least one selected process of the group runs, else 0.", groupLabels)
	gProcs    = desc("namedprocess_namegroup_num_procs", "Processes in the group.", groupLabels)
	gThreads  = desc("namedprocess_namegroup_num_threads", "Threads of the group's processes.", groupLabels)
	gCPU      = desc("namedprocess_namegroup_cpu_seconds_total", "CPU time the group's processes used, by mode.", groupLabels, "mode")
	gMem      = desc("namedprocess_namegroup_memory_bytes", "Memory of the group's processes: resident, virtual, swapped.", groupLabels, "memtype")
	gFDs      = desc("namedprocess_namegroup_open_filedesc", "Open file descriptors of the group's processes.", groupLabels)
	gFDLimit  = desc("namedprocess_namegroup_limit_filedesc", "Open-files soft limit of the group's oldest process (0: unlimited).", groupLabels)
	gFDRatio  = desc("namedprocess_namegroup_worst_fd_ratio", "The highest open/limit file descriptor ratio of the group's processes.", groupLabels)
	gRead     = desc("namedprocess_namegroup_read_bytes_total", "Bytes the group's processes read from storage.", groupLabels)
	gWrite    = desc("namedprocess_namegroup_write_bytes_total", "Bytes the group's processes wrote to storage.", groupLabels)
	gCtx      = desc("namedprocess_namegroup_context_switches_total", "Context switches of the group's processes.", groupLabels, "ctxswitchtype")
	gMajFlt   = desc("namedprocess_namegroup_major_page_faults_total", "Major page faults of the group's processes.", groupLabels)
	gMinFlt   = desc("namedprocess_namegroup_minor_page_faults_total", "Minor page faults of the group's processes.", groupLabels)
	gStart    = desc("namedprocess_namegroup_oldest_start_time_seconds", "Start time of the group's oldest process (unix seconds).", groupLabels)
	gNetRx    = desc("namedprocess_namegroup_network_receive_bytes_total", "Bytes received in the group's own network namespace (absent on the host's).", groupLabels)
	gNetTx    = desc("namedprocess_namegroup_network_transmit_bytes_total", "Bytes sent in the group's own network namespace (absent on the host's).", groupLabels)
	cUp       = desc("container_up", "1 when the container runs, 0 for a stopped container the agent manages.", containerLabels)
	cCPU      = desc("container_cpu_usage_seconds_total", "CPU time of the container (cgroup).", containerLabels)
	cCPUUser  = desc("container_cpu_user_seconds_total", "User CPU time of the container (cgroup).", containerLabels)
	cCPUSys   = desc("container_cpu_system_seconds_total", "System CPU time of the container (cgroup).", containerLabels)
	cMemUsage = desc("container_memory_usage_bytes", "Memory usage of the container, page cache included (cgroup).", containerLabels)
	cMemWS    = desc("container_memory_working_set_bytes", "Memory usage minus inactive file pages (cgroup).", containerLabels)
	cMemRSS   = desc("container_memory_rss", "Anonymous memory of the container (cgroup).", containerLabels)
	cMemCache = desc("container_memory_cache", "Page cache of the container (cgroup).", containerLabels)
	cMemLimit = desc("container_spec_memory_limit_bytes", "Memory limit of the container (absent: none).", containerLabels)
	cMemVirt  = desc("container_memory_virtual_bytes", "Virtual memory of the container's processes.", containerLabels)
	cRead     = desc("container_fs_reads_bytes_total", "Bytes the container read from block devices (cgroup).", containerLabels)
	cWrite    = desc("container_fs_writes_bytes_total", "Bytes the container wrote to block devices (cgroup).", containerLabels)
	cNetRx    = desc("container_network_receive_bytes_total", "Bytes received in the container's network namespace, all interfaces (absent on the host network).", containerLabels)
	cNetTx    = desc("container_network_transmit_bytes_total", "Bytes sent in the container's network namespace, all interfaces (absent on the host network).", containerLabels)
	cProcs    = desc("container_processes", "Processes in the container.", containerLabels)
	cThreads  = desc("container_threads", "Threads of the container's processes.", containerLabels)
	cFDs      = desc("container_file_descriptors", "Open file descriptors of the container's processes.", containerLabels)
	cUlimit   = desc("container_ulimits_soft", "Soft limits of the container's oldest process (0: unlimited).", containerLabels, "ulimit")
	cCtx      = desc("container_context_switches_total", "Context switches of the container's processes while measured.", containerLabels, "type")
	cStart    = desc("container_start_time_seconds", "Start time of the container's oldest process (unix seconds).", containerLabels)
	refreshed = desc("agent_monitor_refresh_timestamp_seconds", "When the reading served started (unix seconds): a rate between two scrapes divides by its change.", nil)
)

func desc(name, help string, labels []string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append(append([]string(nil), labels...), extra...), nil)
}

// seriesPerGroup and seriesPerContainer are the most series one sample
// yields, for monitor.max_series.
const (
	seriesPerGroup     = 21
	seriesPerContainer = 22
)

// collector renders the last snapshot.
type collector struct{ m *Monitor }

// Describe sends nothing: the metrics' label values change with what
// runs, so the collector is unchecked.
func (collector) Describe(chan<- *prometheus.Desc) {}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.Snapshot()
	if !s.Time.IsZero() {
		ch <- prometheus.MustNewConstMetric(refreshed, prometheus.GaugeValue, float64(s.Time.UnixNano())/1e9)
	}
	for i := range s.Groups {
		collectGroup(ch, &s.Groups[i])
	}
	for i := range s.Containers {
		collectContainer(ch, &s.Containers[i])
	}
}

func collectGroup(ch chan<- prometheus.Metric, g *GroupSample) {
	lv := []string{g.Name, g.Service, g.IP, g.GUID}
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(lv, extra...)...)
	}
	counter := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append(lv, extra...)...)
	}
	gauge(gUp, b2f(g.Up))
	gauge(gProcs, float64(g.Procs))
	gauge(gThreads, float64(g.Threads))
	counter(gCPU, g.CPUUserSeconds, "user")
	counter(gCPU, g.CPUSystemSeconds, "system")
	gauge(gMem, float64(g.ResidentBytes), "resident")
	gauge(gMem, float64(g.VirtualBytes), "virtual")
	gauge(gMem, float64(g.SwapBytes), "swapped")
	gauge(gFDs, float64(g.OpenFDs))
	gauge(gFDLimit, float64(g.MaxFDs))
	gauge(gFDRatio, g.WorstFDRatio)
	counter(gRead, float64(g.ReadBytes))
	counter(gWrite, float64(g.WriteBytes))
	counter(gCtx, float64(g.VoluntaryCtxtSwitches), "voluntary")
	counter(gCtx, float64(g.NonvoluntaryCtxtSwitches), "nonvoluntary")
	counter(gMajFlt, float64(g.MajorFaults))
	counter(gMinFlt, float64(g.MinorFaults))
	if g.StartTime > 0 {
		gauge(gStart, g.StartTime)
	}
	if g.HasNet {
		counter(gNetRx, float64(g.NetRxBytes))
		counter(gNetTx, float64(g.NetTxBytes))
	}
}

func collectContainer(ch chan<- prometheus.Metric, c *ContainerSample) {
	lv := []string{c.ID, c.Name, c.Image, c.GUID}
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(lv, extra...)...)
	}
	counter := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append(lv, extra...)...)
	}
	gauge(cUp, b2f(c.Up))
	if !c.Up {
		return
	}
	counter(cCPU, c.CPUUsageSeconds)
	counter(cCPUUser, c.CPUUserSeconds)
	counter(cCPUSys, c.CPUSystemSeconds)
	gauge(cMemUsage, float64(c.MemoryUsage))
	gauge(cMemWS, float64(c.MemoryWorkingSet))
	gauge(cMemRSS, float64(c.MemoryRSS))
	gauge(cMemCache, float64(c.MemoryCache))
	if c.MemoryLimit > 0 {
		gauge(cMemLimit, float64(c.MemoryLimit))
	}
	gauge(cMemVirt, float64(c.VirtualBytes))
	counter(cRead, float64(c.IOReadBytes))
	counter(cWrite, float64(c.IOWriteBytes))
	if c.HasNet {
		counter(cNetRx, float64(c.NetRxBytes))
		counter(cNetTx, float64(c.NetTxBytes))
	}
	gauge(cProcs, float64(c.Procs))
	gauge(cThreads, float64(c.Threads))
	gauge(cFDs, float64(c.OpenFDs))
	gauge(cUlimit, float64(c.MaxFDs), "max_open_files")
	counter(cCtx, float64(c.VoluntaryCtxtSwitches), "voluntary")
	counter(cCtx, float64(c.NonvoluntaryCtxtSwitches), "nonvoluntary")
	if c.StartTime > 0 {
		gauge(cStart, c.StartTime)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// limitSeries keeps what fits in monitor.max_series, groups first, and
// counts the series of what it leaves out.
func (m *Monitor) limitSeries(s *Snapshot) {
	left := m.cfg.MaxSeries
	dropped := 0
	keep := func(n, per int) int {
		fit := min(n, max(0, left/per))
		left -= fit * per
		dropped += (n - fit) * per
		return fit
	}
	s.Groups = s.Groups[:keep(len(s.Groups), seriesPerGroup)]
	s.Containers = s.Containers[:keep(len(s.Containers), seriesPerContainer)]
	if dropped > 0 {
		m.metrics.dropped.WithLabelValues("series").Add(float64(dropped))
		m.once("max_series", func() {
			m.log.Warn("monitor.max_series reached: some groups or containers are not served (agent_monitor_dropped_total)", "max_series", m.cfg.MaxSeries)
		})
	}
}

var _ prometheus.Collector = collector{}
