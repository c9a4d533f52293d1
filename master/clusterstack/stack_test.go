package clusterstack

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/none"
	"github.com/agentproj/agent/drivers/process"
	"github.com/agentproj/agent/drivers/process/processtest"
	"github.com/agentproj/agent/drivers/workload"
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
	etcdtest.Eventually(t, 5*time.Second, func() bool { return len(s.States()) == 2 }, "cluster stack not running: %+v", poll.Latest(func() any { return s.States() }))
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

// With the agents' API on https, the rendered Prometheus trusts its CA
// (the relay and the agent-api scrape config) and, in a container, sees the
// CA file at the same path.
func TestPrometheusTrustsTheAgentCA(t *testing.T) {
	cfg := testConfig(t)
	cfg.Driver = "docker" // specs only: the mounts are the docker driver's
	cfg.Stack.Jaeger.Enabled = false
	cfg.RelayURL = "https://10.0.0.1:9464/api/v1/write"
	cfg.AgentCAFile = filepath.Join(t.TempDir(), "ca.pem")
	s, err := New(cfg, none.New(), slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	specs, _, err := s.specs()
	if err != nil || len(specs) != 1 {
		t.Fatalf("specs = %+v, %v", specs, err)
	}
	if !slices.Contains(specs[0].Mounts, workload.SamePath(cfg.AgentCAFile, true)) {
		t.Errorf("the CA file is not mounted read-only: %+v", specs[0].Mounts)
	}
	yml, err := os.ReadFile(filepath.Join(cfg.Dir, "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(yml), "ca_file: "+cfg.AgentCAFile); n != 2 || !strings.Contains(string(yml), "job_name: "+stackconfig.JobAgentAPI) {
		t.Errorf("prometheus.yml: want the CA in agent-api and remote_write, got it %d times:\n%s", n, yml)
	}
}

// promProc is a Prometheus the test runs itself, as an operator would: the
// agent did not start it and must never reload, signal or stop it.
type promProc struct {
	addr, log string
}

// startOperatorPrometheus runs the Debian Prometheus on a free loopback
// port, with the lifecycle API on (so an HTTP reload would work), and
// kills it when the test ends.
func startOperatorPrometheus(t *testing.T) promProc {
	t.Helper()
	bin := etcdtest.RequireBinary(t, "prometheus", "prometheus")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global: {scrape_interval: 1m}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := promProc{addr: etcdtest.FreeAddr(t), log: filepath.Join(dir, "prometheus.log")}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr, "--web.enable-lifecycle")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	etcdtest.Eventually(t, 20*time.Second, func() bool { return processtest.HTTPGet("http://"+p.addr+"/-/ready") != "" }, "operator's Prometheus not ready on %s", p.addr)
	return p
}

// loads counts the config loads in Prometheus' log: one at start, one per
// reload (SIGHUP or POST /-/reload).
func (p promProc) loads(t *testing.T) int {
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "Completed loading of configuration file")
}

// lastReload is prometheus_config_last_reload_success_timestamp_seconds.
func (p promProc) lastReload(t *testing.T) string {
	for _, line := range strings.Split(processtest.HTTPGet("http://"+p.addr+"/metrics"), "\n") {
		if strings.HasPrefix(line, "prometheus_config_last_reload_success_timestamp_seconds ") {
			return line
		}
	}
	t.Fatalf("Prometheus on %s has no reload timestamp", p.addr)
	return ""
}

// runTerm runs one master term of the stack until its workloads are
// reported, which is after the term's reload (if any) was done, and ends it.
func runTerm(t *testing.T, cfg Config, d workload.Driver, want int) {
	t.Helper()
	s, err := New(cfg, d, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, etcd.Leader{}) }()
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("term ended early: %v", err)
		default:
		}
		return len(s.States()) == want
	}, "term did not start %d workloads: %+v", want, poll.Latest(func() any { return s.States() }))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("end of term: %v", err)
	}
}

// Issue 9, item 2: the operator runs Prometheus on the port the config
// names; an agent that does not run Prometheus (the none driver, or
// Prometheus disabled) becomes master, twice, with a changed config in
// between, and the operator's Prometheus never sees a reload.
func TestMasterNeverReloadsAPrometheusItDoesNotRun(t *testing.T) {
	op := startOperatorPrometheus(t)
	loads, stamp := op.loads(t), op.lastReload(t)
	if loads != 1 {
		t.Fatalf("operator's Prometheus loaded its config %d times at start", loads)
	}
	cfg := testConfig(t)
	cfg.Stack.Prometheus.Listen = op.addr

	runTerm(t, cfg, none.New(), 2) // renders prometheus.yml: a changed config
	cfg.RelayURL = "http://10.0.0.2:9464/api/v1/write"
	cfg.Stack.Prometheus.ScrapeInterval = 20 * time.Second
	runTerm(t, cfg, none.New(), 2)
	if yml, _ := os.ReadFile(filepath.Join(cfg.Dir, "prometheus", "prometheus.yml")); !strings.Contains(string(yml), "10.0.0.2:9464") {
		t.Fatalf("the second term did not rewrite prometheus.yml:\n%s", yml)
	}

	// Prometheus disabled, with a driver that runs processes.
	d, err := process.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Driver = process.DriverName
	cfg.Stack.Prometheus.Enabled = false
	cfg.Stack.Jaeger.Enabled = false
	cfg.Stack.Prometheus.ScrapeInterval = 25 * time.Second
	runTerm(t, cfg, d, 0)

	if got := op.loads(t); got != 1 {
		t.Errorf("the operator's Prometheus loaded its config %d times: the agent reloaded a Prometheus it does not run", got)
	}
	if got := op.lastReload(t); got != stamp {
		t.Errorf("reload timestamp moved from %q to %q", stamp, got)
	}
}

// The Prometheus of the agent's own cluster stack, left running (adopted,
// same spec) when a term starts with a changed prometheus.yml, is reloaded
// by SIGHUP through the driver: same pid, new config loaded.
func TestAdoptedPrometheusIsReloadedThroughTheDriver(t *testing.T) {
	cfg, d := promOnly(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// What a crashed master left: the stack's own Prometheus, with its labels.
	left, err := New(cfg, d, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	specs, _, err := left.specs()
	if err != nil || len(specs) != 1 {
		t.Fatalf("specs = %+v, %v", specs, err)
	}
	spec := specs[0]
	for k, v := range left.sup.Selector() {
		if k != workload.LabelManaged {
			spec.Labels[k] = v
		}
	}
	t.Cleanup(func() { _ = d.Remove(context.Background(), spec.Name) })
	st, err := d.Ensure(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + cfg.Stack.Prometheus.Listen
	etcdtest.Eventually(t, 20*time.Second, func() bool { return processtest.HTTPGet(url+"/-/ready") != "" }, "Prometheus not ready")
	loads := func() int {
		b, _ := os.ReadFile(d.LogPath(spec.Name))
		return strings.Count(string(b), "Completed loading of configuration file")
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool { return loads() == 1 }, "Prometheus did not load its config once")

	cfg.Stack.Prometheus.ScrapeInterval = 20 * time.Second
	s, err := New(cfg, d, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	startTerm(t, s)
	etcdtest.Eventually(t, 20*time.Second, func() bool { return loads() == 2 }, "adopted Prometheus not reloaded (config loads: %d)", loads())
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(processtest.HTTPGet(url+"/api/v1/status/config"), "scrape_interval: 20s")
	},
		"the reloaded Prometheus does not run the new config")
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		states := s.States()
		return len(states) == 1 && states[0].Status == workload.StatusRunning && states[0].ID == st.ID
	}, "the term did not adopt pid %s: %+v", st.ID, poll.Latest(func() any { return s.States() }))
}

// A reloaded [stack] reaches the running term: a changed prometheus.yml is
// loaded by the same Prometheus (SIGHUP through the driver), a changed
// flag restarts it.
func TestReloadedStackReachesTheRunningTerm(t *testing.T) {
	cfg, d := promOnly(t)
	s, err := New(cfg, d, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	startTerm(t, s)
	name, url := prometheusName(cfg.Node), "http://"+cfg.Stack.Prometheus.Listen
	running := func() string { // the pid of a Prometheus that answers
		for _, st := range s.States() {
			if st.Name == name && st.Status == workload.StatusRunning && processtest.HTTPGet(url+"/-/ready") != "" {
				return st.ID
			}
		}
		return ""
	}
	loads := func() int {
		b, _ := os.ReadFile(d.LogPath(name))
		return strings.Count(string(b), "Completed loading of configuration file")
	}
	etcdtest.Eventually(t, 20*time.Second, func() bool { return running() != "" && loads() == 1 }, "Prometheus not running: %+v", poll.Latest(func() any { return s.States() }))
	pid := running()

	next := cfg.Stack
	next.Prometheus.ScrapeInterval = 20 * time.Second
	s.SetConfig(next, cfg.Manager)
	// Prometheus serves the new config a moment before it logs the load.
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		return strings.Contains(processtest.HTTPGet(url+"/api/v1/status/config"), "scrape_interval: 20s") && loads() >= 2
	}, "the new scrape_interval is not loaded (config loads: %d)", poll.Latest(func() any { return loads() }))
	if got := running(); got != pid || loads() != 2 {
		t.Fatalf("Prometheus pid %s -> %s, config loads %d: want the same process, reloaded once", pid, got, loads())
	}

	next.Prometheus.Retention = 3 * time.Hour // a flag: a new process
	s.SetConfig(next, cfg.Manager)
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(processtest.HTTPGet(url+"/api/v1/status/flags"), `"storage.tsdb.retention.time":"3h"`) && running() != ""
	}, "Prometheus not restarted with the new retention: %+v", poll.Latest(func() any { return s.States() }))
	if got := running(); got == pid {
		t.Fatalf("Prometheus pid %s kept across a changed flag", pid)
	}
}

// promOnly is a cluster stack of the Debian Prometheus alone, run by the
// process driver on a free port, without a relay.
func promOnly(t *testing.T) (Config, *process.Driver) {
	t.Helper()
	etcdtest.RequireBinary(t, "prometheus", "prometheus")
	d, err := process.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Driver = process.DriverName
	cfg.Stack.Jaeger.Enabled = false
	cfg.Stack.Prometheus.Listen = etcdtest.FreeAddr(t)
	cfg.RelayURL = ""
	return cfg, d
}

// startTerm runs a term of s until the test ends.
func startTerm(t *testing.T, s *Stack) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, etcd.Leader{}) }()
	t.Cleanup(func() { cancel(); <-done })
}
