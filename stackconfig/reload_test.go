package stackconfig

import (
	"slices"
	"testing"
	"time"
)

// A reload applies what is rendered and keeps what others took at start;
// the keys kept are the ones Changed names against the file.
func TestReloadStackKeepsWhatOthersTookAtStart(t *testing.T) {
	cur, next := DefaultConfig, DefaultConfig
	next.Stack.Prometheus.ScrapeInterval = 7 * time.Second
	next.Stack.Prometheus.Listen = "127.0.0.1:19090"
	next.Stack.NodeExporter.Listen = "127.0.0.1:19100"
	next.Stack.Jaeger.Enabled = !cur.Stack.Jaeger.Enabled
	next.Stack.TraceAgent.QueueSize = 77
	next.Stack.TraceAgent.OTLPHTTPListen = "127.0.0.1:24318"
	next.Stack.Driver = "process"

	applied := cur
	applied.Stack = ReloadStack(cur.Stack, next.Stack)
	if applied.Stack.Prometheus.ScrapeInterval != 7*time.Second || applied.Stack.NodeExporter.Listen != "127.0.0.1:19100" || applied.Stack.TraceAgent.QueueSize != 77 {
		t.Errorf("rendered keys not applied: %+v", applied.Stack)
	}
	got := Changed(&applied, &next)
	want := []string{"stack.driver", "stack.prometheus.listen", "stack.jaeger.enabled", "stack.trace_agent.otlp_http_listen"}
	if !slices.Equal(got, want) {
		t.Errorf("keys left for a restart %v, want %v", got, want)
	}
}
