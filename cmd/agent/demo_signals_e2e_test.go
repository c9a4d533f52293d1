package main

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/process/processtest"
)

// signalsDemo is `make run` (deploy/demo.sh) with the process driver,
// started by a test on free ports, every one of them moved by the
// environment the script documents.
type signalsDemo struct {
	*proc
	data, api, manager, jaeger, logs, prom string
}

func startSignalsDemo(t *testing.T, extra ...string) *signalsDemo {
	t.Helper()
	requireBinary(t, "prometheus", "prometheus")
	requireBinary(t, "prometheus-node-exporter", "prometheus-node-exporter")
	// Every port is reserved for the test (etcdtest.FreeAddr): the master's
	// Prometheus binds its own some seconds from now, and a port picked by
	// a probe on port 0 was sometimes taken by then (it exited 1 at every
	// start, and node_exporter's series never reached the manager).
	d := &signalsDemo{data: t.TempDir(), api: etcdtest.FreeAddr(t), manager: etcdtest.FreeAddr(t),
		jaeger: etcdtest.FreeAddr(t), logs: etcdtest.FreeAddr(t), prom: etcdtest.FreeAddr(t)}
	free := func() string { return etcdtest.FreeAddr(t) }
	env := []string{
		"DATA_DIR=" + d.data, "DRIVER=process", "AGENT=" + agentBinary(t),
		"MANAGER_ADDR=" + d.manager, "MANAGER_JAEGER_ADDR=" + d.jaeger, "MANAGER_OTLP_ADDR=" + free(), "MANAGER_LOGS_ADDR=" + d.logs,
		"AGENT_LISTEN=" + d.api, "AGENT_EMBEDDED_ETCD_LISTEN=http://" + free(), "AGENT_EMBEDDED_ETCD_PEER_LISTEN=http://" + free(),
		"AGENT_STACK_PROMETHEUS_LISTEN=" + d.prom, "AGENT_STACK_NODE_EXPORTER_LISTEN=" + free(),
	}
	for _, c := range []string{"JAEGER", "TRACE_AGENT"} {
		for _, l := range []string{"OTLP_GRPC", "OTLP_HTTP", "HEALTH", "TELEMETRY"} {
			env = append(env, "AGENT_STACK_"+c+"_"+l+"_LISTEN="+free())
		}
	}
	d.proc = runDemo(t, d.data, append(env, extra...))
	t.Cleanup(func() { // before runDemo's cleanup removes the processes
		if t.Failed() {
			logWorkloads(t, filepath.Join(d.data, "agent", "processes"))
		}
	})
	return d
}

// logWorkloads logs the end of the log of every workload the process
// driver ran in dir: the agent's own log says that one exited, this says
// why.
func logWorkloads(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		t.Logf("--- end of %s:\n%s", filepath.Base(l), b)
	}
}

var demoTrace = regexp.MustCompile(`\(trace ([0-9a-f]{32})\)`)

// `make run` with the testbins built shows all three signals at its local
// manager: the span of demo-app at the manager's Jaeger (with guid, node
// and cluster), its log record and a line of a shipped file at the
// manager's VictoriaLogs, node_exporter's series at the manager's
// Prometheus; the commands it prints find them. Ctrl-C stops everything,
// the manager's Jaeger and VictoriaLogs included.
func TestDemoShowsTheThreeSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	for _, b := range [][2]string{{"jaeger", "jaeger"}, {"otelcol", "otelcol"}, {"victorialogs", "victoria-logs"}} {
		processtest.Testbin(t, b[0], b[1]) // built when CI=true, else skips
	}
	d := startSignalsDemo(t)
	etcdtest.Eventually(t, 90*time.Second, func() bool { return strings.Contains(d.output(t), "agent up") }, "demo never said the agent is up")
	m := demoTrace.FindStringSubmatch(d.output(t))
	if m == nil || !strings.Contains(d.output(t), "http://"+d.jaeger+"/api/traces?service=demo-app") {
		t.Fatalf("the demo does not say where its span is:\n%s", d.output(t))
	}

	// The demo's own manager-side Jaeger, read as processtest reads one.
	jaeger := &processtest.Jaeger{Query: "http://" + d.jaeger}
	var spans []map[string]string
	etcdtest.Eventually(t, 60*time.Second, func() bool { spans = jaeger.Trace(m[1]); return len(spans) > 0 },
		"the demo's span %s is not at the manager's Jaeger", m[1])
	for _, r := range spans {
		if r["service.name"] != "demo-app" || r["guid"] != "demo-app" || r["node"] != "demo" || r["cluster"] != "default" {
			t.Fatalf("the demo's span at the manager: %v", r)
		}
	}

	logsQuery := func(q string) string {
		return processtest.HTTPGet("http://" + d.logs + "/select/logsql/query?" + url.Values{"query": {q}}.Encode())
	}
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		return strings.Contains(logsQuery(`guid:"demo-app"`), "order 42 placed")
	}, "the demo's log record is not at the manager's VictoriaLogs")
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		return strings.Contains(logsQuery(`node:"demo" "shipped log file"`), `"cluster":"default"`)
	}, "the shipped file's line is not at the manager's VictoriaLogs")
	// The master's Prometheus is ready (the Supervisor restarts one that
	// exited, with a backoff), then its series reach the manager.
	etcdtest.Eventually(t, 90*time.Second, func() bool { return httpCode("http://"+d.prom+"/-/ready") == 200 },
		"the master's Prometheus on %s is not ready", d.prom)
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		return strings.Contains(processtest.HTTPGet("http://"+d.manager+"/api/v1/query?query="+url.QueryEscape(`node_load1{cluster="default"}`)), `"node_load1"`)
	}, "node_exporter's series are not at the manager's Prometheus")

	d.ctrlC(t)
	for _, addr := range []string{d.api, d.manager, d.jaeger, d.logs} {
		if httpCode("http://"+addr+"/") != 0 {
			t.Errorf("%s still answers after Ctrl-C", addr)
		}
	}
}

// Without the testbins, `make run` runs metrics only and says how to get
// traces and logs.
func TestDemoSaysHowToGetTracesAndLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startSignalsDemo(t, "AGENT_TESTBINS="+t.TempDir()) // an empty cache: no testbin is built there
	etcdtest.Eventually(t, 90*time.Second, func() bool { return strings.Contains(d.output(t), "agent up") }, "demo never said the agent is up")
	out := d.output(t)
	if !strings.Contains(out, "Traces and logs are off") || !strings.Contains(out, "`make testbins` builds them") {
		t.Fatalf("the demo does not say how to get traces and logs:\n%s", out)
	}
	if httpCode("http://"+d.jaeger+"/") != 0 || httpCode("http://"+d.logs+"/") != 0 {
		t.Fatal("the demo started a manager-side Jaeger or VictoriaLogs without the testbins")
	}
	d.ctrlC(t)
}
