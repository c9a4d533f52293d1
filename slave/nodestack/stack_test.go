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
	"github.com/agentproj/agent/drivers/none"
	"github.com/agentproj/agent/drivers/process"
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

// With the render-only driver the node stack renders every config, follows
// the collector URL into the trace agent's config and publishes its
// node_exporter as a target.
func TestNodeStackRendersAndFollowsCollector(t *testing.T) {
	dir := t.TempDir()
	targets := &fakeTargets{}
	cfg := Config{
		Node: "n1", Cluster: "c1", Driver: "none", Stack: stackconfig.DefaultStack, Dir: dir, Host: "10.0.0.1",
		Manager: stackconfig.Manager{LogsURL: "http://127.0.0.1:9/logs", TracesOTLPProtocol: "grpc"},
	}
	cfg.Stack.NodeExporter.Listen = "0.0.0.0:9100"
	cfg.Stack.Vector.Files = []string{"/var/log/app/*.log"} // without Docker, Vector needs a file source
	s, err := New(cfg, none.New(), targets, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	names := func() string {
		var n []string
		for _, st := range s.States() {
			n = append(n, st.Name)
		}
		return strings.Join(n, ",")
	}
	etcdtest.Eventually(t, 5*time.Second, func() bool { return names() == "agent-node-exporter-n1,agent-vector-n1" }, "workloads before a collector is known: %s", names())
	targets.mu.Lock()
	g := targets.groups["node/node-exporter"]
	targets.mu.Unlock()
	if len(g.Targets) != 1 || g.Targets[0] != "10.0.0.1:9100" || g.Labels["node"] != "n1" {
		t.Fatalf("node_exporter target %+v: want the advertised host for a wildcard listen", g)
	}

	s.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://10.0.0.2:4317"})
	etcdtest.Eventually(t, 5*time.Second, func() bool { return strings.Contains(names(), "agent-trace-agent-n1") }, "no trace agent after the collector URL arrived")
	cfgFile := filepath.Join(dir, "trace-agent", "config.yml")
	b, err := os.ReadFile(cfgFile)
	if err != nil || !strings.Contains(string(b), "10.0.0.2:4317") {
		t.Fatalf("trace agent config does not point at the collector (%v):\n%s", err, b)
	}
	s.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://10.0.0.3:4317"})
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(cfgFile)
		return strings.Contains(string(b), "10.0.0.3:4317")
	}, "trace agent config did not follow the new collector URL")
	if got := s.TraceEndpoint(); got != "http://127.0.0.1:14318" {
		t.Fatalf("TraceEndpoint = %q", got)
	}
}

// A changed config of the node stack's own running workload is reloaded
// with SIGHUP through the driver (same pid), once the workload runs: here
// a shell stands in for the trace agent (which cannot run here) and says
// when it gets the signal.
func TestChangedConfigReloadsTheStacksOwnProcess(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "trace-agent-stand-in")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntrap 'echo \"reloaded: $(grep -c 10.0.0.3 \"${1#--config=}\")\"' HUP\necho \"ready: $1\"\nwhile :; do sleep 0.05; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Node: "n1", Cluster: "c1", Driver: process.DriverName, Stack: stackconfig.DefaultStack, Dir: filepath.Join(dir, "stack"), Host: "127.0.0.1"}
	cfg.Stack.NodeExporter.Enabled, cfg.Stack.Vector.Enabled = false, false
	cfg.Stack.TraceAgent.Binary = script
	d, err := process.New(filepath.Join(dir, "processes"))
	if err != nil {
		t.Fatal(err)
	}
	const name = "agent-trace-agent-n1"
	t.Cleanup(func() {
		if err := d.Remove(context.Background(), name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	s, err := New(cfg, d, &fakeTargets{}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	logHas := func(text string) func() bool {
		return func() bool { b, _ := os.ReadFile(d.LogPath(name)); return strings.Contains(string(b), text) }
	}

	s.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://10.0.0.2:4317"})
	etcdtest.Eventually(t, 10*time.Second, logHas("ready: --config="), "the trace agent stand-in never started")
	first, _ := d.Inspect(ctx, name)
	s.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://10.0.0.3:4317"})
	etcdtest.Eventually(t, 10*time.Second, logHas("reloaded: 1"), "no SIGHUP after the collector URL changed")
	if now, _ := d.Inspect(ctx, name); now.ID != first.ID || now.Status != workload.StatusRunning {
		t.Fatalf("reload replaced the process: %+v, then %+v", first, now)
	}
}
