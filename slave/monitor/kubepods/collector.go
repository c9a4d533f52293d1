package kubepods

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The names follow cAdvisor's container_* with a pod_ prefix: the node
// monitor already serves container_* for the Docker engine's containers
// with other labels, and one metric name keeps one label set. No metric
// carries node, cluster, job or instance: the target adds those.
var (
	podLabels       = []string{"namespace", "pod", "uid", "qos", "owner_kind", "owner_name", "guid"}
	containerLabels = []string{"namespace", "pod", "container", "id"}

	pCPU      = desc("pod_cpu_usage_seconds_total", "CPU time of the pod (its cgroup: every container, the sandbox included).", podLabels)
	pCPUUser  = desc("pod_cpu_user_seconds_total", "User CPU time of the pod (cgroup).", podLabels)
	pCPUSys   = desc("pod_cpu_system_seconds_total", "System CPU time of the pod (cgroup).", podLabels)
	pMemUsage = desc("pod_memory_usage_bytes", "Memory usage of the pod, page cache included (cgroup).", podLabels)
	pMemWS    = desc("pod_memory_working_set_bytes", "Memory usage of the pod minus inactive file pages (cgroup).", podLabels)
	pMemRSS   = desc("pod_memory_rss", "Anonymous memory of the pod (cgroup).", podLabels)
	pMemCache = desc("pod_memory_cache", "Page cache of the pod (cgroup).", podLabels)
	pMemLimit = desc("pod_spec_memory_limit_bytes", "Memory limit of the pod's cgroup (absent: none).", podLabels)
	pRead     = desc("pod_fs_reads_bytes_total", "Bytes the pod read from block devices (cgroup).", podLabels)
	pWrite    = desc("pod_fs_writes_bytes_total", "Bytes the pod wrote to block devices (cgroup).", podLabels)
	pNetRx    = desc("pod_network_receive_bytes_total", "Bytes received in the pod's network namespace, all interfaces (absent for hostNetwork pods).", podLabels)
	pNetTx    = desc("pod_network_transmit_bytes_total", "Bytes sent in the pod's network namespace, all interfaces (absent for hostNetwork pods).", podLabels)
	pProcs    = desc("pod_processes", "Processes in the pod's containers, the sandbox included.", podLabels)
	pUp       = desc("pod_up", "1 when the pod runs (phase Running, every container running, as the kubelet reports), 0 for a pod of this node that should run but does not (pending, a container waiting or crashed).", podLabels)

	cCPU      = desc("pod_container_cpu_usage_seconds_total", "CPU time of the container (cgroup).", containerLabels)
	cCPUUser  = desc("pod_container_cpu_user_seconds_total", "User CPU time of the container (cgroup).", containerLabels)
	cCPUSys   = desc("pod_container_cpu_system_seconds_total", "System CPU time of the container (cgroup).", containerLabels)
	cMemUsage = desc("pod_container_memory_usage_bytes", "Memory usage of the container, page cache included (cgroup).", containerLabels)
	cMemWS    = desc("pod_container_memory_working_set_bytes", "Memory usage of the container minus inactive file pages (cgroup).", containerLabels)
	cMemRSS   = desc("pod_container_memory_rss", "Anonymous memory of the container (cgroup).", containerLabels)
	cMemCache = desc("pod_container_memory_cache", "Page cache of the container (cgroup).", containerLabels)
	cMemLimit = desc("pod_container_spec_memory_limit_bytes", "Memory limit of the container (absent: none).", containerLabels)
	cRead     = desc("pod_container_fs_reads_bytes_total", "Bytes the container read from block devices (cgroup).", containerLabels)
	cWrite    = desc("pod_container_fs_writes_bytes_total", "Bytes the container wrote to block devices (cgroup).", containerLabels)
	cProcs    = desc("pod_container_processes", "Processes in the container.", containerLabels)
)

func desc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// collector renders the last snapshot.
type collector struct{ p *Pods }

// Describe sends nothing: the label values change with what runs, so the
// collector is unchecked.
func (collector) Describe(chan<- *prometheus.Desc) {}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Snapshot()
	for i := range s.Pods {
		collectPod(ch, &s.Pods[i])
	}
	for i := range s.States {
		p := &s.States[i]
		up := 0.0
		if p.Running {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(pUp, prometheus.GaugeValue, up, podValues(p)...)
	}
}

func podValues(p *Pod) []string {
	return []string{p.Namespace, p.Name, p.UID, p.QoS, p.OwnerKind, p.OwnerName, p.GUID}
}

func collectPod(ch chan<- prometheus.Metric, p *PodSample) {
	lv := podValues(&p.Pod)
	usage(ch, &p.Usage, lv, podDescs)
	ch <- prometheus.MustNewConstMetric(pProcs, prometheus.GaugeValue, float64(p.Procs), lv...)
	if p.HasNet {
		ch <- prometheus.MustNewConstMetric(pNetRx, prometheus.CounterValue, float64(p.NetRxBytes), lv...)
		ch <- prometheus.MustNewConstMetric(pNetTx, prometheus.CounterValue, float64(p.NetTxBytes), lv...)
	}
	for i := range p.Containers {
		c := &p.Containers[i]
		clv := []string{p.Namespace, p.Name, c.Name, c.ID}
		usage(ch, &c.Usage, clv, containerDescs)
		ch <- prometheus.MustNewConstMetric(cProcs, prometheus.GaugeValue, float64(c.Procs), clv...)
	}
}

// descs are the cgroup figures' descriptors of one level.
type descs struct{ cpu, user, sys, usage, ws, rss, cache, limit, read, write *prometheus.Desc }

var (
	podDescs       = descs{pCPU, pCPUUser, pCPUSys, pMemUsage, pMemWS, pMemRSS, pMemCache, pMemLimit, pRead, pWrite}
	containerDescs = descs{cCPU, cCPUUser, cCPUSys, cMemUsage, cMemWS, cMemRSS, cMemCache, cMemLimit, cRead, cWrite}
)

func usage(ch chan<- prometheus.Metric, u *Usage, lv []string, d descs) {
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter(d.cpu, u.CPUUsageSeconds)
	counter(d.user, u.CPUUserSeconds)
	counter(d.sys, u.CPUSystemSeconds)
	gauge(d.usage, float64(u.MemoryUsage))
	gauge(d.ws, float64(u.MemoryWorkingSet))
	gauge(d.rss, float64(u.MemoryRSS))
	gauge(d.cache, float64(u.MemoryCache))
	if u.MemoryLimit > 0 {
		gauge(d.limit, float64(u.MemoryLimit))
	}
	counter(d.read, float64(u.IOReadBytes))
	counter(d.write, float64(u.IOWriteBytes))
}

var _ prometheus.Collector = collector{}
