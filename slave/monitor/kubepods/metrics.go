package kubepods

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the pod monitor's own, on the agent's registry.
type metrics struct {
	pods           prometheus.Gauge
	skipped        *prometheus.GaugeVec
	errors         *prometheus.CounterVec
	refreshSeconds prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		pods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_monitor_pods", Help: "Pods of this node served in the last reading of the kubepods cgroups.",
		}),
		skipped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agent_monitor_pods_skipped",
			Help: "Cgroups of the last reading left out: what=pod, a pod the watch does not know (yet); what=container, a container not in its pod's status (the sandbox, or one just started); what=series, pods left out by monitor.max_series.",
		}, []string{"what"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_monitor_pods_errors_total",
			Help: "Failures of the pod monitor, skipped: watch (the watch broke and resumes), pod or namespace (an object of the wrong type), replicaset (its owner could not be read), cgroup, proc.",
		}, []string{"what"}),
		refreshSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_monitor_pods_refresh_seconds", Help: "How long the last reading of the kubepods cgroups took.",
		}),
	}
	for _, w := range []string{"pod", "container", "series"} {
		m.skipped.WithLabelValues(w)
	}
	for _, w := range []string{"watch", "pod", "namespace", "replicaset", "cgroup", "proc"} {
		m.errors.WithLabelValues(w)
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.pods, m.skipped, m.errors, m.refreshSeconds} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
