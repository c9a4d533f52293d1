package monitor

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the monitor's own, on the agent's registry and at Path.
type metrics struct {
	refreshes      prometheus.Counter
	refreshSeconds prometheus.Gauge
	processes      prometheus.Gauge
	containers     prometheus.Gauge
	dropped        *prometheus.CounterVec
	vanished       prometheus.Counter
	permission     *prometheus.CounterVec
	errors         *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		refreshes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_monitor_refreshes_total", Help: "Readings of /proc and the cgroups by the node monitor.",
		}),
		refreshSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_monitor_refresh_seconds", Help: "How long the last reading took.",
		}),
		processes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_monitor_processes", Help: "Processes measured in the last reading (in groups or containers).",
		}),
		containers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_monitor_containers", Help: "Containers served in the last reading.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_monitor_dropped_total",
			Help: "What the monitor left out because of monitor.max_processes (what=processes, per reading) or monitor.max_series (what=series).",
		}, []string{"what"}),
		vanished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_monitor_vanished_total", Help: "Processes and containers that went away while they were read (skipped).",
		}),
		permission: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_monitor_permission_errors_total", Help: "Process files the agent was not allowed to read, by file.",
		}, []string{"file"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_monitor_errors_total", Help: "Other read failures: of a process file, a cgroup, the Docker engine, a pidfile or monitor file.",
		}, []string{"what"}),
	}
	for _, w := range []string{"processes", "series"} {
		m.dropped.WithLabelValues(w)
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.refreshes, m.refreshSeconds, m.processes, m.containers, m.dropped, m.vanished, m.permission, m.errors} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) {
				return errors.New("monitor: a monitor is already registered with this registry")
			}
			return err
		}
	}
	return nil
}
