package slave

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	sessionUp     prometheus.Gauge
	isMaster      prometheus.Gauge
	sessions      prometheus.Counter
	electionsWon  prometheus.Counter
	electionsLost prometheus.Counter
	etcdErrors    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, version string) *metrics {
	m := &metrics{
		sessionUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_session_up", Help: "1 while this agent holds a live etcd session (lease), else 0.",
		}),
		isMaster: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_is_master", Help: "1 while this agent is the elected master, else 0.",
		}),
		sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_sessions_total", Help: "etcd sessions (leases) this agent has started.",
		}),
		electionsWon: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_elections_won_total", Help: "Times this agent became master.",
		}),
		electionsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_elections_lost_total", Help: "Times this agent stopped being master other than by shutting down.",
		}),
		etcdErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_etcd_request_errors_total", Help: "etcd requests that failed, by operation.",
		}, []string{"op"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "agent_build_info", Help: "Build of this agent; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	reg.MustRegister(build, m.sessionUp, m.isMaster, m.sessions, m.electionsWon, m.electionsLost, m.etcdErrors)
	return m
}
