package apps

import "github.com/prometheus/client_golang/prometheus"

const invalidHelp = "Records under apps/ skipped because they do not parse or validate (each key and revision counted once)."

// apiMetrics are the Handler's.
type apiMetrics struct {
	created          prometheus.Counter
	deleted          prometheus.Counter
	rejected         *prometheus.CounterVec
	invalid          prometheus.Counter
	placementRetries prometheus.Counter
}

func newAPIMetrics(reg prometheus.Registerer) *apiMetrics {
	m := &apiMetrics{
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_apps_created_total", Help: "Apps created through this agent's API.",
		}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_apps_deleted_total", Help: "Apps deleted through this agent's API.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_apps_requests_rejected_total", Help: "Apps API requests refused, by HTTP status code.",
		}, []string{"code"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_apps_records_invalid_total", Help: invalidHelp,
			ConstLabels: prometheus.Labels{"component": "api"},
		}),
		placementRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_apps_placement_retries_total", Help: "Creations placed again because another app or member came between their read and their write.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.created, m.deleted, m.rejected, m.invalid, m.placementRetries)
	}
	return m
}

// reconcilerMetrics are the Reconciler's.
type reconcilerMetrics struct {
	assigned     prometheus.Gauge
	statusWrites prometheus.Counter
	etcdErrors   prometheus.Counter
	invalid      prometheus.Counter
}

func newReconcilerMetrics(reg prometheus.Registerer) *reconcilerMetrics {
	m := &reconcilerMetrics{
		assigned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_apps_assigned", Help: "Apps assigned to this node that it runs.",
		}),
		statusWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_apps_status_writes_total", Help: "Writes and deletions of status/apps/<guid> by this node.",
		}),
		etcdErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_apps_reconciler_etcd_errors_total", Help: "Failed reads, watches and status writes of the app reconciler.",
		}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_apps_records_invalid_total", Help: invalidHelp,
			ConstLabels: prometheus.Labels{"component": "reconciler"},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.assigned, m.statusWrites, m.etcdErrors, m.invalid)
	}
	return m
}
