package main

// End-to-end tests of issue 9's workload items with real processes: what
// the agent reloads (only its own workloads) and what `agent status` says
// about a workload that crash-loops.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/workload"
)

// writeAgentConfig writes an agent.toml for a test and returns its path.
func writeAgentConfig(t *testing.T, toml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.toml")
	if err := os.WriteFile(path, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// workloadOf returns the state node reports for the named workload.
func workloadOf(v etcd.ClusterView, node, name string) (workload.State, bool) {
	for _, m := range v.Members {
		if m.Node != node || m.Status == nil {
			continue
		}
		for _, st := range m.Status.Stack {
			if st.Name == name {
				return st, true
			}
		}
	}
	return workload.State{}, false
}

// Issue 9, item 2: the operator runs Prometheus on the port the agent's
// config names. An agent with --driver none becomes master, then again
// with a changed config, and the operator's Prometheus never reloads.
func TestNoneDriverMasterLeavesTheOperatorsPrometheusAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	bin := requireBinary(t, "prometheus", "prometheus")
	endpoint := startEtcd(t)
	promDir := t.TempDir()
	promCfg := filepath.Join(promDir, "prometheus.yml")
	if err := os.WriteFile(promCfg, []byte("global: {scrape_interval: 1m}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := etcdtest.FreeAddr(t)
	prom := startProc(t, "operators-prometheus", bin, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(promDir, "data"),
		"--web.listen-address="+addr, "--web.enable-lifecycle")
	etcdtest.Eventually(t, 20*time.Second, func() bool { return httpCode("http://"+addr+"/-/ready") == 200 }, "operator's Prometheus not ready")
	loads := func() int { return strings.Count(readFile(t, prom.log), "Completed loading of configuration file") }
	if n := loads(); n != 1 {
		t.Fatalf("operator's Prometheus loaded its config %d times at start", n)
	}

	dataDir := t.TempDir()
	for i, interval := range []string{"15s", "20s"} {
		cfg := writeAgentConfig(t, fmt.Sprintf("[stack.prometheus]\nlisten = %q\nscrape_interval = %q\n", addr, interval))
		a := startAgentIn(t, endpoint, "a", "2s", dataDir, "--config", cfg)
		// The cluster stack reports its workloads only after the term's
		// reload step: once they are in etcd, a reload would have happened.
		etcdtest.Eventually(t, 30*time.Second, func() bool {
			st, ok := workloadOf(agentStatus(t, endpoint), "a", "agent-prometheus-a")
			return ok && st.Status == workload.StatusUnmanaged
		}, "term %d: the master does not report its (unmanaged) Prometheus", i+1)
		yml := readFile(t, filepath.Join(dataDir, "stack", "prometheus", "prometheus.yml"))
		if !strings.Contains(yml, "scrape_interval: "+interval) {
			t.Fatalf("term %d: prometheus.yml not rendered with scrape_interval %s:\n%s", i+1, interval, yml)
		}
		a.signal(syscall.SIGTERM)
		if code, err := a.wait(20 * time.Second); err != nil || code != 0 {
			t.Fatalf("agent exit %d, %v", code, err)
		}
	}
	if n := loads(); n != 1 {
		t.Fatalf("the operator's Prometheus loaded its config %d times: the agent reloaded a Prometheus it does not run\n%s", n, readFile(t, prom.log))
	}
}

// Issue 9, item 4: node_exporter on a port that is already taken exits at
// once with "bind: address already in use". `agent status` says
// crash-looping, with its restarts and that error, not "running".
func TestStatusShowsACrashLoopingWorkloadAndWhy(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireBinary(t, "prometheus-node-exporter", "prometheus-node-exporter")
	endpoint := startEtcd(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	dataDir := t.TempDir()
	t.Cleanup(func() { removeProcesses(t, dataDir) })
	cfg := writeAgentConfig(t, fmt.Sprintf("[stack.prometheus]\nenabled = false\n[stack.node_exporter]\nlisten = %q\n", held.Addr().String()))
	a := startAgentIn(t, endpoint, "a", "2s", dataDir, "--config", cfg, "--driver", "process")
	etcdtest.Eventually(t, 20*time.Second, a.ready, "agent not ready")

	const name = "agent-node-exporter-a"
	var st workload.State
	etcdtest.Eventually(t, 90*time.Second, func() bool {
		var ok bool
		st, ok = workloadOf(agentStatus(t, endpoint), "a", name)
		return ok && st.Status == workload.StatusCrashLooping && st.Restarts >= 2
	}, "status does not report %s crash-looping with 2 restarts: %+v", name, &st)
	if !strings.Contains(st.LastError, "bind: address already in use") || !strings.Contains(strings.Join(st.LastOutput, "\n"), "bind: address already in use") {
		t.Fatalf("status does not say why %s exits: last_error %q, last_output %q", name, st.LastError, st.LastOutput)
	}
	out, err := exec.Command(agentBinary(t), "status", "--etcd", endpoint, "--cluster", "e2e").CombinedOutput()
	if err != nil {
		t.Fatalf("agent status: %v\n%s", err, out)
	}
	var row string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), name+" ") {
			row = line
		}
	}
	if f := strings.Fields(row); len(f) < 7 || f[2] != "crash-looping" || !strings.Contains(row, "address already in use") {
		t.Fatalf("agent status row of %s = %q; want crash-looping with the error:\n%s", name, row, out)
	}
	if !strings.Contains(string(out), "last output of "+name+":") {
		t.Fatalf("agent status does not print the last output of %s:\n%s", name, out)
	}
}
