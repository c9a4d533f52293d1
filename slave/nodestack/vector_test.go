package nodestack

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/drivers/docker"
	"github.com/agentproj/agent/drivers/docker/dockertest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/none"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/stackconfig"
)

// Vector cannot run on these machines: these tests run a STAND-IN for it
// (dockertest.StandInImage, busybox) on a real Docker engine. Like Vector,
// the stand-in dies of a SIGHUP that arrives while it starts, and answers
// GET /health on the address of its config's [api] section only once it
// handles SIGHUP.

// startVectorStandInStack starts a node stack with the docker driver
// running only the Vector stand-in, as an agent would; stop stops it (the
// agent exits) and leaves the container.
func startVectorStandInStack(t *testing.T, e *dockertest.Engine, cfg Config) (s *Stack, stop func()) {
	t.Helper()
	d, err := docker.New(t.Context(), docker.WithHost(e.Host))
	if err != nil {
		t.Fatal(err)
	}
	s, err = New(cfg, d, &fakeTargets{}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			d.Close()
		}
	}
	t.Cleanup(stop)
	return s, stop
}

// An agent restarts with a new manager.logs_url while the Vector it
// started is still starting (the stand-in is held in its start, where a
// SIGHUP kills it): the new agent adopts the container, rewrites
// vector.toml and does not signal it until Vector's /health answers
// (stack.vector.api_listen). The stand-in is reloaded, not killed: the
// same container, started once, no restart.
func TestVectorStandInReloadedAsItStartsKeepsRunning(t *testing.T) {
	e := dockertest.Start(t)
	dockertest.StandInImage(t, e.Client, stackconfig.DefaultStack.Vector.Image)
	cfg := Config{Node: "n1", Cluster: "c1", Driver: "docker", Stack: stackconfig.DefaultStack, Dir: filepath.Join(t.TempDir(), "stack"), Host: "127.0.0.1",
		Manager: stackconfig.Manager{LogsURL: "http://127.0.0.1:9/first-manager", TracesOTLPProtocol: "grpc"}}
	cfg.Stack.NodeExporter.Enabled, cfg.Stack.TraceAgent.Enabled = false, false
	cfg.Stack.Logs.Shipper = stackconfig.ShipperVector
	cfg.Stack.Vector.APIListen = etcdtest.FreeAddr(t)
	const name = "agent-vector-n1"
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- the stand-in's log:\n%s", dockertest.Logs(t, e.Client, name))
		}
	})

	// While the stand-in is held, the test answers its API's address:
	// 503, counting the agent's readiness probes.
	var probes atomic.Int64
	ln, err := net.Listen("tcp", cfg.Stack.Vector.APIListen)
	if err != nil {
		t.Fatal(err)
	}
	notReady := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			probes.Add(1)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})}
	go func() { _ = notReady.Serve(ln) }()
	t.Cleanup(func() { _ = notReady.Close() })
	hold := filepath.Join(cfg.Dir, "vector", dockertest.StandInHold)
	if err := os.MkdirAll(filepath.Dir(hold), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	first, stop := startVectorStandInStack(t, e, cfg)
	var started workload.State
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		st := first.States()
		if len(st) == 1 && st[0].Status == workload.StatusRunning {
			started = st[0]
			return true
		}
		return false
	}, "the Vector stand-in does not run: %+v", poll.Latest(func() any { return first.States() }))
	stop()

	probes.Store(0)
	cfg.Manager.LogsURL = "http://127.0.0.1:9/next-manager"
	next, _ := startVectorStandInStack(t, e, cfg)
	// Two probes: the new agent has wanted to reload at least one pass
	// ago, and waits.
	etcdtest.Eventually(t, 30*time.Second, func() bool { return probes.Load() >= 2 },
		"the new agent never asked Vector's /health before reloading it (%d probes)", probes.Load())
	if logs := dockertest.Logs(t, e.Client, name); strings.Count(logs, "stand-in for") != 1 || strings.Contains(logs, "stand-in ready") {
		t.Fatalf("the stand-in should still be starting, its first start:\n%s", logs)
	}

	// Vector is up: it handles SIGHUP, then its API answers.
	_ = notReady.Close()
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		logs := dockertest.Logs(t, e.Client, name)
		_, after, reloaded := strings.Cut(logs, "stand-in reloaded")
		return (reloaded && strings.Contains(after, "next-manager")) || strings.Count(logs, "stand-in for") > 1
	}, "the stand-in was not reloaded")
	logs := dockertest.Logs(t, e.Client, name)
	if n := strings.Count(logs, "stand-in for"); n != 1 {
		t.Fatalf("the stand-in was started %d times: the reload killed it", n)
	}
	st := next.States()
	if len(st) != 1 || st[0].Status != workload.StatusRunning || st[0].ID != started.ID || !st[0].Since.Equal(started.Since) || st[0].Restarts != 0 {
		t.Fatalf("states after the reload: %+v; want the container %s started at %s, running, not restarted", st, started.ID, started.Since)
	}
}

// Vector's spec waits for its API's /health before a reload, on the port
// stack.vector.api_listen names, which its config turns the API on at;
// without one there is neither API nor probe.
func TestVectorSpecIsReadyWhenItsAPIAnswers(t *testing.T) {
	cfg := Config{Node: "n1", Cluster: "c1", Driver: "none", Stack: stackconfig.DefaultStack, Dir: t.TempDir(), Host: "10.0.0.1",
		Manager: stackconfig.Manager{LogsURL: "http://127.0.0.1:9/logs"}}
	cfg.Stack.Logs.Shipper = stackconfig.ShipperVector
	cfg.Stack.Logs.Files = []string{"/var/log/syslog"}
	cfg.Stack.Vector.APIListen = "127.0.0.1:28686"
	s, err := New(cfg, none.New(), &fakeTargets{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	spec, _, err := s.vector()
	b, _ := os.ReadFile(filepath.Join(cfg.Dir, "vector", "vector.toml"))
	if err != nil || spec.Ready != "http://127.0.0.1:28686/health" || !strings.Contains(string(b), "[api]\nenabled = true\naddress = '127.0.0.1:28686'\n") {
		t.Fatalf("ready %q, err %v, config:\n%s", spec.Ready, err, b)
	}

	s.cfg.Stack.Vector.APIListen = ""
	spec, _, err = s.vector()
	b, _ = os.ReadFile(filepath.Join(cfg.Dir, "vector", "vector.toml"))
	if err != nil || spec.Ready != "" || strings.Contains(string(b), "[api]") {
		t.Fatalf("without api_listen: ready %q, err %v, config:\n%s", spec.Ready, err, b)
	}
}
