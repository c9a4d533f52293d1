package clusterstack

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/none"
	"github.com/agentproj/agent/master/collectors"
	"github.com/agentproj/agent/stackconfig"
)

func testConfig(t *testing.T) Config {
	return Config{
		Node: "n1", Cluster: "c1", Driver: "none", Stack: stackconfig.DefaultStack,
		Manager: stackconfig.Manager{TracesOTLPEndpoint: "http://10.9.9.9:4317", TracesOTLPProtocol: "grpc"},
		Dir:     t.TempDir(), SDDir: t.TempDir(), RelayURL: "http://10.0.0.1:9464/api/v1/write", Host: "10.0.0.1",
	}
}

func TestURLs(t *testing.T) {
	cfg := testConfig(t)
	want := map[string]string{
		collectors.Prometheus:     "http://127.0.0.1:9090",
		collectors.JaegerOTLPGRPC: "http://10.0.0.1:4317", // ":4317" listens everywhere: the advertised host
		collectors.JaegerOTLPHTTP: "http://10.0.0.1:4318",
		collectors.Relay:          "http://10.0.0.1:9464/api/v1/write",
	}
	if got := URLs(cfg); !maps.Equal(got, want) {
		t.Fatalf("URLs = %v, want %v", got, want)
	}
	cfg.Manager.TracesOTLPEndpoint = ""
	if _, ok := URLs(cfg)[collectors.JaegerOTLPGRPC]; ok {
		t.Fatal("a Jaeger URL is published though Jaeger does not run (no traces endpoint)")
	}
}

// A term renders the configs and runs the stack; when it ends the stack
// is gone from the states.
func TestTermRunsAndStopsTheStack(t *testing.T) {
	cfg := testConfig(t)
	s, err := New(cfg, none.New(), slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, etcd.Leader{}) }()
	etcdtest.Eventually(t, 5*time.Second, func() bool { return len(s.States()) == 2 }, "cluster stack not running: %+v", s.States())
	yml, err := os.ReadFile(filepath.Join(cfg.Dir, "prometheus", "prometheus.yml"))
	if err != nil || !strings.Contains(string(yml), cfg.SDDir) || !strings.Contains(string(yml), cfg.RelayURL) {
		t.Fatalf("prometheus.yml lacks the sd dir or the relay (%v):\n%s", err, yml)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "jaeger", "config.yml")); err != nil {
		t.Fatalf("jaeger config: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run at the end of the term: %v", err)
	}
	if st := s.States(); len(st) != 0 {
		t.Fatalf("states after the term: %+v", st)
	}
}
