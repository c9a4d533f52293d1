package workload

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type supervisorMetrics struct {
	reconciles   prometheus.Counter
	ensureErrors *prometheus.CounterVec
	restarts     *prometheus.CounterVec
	removed      prometheus.Counter
	desired      prometheus.Gauge
	running      prometheus.Gauge
	crashLooping prometheus.Gauge
}

func newSupervisorMetrics(reg prometheus.Registerer, owner string) (*supervisorMetrics, error) {
	m := &supervisorMetrics{
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_workload_reconciles_total",
			Help: "Reconcile passes of the workload supervisor.",
		}),
		ensureErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_workload_ensure_errors_total",
			Help: "Failed attempts to make a workload match its spec, by role.",
		}, []string{"role"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_workload_restarts_total",
			Help: "Stopped workloads started again by the supervisor, by role.",
		}, []string{"role"}),
		removed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_workload_orphans_removed_total",
			Help: "Workloads removed because they were no longer desired.",
		}),
		desired: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_workloads_desired",
			Help: "Workloads in the desired set.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_workloads_running",
			Help: "Desired workloads seen running by the last reconcile.",
		}),
		crashLooping: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_workloads_crash_looping",
			Help: "Desired workloads that exited at least twice in a row without running for the backoff maximum since.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"owner": owner}, reg)
	for _, c := range []prometheus.Collector{m.reconciles, m.ensureErrors, m.restarts, m.removed, m.desired, m.running, m.crashLooping} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register supervisor metrics: %w", err)
		}
	}
	return m, nil
}
