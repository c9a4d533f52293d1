package releases

import "github.com/prometheus/client_golang/prometheus"

// metrics are the duty's, registered on the agent's registry.
type metrics struct {
	actions  *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	invalid  prometheus.Counter
	releases prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_master_release_actions_total",
			Help: "Releases checked or changed (install, upgrade, adoption) by the master, by role and outcome (ok, error).",
		}, []string{"role", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agent_master_release_action_seconds",
			Help:    "Time one release check or change took, by role.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"role"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_app_records_refused_total",
			Help: "apps/ records the master refused to install (invalid, image or chart not allowed, reserved namespace).",
		}),
		releases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_master_releases",
			Help: "Releases the master keeps (wanted, or being removed).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.actions, m.seconds, m.invalid, m.releases)
	}
	return m
}
