package nodestack

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/none"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/master/collectors"
	"github.com/agentproj/agent/stackconfig"
)

// fakeTargets records what the node stack publishes (the real publisher is
// tested in slave).
type fakeTargets struct {
	mu     sync.Mutex
	groups map[string]etcd.TargetGroup
}

func (f *fakeTargets) Set(_ string, g map[string]etcd.TargetGroup) {
	f.mu.Lock()
	f.groups = g
	f.mu.Unlock()
}

func (f *fakeTargets) get(key string) etcd.TargetGroup {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.groups[key]
}

// runStack runs a node stack until the test ends.
func runStack(t *testing.T, cfg Config, d workload.Driver, targets TargetSetter) *Stack {
	t.Helper()
	s, err := New(cfg, d, targets, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func (s *Stack) names() string {
	var n []string
	for _, st := range s.States() {
		n = append(n, st.Name)
	}
	return strings.Join(n, ",")
}

// With the render-only driver and the Vector shipper the node stack
// renders every config, follows the collector URL into the trace agent's
// config, keeps the last one while none is published, and publishes its
// node_exporter and the trace agent's telemetry as targets.
func TestNodeStackRendersAndFollowsCollector(t *testing.T) {
	dir := t.TempDir()
	targets := &fakeTargets{}
	cfg := Config{
		Node: "n1", Cluster: "c1", Driver: "none", Stack: stackconfig.DefaultStack, Dir: dir, Host: "10.0.0.1",
		Manager: stackconfig.Manager{LogsURL: "http://127.0.0.1:9/logs", TracesOTLPProtocol: "grpc"},
	}
	cfg.Stack.NodeExporter.Listen = "0.0.0.0:9100"
	cfg.Stack.TraceAgent.TelemetryListen = "0.0.0.0:18888"
	cfg.Stack.Logs.Shipper = stackconfig.ShipperVector
	cfg.Stack.Logs.Files = []string{"/var/log/app/*.log"} // without Docker, Vector needs a file source
	s := runStack(t, cfg, none.New(), targets)

	etcdtest.Eventually(t, 5*time.Second, func() bool { return s.names() == "agent-node-exporter-n1,agent-vector-n1" }, "workloads before a collector is known: %s", s.names())
	if g := targets.get("node/node-exporter"); len(g.Targets) != 1 || g.Targets[0] != "10.0.0.1:9100" || g.Labels["node"] != "n1" {
		t.Fatalf("node_exporter target %+v: want the advertised host for a wildcard listen", g)
	}
	if g := targets.get("otelcol/node-collector"); len(g.Targets) != 0 {
		t.Fatalf("a trace agent target is published though it does not run: %+v", g)
	}

	s.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://10.0.0.2:4317"})
	etcdtest.Eventually(t, 5*time.Second, func() bool { return strings.Contains(s.names(), "agent-trace-agent-n1") }, "no trace agent after the collector URL arrived")
	cfgFile := filepath.Join(dir, "trace-agent", "config.yml")
	b, err := os.ReadFile(cfgFile)
	if err != nil || !strings.Contains(string(b), "10.0.0.2:4317") || strings.Contains(string(b), "otlp_http/logs") {
		t.Fatalf("trace agent config does not point at the collector, or ships logs beside Vector (%v):\n%s", err, b)
	}
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		g := targets.get("otelcol/node-collector")
		return len(g.Targets) == 1 && g.Targets[0] == "10.0.0.1:18888" && g.Labels["cluster"] == "c1"
	}, "the trace agent's telemetry is not published as a target: %+v", targets.get("otelcol/node-collector"))
	s.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://10.0.0.3:4317"})
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(cfgFile)
		return strings.Contains(string(b), "10.0.0.3:4317")
	}, "trace agent config did not follow the new collector URL")

	if got := s.TraceEndpoint(); got != "http://127.0.0.1:14318" {
		t.Fatalf("TraceEndpoint = %q", got)
	}
}

// The master died: no collector is published until the next one is
// elected. The trace agent stays, pointed at the last one, so that it
// keeps taking spans into its queue (TestTraceAgentKeepsSpansThroughARepointing
// shows that they reach the next collector).
func TestCollectorURLIsKeptWhileNoneIsPublished(t *testing.T) {
	cfg := Config{Node: "n1", Cluster: "c1", Driver: "none", Stack: stackconfig.DefaultStack, Dir: t.TempDir(), Host: "10.0.0.1"}
	s, err := New(cfg, none.New(), &fakeTargets{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.traceAgent(map[string]etcd.TargetGroup{}); err == nil || !strings.Contains(err.Error(), "no Jaeger collector published") {
		t.Fatalf("before any collector: %v", err)
	}
	s.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://10.0.0.3:4317"})
	s.SetCollectors(map[string]string{})
	s.SetCollectors(map[string]string{collectors.Prometheus: "http://10.0.0.4:9090"})
	spec, _, err := s.traceAgent(map[string]etcd.TargetGroup{})
	b, _ := os.ReadFile(filepath.Join(cfg.Dir, "trace-agent", "config.yml"))
	if err != nil || spec == nil || !strings.Contains(string(b), "10.0.0.3:4317") {
		t.Fatalf("the trace agent was dropped or re-pointed when the collector URL vanished: %v\n%s", err, b)
	}
}

// With the otelcol shipper (the default) there is no Vector: the trace
// agent starts for the logs alone, before any collector is known, and
// gains a traces pipeline when one is published.
func TestOtelcolShipperRunsTheTraceAgentForLogs(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		Node: "n1", Cluster: "c1", Driver: "none", Stack: stackconfig.DefaultStack, Dir: dir, Host: "10.0.0.1",
		Manager: stackconfig.Manager{LogsURL: "http://127.0.0.1:9/insert/opentelemetry/v1/logs", TracesOTLPProtocol: "grpc"},
	}
	cfg.Stack.Logs.Files = []string{"/var/log/app/*.log", "/var/log/syslog"}
	s := runStack(t, cfg, none.New(), &fakeTargets{})
	etcdtest.Eventually(t, 5*time.Second, func() bool { return s.names() == "agent-node-exporter-n1,agent-trace-agent-n1" }, "workloads: %s", s.names())
	cfgFile := filepath.Join(dir, "trace-agent", "config.yml")
	b, _ := os.ReadFile(cfgFile)
	if !strings.Contains(string(b), "file_log/files") || strings.Contains(string(b), "otlp_grpc") {
		t.Fatalf("logs-only config:\n%s", b)
	}
	s.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://10.0.0.2:4317"})
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(cfgFile)
		return strings.Contains(string(b), "otlp_grpc") && strings.Contains(string(b), "file_log/files")
	}, "the trace agent did not gain a traces pipeline")
}

// A reloaded [stack] and [manager] are rendered again: node_exporter moves
// (its target follows), the log shipper reads other files and sends them
// to another URL, node_exporter is turned off.
func TestReloadedStackIsRenderedAgain(t *testing.T) {
	dir := t.TempDir()
	targets := &fakeTargets{}
	cfg := Config{
		Node: "n1", Cluster: "c1", Driver: "none", Stack: stackconfig.DefaultStack, Dir: dir, Host: "10.0.0.1",
		Manager: stackconfig.Manager{LogsURL: "http://127.0.0.1:9/insert/opentelemetry/v1/logs", TracesOTLPProtocol: "grpc"},
	}
	cfg.Stack.Logs.Files = []string{"/var/log/app/*.log"}
	s := runStack(t, cfg, none.New(), targets)
	etcdtest.Eventually(t, 5*time.Second, func() bool { return s.names() == "agent-node-exporter-n1,agent-trace-agent-n1" }, "workloads: %s", s.names())

	next := cfg.Stack
	next.NodeExporter.Listen = "0.0.0.0:19100"
	next.Logs.Files = []string{"/var/log/other/*.log"}
	m := cfg.Manager
	m.LogsURL = "http://127.0.0.1:19428/insert/opentelemetry/v1/logs"
	s.SetConfig(next, m)
	cfgFile := filepath.Join(dir, "trace-agent", "config.yml")
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(cfgFile)
		g := targets.get("node/node-exporter")
		return strings.Contains(string(b), "/var/log/other/*.log") && !strings.Contains(string(b), "/var/log/app/") &&
			strings.Contains(string(b), "127.0.0.1:19428") &&
			len(g.Targets) == 1 && g.Targets[0] == "10.0.0.1:19100"
	}, "reload not rendered: node_exporter target %+v", poll.Latest(func() any { return targets.get("node/node-exporter") }))

	next.NodeExporter.Enabled = false
	s.SetConfig(next, m)
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		return s.names() == "agent-trace-agent-n1" && len(targets.get("node/node-exporter").Targets) == 0
	},
		"node_exporter still there after it was turned off: %s", s.names())
}

// The docker driver's spec of the trace agent mounts what it reads: its own
// folder (the queue on disk) read-write, the container logs, the log files'
// folders and the token's read-only, each once.
func TestTraceAgentMountsWhatItReads(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		Node: "n1", Cluster: "c1", Driver: "docker", Stack: stackconfig.DefaultStack, Dir: dir, Host: "10.0.0.1",
		ContainerLogs: "/var/lib/docker/containers/*/*-json.log",
		Manager:       stackconfig.Manager{LogsURL: "http://127.0.0.1:9/v1/logs", LogsBearerTokenFile: "/etc/agent/logs.token"},
	}
	cfg.Stack.Logs.Files = []string{"/var/log/syslog", "/var/log/auth.log", "/srv/*/logs/*.log"}
	s, err := New(cfg, none.New(), &fakeTargets{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://10.0.0.2:4317"})
	spec, _, err := s.traceAgent(map[string]etcd.TargetGroup{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range spec.Mounts {
		got = append(got, m.Target+map[bool]string{true: ":ro", false: ":rw"}[m.ReadOnly])
	}
	want := filepath.Join(dir, "trace-agent") + ":rw,/var/log:ro,/srv:ro,/var/lib/docker/containers:ro,/etc/agent:ro"
	if strings.Join(got, ",") != want || spec.Image != stackconfig.DefaultStack.TraceAgent.Image {
		t.Fatalf("mounts %s, image %s\nwant %s", strings.Join(got, ","), spec.Image, want)
	}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
}
