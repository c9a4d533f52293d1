package relay

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's own metrics, registered on the injected registerer.
type metrics struct {
	upstreams map[string]bool // the upstream label values in use
	requests  *prometheus.CounterVec
	received  prometheus.Counter
	forwarded *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	responses *prometheus.CounterVec
	retries   *prometheus.CounterVec
	corrupt   prometheus.Counter
	fallbacks *prometheus.CounterVec
	converted *prometheus.CounterVec
}

// Drop reasons.
const (
	reasonQueueFull  = "queue_full"
	reasonRejected   = "upstream_rejected"
	reasonConversion = "conversion"
)

func newMetrics() *metrics {
	return &metrics{
		upstreams: map[string]bool{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_write_requests_total", Help: "Remote-write requests received, by response code and remote-write version (1.0, 2.0, unknown).",
		}, []string{"code", "protocol"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_samples_received_total", Help: "Samples and histograms made durable in the queue.",
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_samples_forwarded_total", Help: "Samples and histograms an upstream accepted.",
		}, []string{"upstream"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_samples_dropped_total", Help: "Samples and histograms never delivered to an upstream, by reason (queue_full, upstream_rejected, conversion).",
		}, []string{"upstream", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "relay_upstream_request_duration_seconds", Help: "Duration of requests to an upstream.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"upstream"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_upstream_requests_total", Help: "Requests to an upstream by status code (\"error\" for no response).",
		}, []string{"upstream", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_upstream_retries_total", Help: "Requests to an upstream that will be retried.",
		}, []string{"upstream"}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_queue_corrupt_records_total", Help: "Corrupt or truncated queue records skipped (counted by each cursor that skips one).",
		}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_upstream_protocol_fallbacks_total", Help: "Times an upstream (protocol auto) was found not to take a remote-write version, by that version (it is sent the other one for a while).",
		}, []string{"upstream", "version"}),
		converted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_conversion_dropped_total", Help: "What converting to an upstream's remote-write version or escaping names could not carry, by kind (metadata, start_timestamp, series, exemplar).",
		}, []string{"upstream", "kind"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.received, m.forwarded, m.dropped, m.duration, m.responses, m.retries, m.corrupt, m.fallbacks, m.converted}
}

// useUpstreams deletes the series of the upstreams that were in use and
// are not in names (a reload removed them, as a restart would), and
// remembers names as the ones in use.
func (m *metrics) useUpstreams(names []string) {
	keep := map[string]bool{}
	for _, n := range names {
		keep[n] = true
	}
	for n := range m.upstreams {
		if keep[n] {
			continue
		}
		match := prometheus.Labels{"upstream": n}
		for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
			m.forwarded, m.dropped, m.duration, m.responses, m.retries, m.fallbacks, m.converted,
		} {
			v.DeletePartialMatch(match)
		}
	}
	m.upstreams = keep
}

// registerAll registers every collector on reg, or none of them.
func registerAll(reg prometheus.Registerer, cs []prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
