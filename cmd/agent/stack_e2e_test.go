package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/process"
	"github.com/agentproj/agent/drivers/process/processtest"
)

// stackAgent is an agent of a stack test with the ports of its stack.
type stackAgent struct {
	*agentProc
	dataDir, prom, nodeExporter string
	config, toml                string // its config file, and what it wrote there
}

// startStackAgent runs an agent whose node stack and cluster stack use
// free ports, with the process driver; the workloads it starts are removed
// when the test ends, even though the node stack outlives the agent.
func startStackAgent(t *testing.T, endpoint, node, manager, dataDir string, extra ...string) *stackAgent {
	t.Helper()
	return startStackAgentAPI(t, endpoint, node, manager, dataDir, "", extra...)
}

// startStackAgentAPI is startStackAgent with more keys of [api] (TOML
// lines).
func startStackAgentAPI(t *testing.T, endpoint, node, manager, dataDir, apiTOML string, extra ...string) *stackAgent {
	t.Helper()
	a := &stackAgent{dataDir: dataDir, prom: etcdtest.FreeAddr(t), nodeExporter: etcdtest.FreeAddr(t)}
	cfg := filepath.Join(t.TempDir(), "agent.toml")
	a.config = cfg
	// The API token guards the relay too: Prometheus must send it.
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf(`
[api]
token_file = %q
%s
[stack.prometheus]
listen = %q
scrape_interval = "1s"
scrape_timeout = "1s"
file_sd_refresh_interval = "1s"
[stack.node_exporter]
listen = %q
[relay]
upstream = [%q]
flush_deadline = "100ms"
`, token, apiTOML, a.prom, a.nodeExporter, manager+"/api/v1/write")
	a.toml = toml
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeProcesses(t, dataDir) })
	args := append([]string{"--config", cfg, "--driver", "process"}, extra...)
	a.agentProc = startAgentIn(t, endpoint, node, "2s", dataDir, args...)
	return a
}

// removeProcesses stops whatever the process driver of an agent started.
func removeProcesses(t *testing.T, dataDir string) {
	d, err := process.New(filepath.Join(dataDir, "processes"))
	if err != nil {
		return
	}
	states, _ := d.List(t.Context(), nil)
	for _, st := range states {
		_ = d.Remove(t.Context(), st.Name)
	}
}

// query runs an instant PromQL query and returns the number of series.
func query(prom, q string) int {
	resp, err := http.Get(prom + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct{} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return -1
	}
	return len(body.Data.Result)
}

// The main job with the process driver and the Debian binaries: two agents;
// the master runs Prometheus, which scrapes both node_exporters through
// file_sd and remote-writes through the relay to a manager Prometheus;
// a graceful failover moves Prometheus to the other node; a restarted agent
// adopts its node_exporter instead of starting a second one.
func TestStackWithProcessDriver(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireBinary(t, "prometheus-node-exporter", "prometheus-node-exporter")
	endpoint := startEtcd(t)
	manager := startPrometheus(t, "manager", "global: {scrape_interval: 1m}\n", "--web.enable-remote-write-receiver")
	dirs := map[string]string{"a": t.TempDir(), "b": t.TempDir()}
	agents := map[string]*stackAgent{}
	for _, n := range []string{"a", "b"} {
		agents[n] = startStackAgent(t, endpoint, n, manager, dirs[n])
	}
	for _, a := range agents {
		etcdtest.Eventually(t, 20*time.Second, a.ready, "agent %s not ready", a.node)
	}
	master := agents[waitMaster(t, endpoint)]
	other := agents[map[string]string{"a": "b", "b": "a"}[master.node]]

	promURL := "http://" + master.prom
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		return query(promURL, `up{job="node",cluster="e2e"} == 1`) == 2
	}, "master's Prometheus does not scrape both node_exporters")
	// Relayed to the manager, with the cluster label.
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		return query(manager, `node_exporter_build_info{cluster="e2e"}`) == 2
	}, "node_exporter series of both nodes did not reach the manager through the relay")
	// Without the token the relay refuses writes.
	resp, err := http.Post("http://"+master.api+"/api/v1/write", "application/x-protobuf", strings.NewReader("x"))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("relay without a token: %v %v, want 401", resp, err)
	}
	resp.Body.Close()
	if query("http://"+other.prom, "up") >= 0 {
		t.Fatalf("a Prometheus runs on %s, which is not master", other.node)
	}
	// Each node publishes its workloads every few seconds.
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		for _, m := range agentStatus(t, endpoint).Members {
			if m.Status == nil || len(m.Status.Stack) == 0 {
				return false
			}
		}
		return true
	}, "agent status does not list the workloads of every member")

	// Graceful failover: the old master's Prometheus stops, the new one's starts.
	master.signal(syscall.SIGTERM)
	if code, err := master.wait(20 * time.Second); err != nil || code != 0 {
		t.Fatalf("master exit %d, %v", code, err)
	}
	if query(promURL, "up") >= 0 {
		t.Fatal("the old master's Prometheus still answers after it stepped down")
	}
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		return query("http://"+other.prom, `up{job="node",cluster="e2e"} == 1`) >= 1
	}, "no Prometheus on the new master %s", other.node)

	// The stopped agent's node_exporter kept running; a new agent on the
	// same data dir adopts it (same pid) rather than starting another.
	before := pidOf(t, master.dataDir, "agent-node-exporter-"+master.node)
	restarted := startStackAgentWithPorts(t, endpoint, master, manager)
	etcdtest.Eventually(t, 20*time.Second, restarted.ready, "restarted agent not ready")
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		return pidOf(t, master.dataDir, "agent-node-exporter-"+master.node) == before
	}, "restarted agent did not adopt its node_exporter (pid %s)", before)

	// kill -9 of the current master leaves its Prometheus running; the
	// restarted agent removes that leftover before it joins, and the other
	// node, now master, runs the only Prometheus.
	otherProm := "http://" + other.prom
	other.kill()
	if query(otherProm, "up") < 0 {
		t.Fatal("the killed master's Prometheus should still run until its agent comes back")
	}
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		return query(promURL, `up{job="node",cluster="e2e"} == 1`) >= 1
	}, "%s did not take over with its own Prometheus", master.node)
	back := startStackAgentWithPorts(t, endpoint, other, manager)
	etcdtest.Eventually(t, 20*time.Second, back.ready, "agent %s not ready after kill -9", other.node)
	etcdtest.Eventually(t, 20*time.Second, func() bool { return query(otherProm, "up") < 0 },
		"the Prometheus left by the killed master %s still runs beside the new master's", other.node)
}

// SIGHUP applies a changed [stack] and [relay] to the running stack and
// relay: Prometheus re-reads its changed config (same process),
// node_exporter moves to another port (restarted, its target follows), the
// relay is rebuilt and forwards what is scraped after; a key the agent
// cannot change while it runs (where the master's Prometheus listens,
// published in etcd) is named as needing a restart and left as it is.
func TestStackReloadOnSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireBinary(t, "prometheus-node-exporter", "prometheus-node-exporter")
	endpoint := startEtcd(t)
	manager := startPrometheus(t, "manager", "global: {scrape_interval: 1m}\n", "--web.enable-remote-write-receiver")
	a := startStackAgent(t, endpoint, "n1", manager, t.TempDir())
	etcdtest.Eventually(t, 20*time.Second, a.ready, "agent not ready")
	promURL := "http://" + a.prom
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		return query(promURL, `up{job="node",instance="`+a.nodeExporter+`"} == 1`) == 1
	}, "Prometheus does not scrape node_exporter on %s", a.nodeExporter)
	promPid := pidOf(t, a.dataDir, "agent-prometheus-n1")

	moved := etcdtest.FreeAddr(t)
	toml := strings.NewReplacer(`scrape_interval = "1s"`, `scrape_interval = "2s"`, a.nodeExporter, moved, a.prom, etcdtest.FreeAddr(t),
		`flush_deadline = "100ms"`, `flush_deadline = "200ms"`).Replace(a.toml)
	if err := os.WriteFile(a.config, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	a.signal(syscall.SIGHUP)
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		log := readFile(t, a.log)
		return strings.Contains(log, "applied=stack.prometheus.scrape_interval,stack.node_exporter.listen,relay.flush_deadline\n") &&
			strings.Contains(log, "keys=stack.prometheus.listen") && strings.Contains(log, "msg=reloaded node=n1 component=relay")
	}, "the reload did not apply relay.flush_deadline, scrape_interval and node_exporter.listen (the relay built again), and name prometheus.listen as needing a restart")
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		return strings.Contains(processtest.HTTPGet(promURL+"/api/v1/status/config"), "scrape_interval: 2s")
	}, "Prometheus does not run the new scrape_interval")
	if got := pidOf(t, a.dataDir, "agent-prometheus-n1"); got != promPid {
		t.Fatalf("Prometheus pid %s -> %s: a changed config file should be reloaded, not restarted", promPid, got)
	}
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		return query(promURL, `up{job="node",instance="`+moved+`"} == 1`) == 1
	}, "Prometheus does not scrape node_exporter on its new address %s", moved)
	if processtest.HTTPGet("http://"+a.nodeExporter+"/metrics") != "" {
		t.Fatalf("node_exporter still answers on its old address %s", a.nodeExporter)
	}
	// The relay built from the reloaded [relay] forwards what Prometheus
	// scraped since.
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		return query(manager, `up{job="node",instance="`+moved+`"}`) == 1
	}, "what was scraped after the reload did not reach the manager through the reloaded relay")
}

// startStackAgentWithPorts restarts an agent with the data dir and ports of
// an earlier one.
func startStackAgentWithPorts(t *testing.T, endpoint string, old *stackAgent, manager string) *agentProc {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "agent.toml")
	toml := fmt.Sprintf("[stack.prometheus]\nlisten = %q\n[stack.node_exporter]\nlisten = %q\n[relay]\nupstream = [%q]\n",
		old.prom, old.nodeExporter, manager+"/api/v1/write")
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return startAgentIn(t, endpoint, old.node, "2s", old.dataDir, "--config", cfg, "--driver", "process")
}

func pidOf(t *testing.T, dataDir, name string) string {
	b, err := os.ReadFile(filepath.Join(dataDir, "processes", name+".pid"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
