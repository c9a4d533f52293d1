package plugins

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	plugins  []string // the plugin label values in use
	runs     *prometheus.CounterVec
	skipped  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	enabled  prometheus.Collector
}

// newMetrics makes the plugins' metrics; agent_plugin_enabled reports the
// plugins of the manager current returns.
func newMetrics(current func() *Manager) *metrics {
	return &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_plugin_runs_total", Help: "Plugin runs, by result (ok, failed, timeout).",
		}, []string{"plugin", "result"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_plugin_runs_skipped_total", Help: "Scheduled plugin runs skipped because the previous run was still under way.",
		}, []string{"plugin"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "agent_plugin_run_duration_seconds", Help: "How long plugin runs took.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60},
		}, []string{"plugin"}),
		enabled: enabledCollector{current},
	}
}

func (mt *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{mt.runs, mt.skipped, mt.duration, mt.enabled}
}

func (mt *metrics) register(reg prometheus.Registerer) error {
	for i, c := range mt.collectors() {
		if err := reg.Register(c); err != nil {
			for _, done := range mt.collectors()[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

// usePlugins deletes the series of the plugins that were in use and are
// not in names (a reload removed them, as a restart would), and remembers
// names as the ones in use.
func (mt *metrics) usePlugins(names []string) {
	for _, n := range mt.plugins {
		if slices.Contains(names, n) {
			continue
		}
		mt.runs.DeletePartialMatch(prometheus.Labels{"plugin": n})
		mt.skipped.DeleteLabelValues(n)
		mt.duration.DeleteLabelValues(n)
	}
	mt.plugins = names
}

// enabledCollector reports agent_plugin_enabled per plugin at scrape time.
type enabledCollector struct{ manager func() *Manager }

var enabledDesc = prometheus.NewDesc("agent_plugin_enabled", "1 while a plugin is enabled, 0 while disabled over the API.", []string{"plugin"}, nil)

func (c enabledCollector) Describe(ch chan<- *prometheus.Desc) { ch <- enabledDesc }

func (c enabledCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	m := c.manager()
	for _, name := range m.order {
		p := m.plugins[name]
		p.mu.Lock()
		v := 0.0
		if m.enabledLocked(p, now) {
			v = 1
		}
		p.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(enabledDesc, prometheus.GaugeValue, v, name)
	}
}
