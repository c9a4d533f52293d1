package clusterstack

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/process"
	"github.com/agentproj/agent/drivers/process/processtest"
	"github.com/agentproj/agent/drivers/workload"
)

// recordedTargets is what the stack published, by source.
type recordedTargets struct {
	mu      sync.Mutex
	sources map[string]map[string]etcd.TargetGroup
}

func (r *recordedTargets) Set(source string, g map[string]etcd.TargetGroup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sources == nil {
		r.sources = map[string]map[string]etcd.TargetGroup{}
	}
	r.sources[source] = g
}

func (r *recordedTargets) get(source, key string) etcd.TargetGroup {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sources[source][key]
}

// jaegerTerm runs a term of a cluster stack whose only workload is the
// real Jaeger v2 collector (process driver), forwarding to manager.
type jaegerTerm struct {
	cfg     Config
	s       *Stack
	targets *recordedTargets
	end     func()
}

func startJaegerTerm(t *testing.T, manager string, queue int) *jaegerTerm {
	t.Helper()
	d, err := process.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Driver = process.DriverName
	cfg.Stack.Prometheus.Enabled = false
	cfg.Host = "127.0.0.1"
	j := &cfg.Stack.Jaeger
	j.Binary = processtest.Testbin(t, "jaeger", "jaeger")
	j.OTLPGRPCListen, j.OTLPHTTPListen, j.HealthListen, j.TelemetryListen = etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	j.QueueSize = queue
	cfg.Manager.TracesOTLPEndpoint = "http://" + manager
	term := &jaegerTerm{cfg: cfg, targets: &recordedTargets{}}
	cfg.Targets = term.targets
	term.cfg = cfg
	s, err := New(cfg, d, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	term.s = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, etcd.Leader{}) }()
	var once sync.Once
	term.end = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("end of term: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(d.LogPath("agent-jaeger-n1"))
			t.Logf("--- log of the collector:\n%s", b)
		}
		term.end()
	})
	etcdtest.Eventually(t, 30*time.Second, func() bool { return processtest.HTTPGet("http://"+j.HealthListen+"/status") != "" }, "the Jaeger collector is not healthy")
	return term
}

func (j *jaegerTerm) post(t *testing.T, spans ...processtest.Span) {
	t.Helper()
	code, err := processtest.PostOTLP("http://"+j.cfg.Stack.Jaeger.OTLPHTTPListen, "/v1/traces",
		processtest.TracesJSON(map[string]string{"service.name": "shop-1", "guid": "shop-1", "node": "n2", "cluster": "c1"}, spans...), 5*time.Second)
	if err != nil || code != 200 {
		t.Fatalf("the collector did not take spans: %d %v", code, err)
	}
}

// The master's collector is the real jaeger binary: it forwards what the
// trace agents send to the manager's OTLP endpoint unchanged, and its own
// metrics are published as a scrape target for the term.
func TestJaegerCollectorForwardsToTheManager(t *testing.T) {
	manager := processtest.StartJaeger(t)
	term := startJaegerTerm(t, manager.OTLPGRPC, 1000)
	span := processtest.NewSpan("checkout")
	term.post(t, span)
	etcdtest.Eventually(t, 30*time.Second, func() bool { return manager.Trace(span.TraceID) != nil }, "the span did not reach the manager")
	if res := manager.Trace(span.TraceID)[0]; res["guid"] != "shop-1" || res["service.name"] != "shop-1" || res["node"] != "n2" || res["cluster"] != "c1" {
		t.Fatalf("resource at the manager: %v", res)
	}

	telemetry := term.cfg.Stack.Jaeger.TelemetryListen
	if g := term.targets.get(targetSource, "jaeger/collector"); len(g.Targets) != 1 || g.Targets[0] != telemetry || g.Labels["node"] != "n1" {
		t.Fatalf("collector target %+v, want %s", g, telemetry)
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		n, _ := processtest.Metric("http://"+telemetry+"/metrics", "otelcol_exporter_sent_spans", `exporter="otlp"`)
		return n >= 1
	}, "the collector's metrics do not count the span it sent")
	term.end()
	if g := term.targets.get(targetSource, "jaeger/collector"); len(g.Targets) != 0 {
		t.Fatalf("the collector's target outlived the term: %+v", g)
	}
}

// A reload reaches the running collector: the same process loads its
// changed config (SIGHUP through the driver, once healthy), here sending to
// another manager and serving its own metrics on another address; the
// published target follows.
func TestJaegerCollectorFollowsAReload(t *testing.T) {
	manager := processtest.StartJaeger(t)
	term := startJaegerTerm(t, manager.OTLPGRPC, 1000)
	pid := func() string {
		for _, st := range term.s.States() {
			if st.Name == "agent-jaeger-n1" && st.Status == workload.StatusRunning {
				return st.ID
			}
		}
		return ""
	}
	before := pid()
	moved := processtest.StartJaeger(t)
	next, m := term.cfg.Stack, term.cfg.Manager
	next.Jaeger.TelemetryListen = etcdtest.FreeAddr(t)
	m.TracesOTLPEndpoint = "http://" + moved.OTLPGRPC
	term.s.SetConfig(next, m)
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		g := term.targets.get(targetSource, "jaeger/collector")
		return strings.Contains(processtest.HTTPGet("http://"+next.Jaeger.TelemetryListen+"/metrics"), "otelcol_") &&
			len(g.Targets) == 1 && g.Targets[0] == next.Jaeger.TelemetryListen
	}, "the collector's metrics and target did not move to %s", next.Jaeger.TelemetryListen)
	if after := pid(); before == "" || after != before {
		t.Fatalf("collector pid %q -> %q: a changed config file should be reloaded by the same process", before, after)
	}
	etcdtest.Eventually(t, 30*time.Second, func() bool { return processtest.HTTPGet("http://"+term.cfg.Stack.Jaeger.HealthListen+"/status") != "" }, "the collector is not healthy after the reload")
	span := processtest.NewSpan("checkout")
	term.post(t, span)
	etcdtest.Eventually(t, 30*time.Second, func() bool { return moved.Trace(span.TraceID) != nil }, "a span sent after the reload did not reach the new manager")
	if manager.Trace(span.TraceID) != nil {
		t.Fatal("a span sent after the reload reached the old manager")
	}
}

// The manager is down: the collector keeps up to its queue's limit in
// memory, drops what is beyond and counts it, and always answers the
// trace agents at once.
func TestJaegerCollectorDropsBeyondItsQueueWithACounter(t *testing.T) {
	term := startJaegerTerm(t, etcdtest.FreeAddr(t), 30)
	metrics := "http://" + term.cfg.Stack.Jaeger.TelemetryListen + "/metrics"
	sent := 0
	for sent < 200 {
		spans := make([]processtest.Span, 10)
		for i := range spans {
			spans[i] = processtest.NewSpan("checkout")
		}
		start := time.Now()
		term.post(t, spans...)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the collector kept a trace agent waiting %s", d)
		}
		sent += len(spans)
		etcdtest.Eventually(t, 10*time.Second, func() bool {
			out, _ := processtest.Metric(metrics, "otelcol_processor_batch_batch_send_size_sum")
			dropped, _ := processtest.Metric(metrics, "otelcol_exporter_enqueue_failed_spans")
			return int(out+dropped) >= sent
		}, "the batch processor did not pass on %d spans", sent)
	}
	dropped, _ := processtest.Metric(metrics, "otelcol_exporter_enqueue_failed_spans", `exporter="otlp"`)
	queued, _ := processtest.Metric(metrics, "otelcol_exporter_queue_size", `exporter="otlp"`)
	if dropped < 100 || queued > 30 {
		t.Fatalf("sent %d spans to a collector with a queue of 30 and no manager: %v dropped, %v queued", sent, dropped, queued)
	}
}
