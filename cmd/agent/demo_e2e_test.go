package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/agentproj/agent/drivers/docker/dockertest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/stackconfig"
)

// demo is `make run` (deploy/demo.sh) started by a test, on free ports.
type demo struct {
	*proc
	data, api, manager, prom, nodeExporter string
}

// startDemo runs deploy/demo.sh with the agent built for the tests, its
// own data dir and free ports; extra are more environment variables.
func startDemo(t *testing.T, driver string, extra ...string) *demo {
	t.Helper()
	requireBinary(t, "prometheus", "prometheus")
	requireBinary(t, "prometheus-node-exporter", "prometheus-node-exporter")
	d := &demo{data: t.TempDir(), api: etcdtest.FreeAddr(t), manager: etcdtest.FreeAddr(t),
		prom: etcdtest.FreeAddr(t), nodeExporter: etcdtest.FreeAddr(t)}
	env := []string{
		"DATA_DIR=" + d.data, "DRIVER=" + driver, "AGENT=" + agentBinary(t), "MANAGER_ADDR=" + d.manager,
		"AGENT_LISTEN=" + d.api, "AGENT_EMBEDDED_ETCD_LISTEN=http://" + etcdtest.FreeAddr(t),
		"AGENT_EMBEDDED_ETCD_PEER_LISTEN=http://" + etcdtest.FreeAddr(t),
		"AGENT_STACK_PROMETHEUS_LISTEN=" + d.prom, "AGENT_STACK_NODE_EXPORTER_LISTEN=" + d.nodeExporter,
	}
	d.proc = runDemo(t, d.data, append(env, extra...))
	return d
}

// runDemo runs deploy/demo.sh with env (KEY=VALUE) set; whatever happens,
// the node stack's processes under data do not outlive the test.
func runDemo(t *testing.T, data string, env []string) *proc {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Cleanup(func() { removeProcesses(t, filepath.Join(data, "agent")) })
	return startProc(t, "demo", "bash", "../../deploy/demo.sh")
}

func (p *proc) output(t *testing.T) string { return readFile(t, p.log) }

// ctrlC does what Ctrl-C in its terminal does: SIGINT to the script's
// process group (the script, the agent and the manager's processes); the
// demo exits 130 once everything it started is gone.
func (p *proc) ctrlC(t *testing.T) {
	t.Helper()
	p.signal(syscall.SIGINT)
	code, err := p.wait(90 * time.Second)
	if err != nil || code != 130 {
		t.Fatalf("demo after Ctrl-C: exit %d, %v\n%s", code, err, p.output(t))
	}
}

// answers reports whether something accepts HTTP at addr.
func answers(addr string) bool { return httpCode("http://"+addr+"/") != 0 }

// An agent that exits at once (here a bad log level): the demo does not
// claim it is up; it says the agent exited, with its status, stops the
// manager and exits 1.
func TestDemoFailsWhenAgentExits(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDemo(t, "process", "AGENT_LOG_LEVEL=loud")
	code, err := d.wait(90 * time.Second)
	out := d.output(t)
	if err != nil || code != 1 {
		t.Fatalf("demo with a failing agent: exit %d, %v\n%s", code, err, out)
	}
	if strings.Contains(out, "agent up") {
		t.Fatalf("demo says the agent is up though it exited:\n%s", out)
	}
	if !strings.Contains(out, `log_level: must be one of debug, info, warn, error, got "loud"`) ||
		!strings.Contains(out, "demo: the agent exited with status 2 before it was ready") {
		t.Fatalf("demo does not say why it stopped:\n%s", out)
	}
	if answers(d.manager) {
		t.Fatal("the manager Prometheus still runs after the demo failed")
	}
}

// With the process driver: "agent up" once the agent is ready; Ctrl-C
// stops the agent, its Prometheus and node_exporter and the manager, and
// returns only once they are gone.
func TestDemoCtrlCStopsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDemo(t, "process")
	etcdtest.Eventually(t, 90*time.Second, func() bool { return strings.Contains(d.output(t), "agent up") }, "demo never said the agent is up")
	if httpCode("http://"+d.api+"/-/ready") != 200 {
		t.Fatalf("demo said the agent is up before it was ready:\n%s", d.output(t))
	}
	etcdtest.Eventually(t, 60*time.Second, func() bool { return answers(d.prom) && answers(d.nodeExporter) },
		"Prometheus and node_exporter not running")
	pids, _ := filepath.Glob(filepath.Join(d.data, "agent", "processes", "*.pid"))
	d.ctrlC(t)
	for _, addr := range []string{d.api, d.manager, d.prom, d.nodeExporter} {
		if answers(addr) {
			t.Errorf("%s still answers after Ctrl-C", addr)
		}
	}
	for _, f := range pids {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // removed with its process
		}
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && !exited(pid) {
			t.Errorf("%s (pid %d) still runs after Ctrl-C", filepath.Base(f), pid)
		}
	}
}

// With the Docker driver: Ctrl-C also removes the containers the agent
// started (its node stack outlives the agent on purpose; the demo must not
// leave it behind).
func TestDemoCtrlCRemovesContainers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	engine := dockertest.Start(t)
	st := stackconfig.DefaultStack
	dockertest.ImportImage(t, engine.Client, st.Prometheus.Image, requireBinary(t, "prometheus", "prometheus"))
	dockertest.ImportImage(t, engine.Client, st.NodeExporter.Image, requireBinary(t, "prometheus-node-exporter", "prometheus-node-exporter"))
	d := startDemo(t, "docker", "DOCKER_HOST="+engine.Host)
	etcdtest.Eventually(t, 90*time.Second, func() bool { return strings.Contains(d.output(t), "agent up") }, "demo never said the agent is up")
	managed := func() []string {
		list, err := engine.Client.ContainerList(t.Context(), container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", workload.LabelManaged+"="+workload.ManagedValue))})
		if err != nil {
			t.Fatalf("list containers: %v", err)
		}
		var names []string
		for _, c := range list {
			names = append(names, strings.Join(c.Names, ","))
		}
		return names
	}
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		names := strings.Join(managed(), " ")
		return strings.Contains(names, "agent-node-exporter-demo") && strings.Contains(names, "agent-prometheus-demo")
	}, "the demo's node_exporter and Prometheus containers are not there")
	d.ctrlC(t)
	if left := managed(); len(left) > 0 {
		t.Fatalf("containers left after Ctrl-C: %v", left)
	}
}
