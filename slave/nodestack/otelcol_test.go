package nodestack

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/process"
	"github.com/agentproj/agent/drivers/process/processtest"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/master/collectors"
	"github.com/agentproj/agent/stackconfig"
)

// These tests run the real trace agent (the project's otelcol) with the
// process driver, and real Jaeger v2 and VictoriaLogs processes where the
// master's collector and the manager would be.

// otelcolStack is a node stack running only the trace agent, as a process,
// on free loopback ports.
type otelcolStack struct {
	*Stack
	d                   *process.Driver
	otlpHTTP, telemetry string
}

func startOtelcolStack(t *testing.T, mutate func(*Config)) *otelcolStack {
	t.Helper()
	bin := processtest.Testbin(t, "otelcol", "otelcol")
	dir := t.TempDir()
	d, err := process.New(filepath.Join(dir, "processes"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Node: "n1", Cluster: "c1", Driver: process.DriverName, Stack: stackconfig.DefaultStack, Dir: filepath.Join(dir, "stack"), Host: "127.0.0.1",
		Manager: stackconfig.Manager{TracesOTLPProtocol: "grpc"}}
	cfg.Stack.NodeExporter.Enabled = false
	ta := &cfg.Stack.TraceAgent
	ta.Binary = bin
	ta.OTLPGRPCListen, ta.OTLPHTTPListen, ta.HealthListen, ta.TelemetryListen = etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	if mutate != nil {
		mutate(&cfg)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(d.LogPath("agent-trace-agent-n1"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("--- end of the trace agent's log:\n%s", b)
		}
		_ = d.Remove(t.Context(), "agent-trace-agent-n1")
	})
	s := runStack(t, cfg, d, &fakeTargets{})
	return &otelcolStack{Stack: s, d: d, otlpHTTP: "http://" + ta.OTLPHTTPListen, telemetry: "http://" + ta.TelemetryListen + "/metrics"}
}

// pid is the trace agent's process id, "" when it does not run.
func (o *otelcolStack) pid(t *testing.T) string {
	st, err := o.d.Inspect(t.Context(), "agent-trace-agent-n1")
	if err != nil || st.Status != workload.StatusRunning {
		return ""
	}
	return st.ID
}

// send posts one span per request as an application of guid would, and
// fails the test if the trace agent keeps the application waiting. Like an
// OpenTelemetry SDK it tries again when the connection is refused, which
// happens while the trace agent reloads its config (its receiver restarts).
func (o *otelcolStack) send(t *testing.T, guid string, n int) []processtest.Span {
	t.Helper()
	var spans []processtest.Span
	for range n {
		s := processtest.NewSpan("checkout")
		body := processtest.TracesJSON(map[string]string{"service.name": guid, "guid": guid, "node": "app-says"}, s)
		deadline := time.Now().Add(10 * time.Second)
		for {
			start := time.Now()
			code, err := processtest.PostOTLP(o.otlpHTTP, "/v1/traces", body, 5*time.Second)
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("the trace agent kept the application waiting %s", d)
			}
			if err == nil && code == 200 {
				break
			}
			if err == nil || time.Now().After(deadline) {
				t.Fatalf("the trace agent did not take a span: %d %v", code, err)
			}
			time.Sleep(100 * time.Millisecond) // an SDK's retry backoff
		}
		spans = append(spans, s)
	}
	return spans
}

// Re-pointing: spans the trace agent took while its collector was dead,
// and while no collector was published at all, reach the next collector
// once the agent is pointed at it; the agent is reloaded (same pid), not
// restarted. The resource keeps the application's own attributes; node
// and cluster are added where the application has none.
func TestTraceAgentKeepsSpansThroughARepointing(t *testing.T) {
	first := processtest.StartJaeger(t)
	o := startOtelcolStack(t, nil)
	o.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://" + first.OTLPGRPC})
	etcdtest.Eventually(t, 20*time.Second, func() bool { return o.pid(t) != "" }, "the trace agent does not run")
	pid := o.pid(t)

	// Until it listens, the application's SDK would drop: wait for it.
	var before []processtest.Span
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		s := processtest.NewSpan("hello")
		code, _ := processtest.PostOTLP(o.otlpHTTP, "/v1/traces", processtest.TracesJSON(map[string]string{"service.name": "shop-1", "guid": "shop-1"}, s), time.Second)
		if code == 200 {
			before = append(before, s)
		}
		return code == 200
	}, "the trace agent does not take spans")
	etcdtest.Eventually(t, 20*time.Second, func() bool { return first.Trace(before[0].TraceID) != nil }, "the span did not reach the collector")
	res := first.Trace(before[0].TraceID)[0]
	if res["guid"] != "shop-1" || res["service.name"] != "shop-1" || res["node"] != "n1" || res["cluster"] != "c1" {
		t.Fatalf("resource at the collector: %v", res)
	}

	// The collector dies with its master; the agent queues on disk.
	first.Kill()
	during := o.send(t, "shop-1", 20)
	o.SetCollectors(map[string]string{}) // the dead master's lease expired
	during = append(during, o.send(t, "shop-1", 20)...)
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		q, ok := processtest.Metric(o.telemetry, "otelcol_exporter_queue_size", `exporter="otlp_grpc"`)
		return ok && q >= 1
	}, "the spans for a dead collector are not queued")

	// The next master's collector is published.
	next := processtest.StartJaeger(t)
	o.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://" + next.OTLPGRPC})
	after := o.send(t, "shop-1", 5)
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		got := next.Traces("shop-1")
		for _, s := range append(during, after...) {
			if got[s.TraceID] == nil {
				return false
			}
		}
		return true
	}, "spans taken while the collector was dead did not reach the next one (%d of %d arrived)", len(next.Traces("shop-1")), len(during)+len(after))
	if got := o.pid(t); got != pid {
		t.Fatalf("the trace agent was restarted (pid %s, then %s), not reloaded", pid, got)
	}
	res = next.Trace(during[0].TraceID)[0]
	if res["node"] != "app-says" || res["cluster"] != "c1" || res["guid"] != "shop-1" {
		t.Fatalf("an application's own node was overwritten, or cluster not added: %v", res)
	}
}

// A collector URL published right after the trace agent started (a new
// master elected as the node joins) reloads it without killing it: the
// SIGHUP waits for its health check (otelcol installs its SIGHUP handler
// only once its pipelines have started; a SIGHUP before that killed it
// with exit 129, and it ran again only at the Supervisor's next pass).
func TestTraceAgentReloadedAsItStartsKeepsRunning(t *testing.T) {
	first, next := processtest.StartJaeger(t), processtest.StartJaeger(t)
	o := startOtelcolStack(t, nil)
	o.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://" + first.OTLPGRPC})
	etcdtest.Eventually(t, 20*time.Second, func() bool { return o.pid(t) != "" }, "the trace agent does not run")
	pid := o.pid(t)
	o.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://" + next.OTLPGRPC})

	// Spans go to the first collector until the reload, then to the next.
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		o.send(t, "shop-3", 1)
		return len(next.Traces("shop-3")) > 0
	}, "no span reached the collector published last")
	if got := o.pid(t); got != pid {
		t.Fatalf("the trace agent was restarted (pid %s, then %s), not reloaded", pid, got)
	}
	if b, _ := os.ReadFile(o.d.LogPath("agent-trace-agent-n1")); strings.Count(string(b), "--- agent: starting") != 1 {
		t.Fatalf("the trace agent was started %d times", strings.Count(string(b), "--- agent: starting"))
	}
	if st := o.States(); len(st) != 1 || st[0].Restarts != 0 {
		t.Fatalf("states: %+v", st)
	}
}

// The collector is down and stays down: the trace agent queues up to its
// limit, then drops new spans and counts them; the application is
// answered at once all along. What was queued is sent once a collector
// answers.
func TestFullQueueDropsSpansWithACounterAndNeverBlocks(t *testing.T) {
	o := startOtelcolStack(t, func(c *Config) { c.Stack.TraceAgent.QueueSize = 30 })
	dead := etcdtest.FreeAddr(t)
	o.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://" + dead})
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		code, _ := processtest.PostOTLP(o.otlpHTTP, "/v1/traces", processtest.TracesJSON(nil), time.Second)
		return code == 200
	}, "the trace agent does not take spans")

	const sent = 200
	var spans []processtest.Span
	for len(spans) < sent {
		spans = append(spans, o.send(t, "shop-2", 10)...)
		// One batch of 10 at a time to the exporter, so that the queue
		// fills up to its limit rather than refusing one big batch.
		etcdtest.Eventually(t, 10*time.Second, func() bool {
			out, _ := processtest.Metric(o.telemetry, "otelcol_processor_batch_batch_send_size_sum")
			dropped, _ := processtest.Metric(o.telemetry, "otelcol_exporter_enqueue_failed_spans", `exporter="otlp_grpc"`)
			return int(out+dropped) >= len(spans)
		}, "the batch processor did not pass on %d spans", len(spans))
	}
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		dropped, _ := processtest.Metric(o.telemetry, "otelcol_exporter_enqueue_failed_spans", `exporter="otlp_grpc"`)
		queued, _ := processtest.Metric(o.telemetry, "otelcol_exporter_queue_size", `exporter="otlp_grpc"`)
		return dropped > 0 && queued <= 30
	}, "no dropped spans counted beyond the queue's limit of 30")
	dropped, _ := processtest.Metric(o.telemetry, "otelcol_exporter_enqueue_failed_spans", `exporter="otlp_grpc"`)

	// Every span is either counted as dropped or delivered later.
	next := processtest.StartJaeger(t)
	o.SetCollectors(map[string]string{collectors.JaegerOTLPGRPC: "http://" + next.OTLPGRPC})
	etcdtest.Eventually(t, 30*time.Second, func() bool { return len(next.Traces("shop-2"))+int(dropped) == sent },
		"%d spans sent, %v dropped, %d delivered once a collector answered", sent, dropped, len(next.Traces("shop-2")))
	if n := len(next.Traces("shop-2")); n > 30 {
		t.Fatalf("%d spans delivered after the outage: more than the queue holds", n)
	}
	t.Logf("sent %d spans to a trace agent with a queue of 30 and a dead collector: %v dropped and counted, %d delivered later", sent, dropped, len(next.Traces("shop-2")))
}

// The otelcol shipper ships configured files, and the logs applications
// send as OTLP, to the manager's OTLP/HTTP logs endpoint (a real
// VictoriaLogs) with node and cluster, before any collector is known; what a restarted agent reads again is not sent
// twice (read positions in file_storage).
func TestOtelcolShipperShipsFilesToTheManager(t *testing.T) {
	vl := processtest.StartVictoriaLogs(t)
	logDir := t.TempDir()
	logFile := filepath.Join(logDir, "app.log")
	if err := os.WriteFile(logFile, []byte("first line of app.log\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := startOtelcolStack(t, func(c *Config) {
		c.Manager.LogsURL = vl.OTLPLogs
		c.Stack.Logs.Files = []string{filepath.Join(logDir, "*.log")}
	})
	etcdtest.Eventually(t, 30*time.Second, func() bool { return len(vl.Query(`"first line of app.log"`)) == 1 }, "the file's line is not at the manager")
	rec := vl.Query(`"first line of app.log"`)[0]
	if rec["node"] != "n1" || rec["cluster"] != "c1" || !strings.HasSuffix(rec["log.file.path"], "app.log") {
		t.Fatalf("log record at the manager: %v", rec)
	}

	// An application that sends its logs as OTLP keeps its guid; node and
	// cluster are added.
	code, err := processtest.PostOTLP(o.otlpHTTP, "/v1/logs", processtest.LogsJSON(map[string]string{"guid": "shop-3", "service.name": "shop-3"}, "payment accepted"), 5*time.Second)
	if err != nil || code != 200 {
		t.Fatalf("OTLP logs: %d %v", code, err)
	}
	etcdtest.Eventually(t, 30*time.Second, func() bool { return len(vl.Query(`guid:"shop-3"`)) == 1 }, "the app's OTLP log record is not at the manager")
	if rec := vl.Query(`guid:"shop-3"`)[0]; rec["_msg"] != "payment accepted" || rec["node"] != "n1" || rec["cluster"] != "c1" || rec["service.name"] != "shop-3" {
		t.Fatalf("OTLP log record at the manager: %v", rec)
	}

	// Restart the trace agent; one more line follows, the first is not
	// sent again.
	if err := o.d.Remove(t.Context(), "agent-trace-agent-n1"); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, _ = f.WriteString("line " + strconv.Itoa(i) + " after the restart\n")
	}
	f.Close()
	etcdtest.Eventually(t, 60*time.Second, func() bool { return len(vl.Query(`"after the restart"`)) == 3 }, "lines written after the restart are not at the manager")
	if n := len(vl.Query(`"first line of app.log"`)); n != 1 {
		t.Fatalf("the first line is at the manager %d times", n)
	}
}

// The manager's log endpoint is down: the otelcol shipper queues log
// records up to stack.logs.queue_size, then drops new ones and counts
// them; an application sending OTLP logs is answered at once all along.
// What was queued reaches the manager once it is back at its address.
func TestFullLogQueueDropsRecordsWithACounterAndNeverBlocks(t *testing.T) {
	managerAddr := etcdtest.FreeAddr(t)
	o := startOtelcolStack(t, func(c *Config) {
		c.Manager.LogsURL = "http://" + managerAddr + "/insert/opentelemetry/v1/logs"
		c.Stack.Logs.QueueSize = 30
	})
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		code, _ := processtest.PostOTLP(o.otlpHTTP, "/v1/logs", processtest.LogsJSON(nil), time.Second)
		return code == 200
	}, "the trace agent does not take log records")

	const sent = 200
	resource := map[string]string{"guid": "shop-4", "service.name": "shop-4"}
	failed := func() float64 {
		n, _ := processtest.Metric(o.telemetry, "otelcol_exporter_enqueue_failed_log_records", `exporter="otlp_http/logs"`)
		return n
	}
	for n := 0; n < sent; n += 10 {
		lines := make([]string, 10)
		for i := range lines {
			lines[i] = "order " + strconv.Itoa(n+i) + " placed"
		}
		start := time.Now()
		code, err := processtest.PostOTLP(o.otlpHTTP, "/v1/logs", processtest.LogsJSON(resource, lines...), 5*time.Second)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the shipper kept the application waiting %s", d)
		}
		if err != nil || code != 200 {
			t.Fatalf("the shipper did not take log records: %d %v", code, err)
		}
		// One batch of 10 at a time to the exporter, so that the queue
		// fills up to its limit rather than refusing one big batch.
		etcdtest.Eventually(t, 10*time.Second, func() bool {
			out, _ := processtest.Metric(o.telemetry, "otelcol_processor_batch_batch_send_size_sum")
			return int(out+failed()) >= n+10
		}, "the batch processor did not pass on %d records", n+10)
	}
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		queued, _ := processtest.Metric(o.telemetry, "otelcol_exporter_queue_size", `exporter="otlp_http/logs"`)
		return failed() > 0 && queued <= 30
	}, "no dropped log records counted beyond the queue's limit of 30")
	dropped := failed()

	// The manager comes back where the shipper sends: every record is
	// either counted as dropped or delivered.
	vl := processtest.StartVictoriaLogsAt(t, managerAddr)
	etcdtest.Eventually(t, 60*time.Second, func() bool { return len(vl.Query(`guid:"shop-4"`))+int(dropped) == sent },
		"%d records sent, %v dropped, %d delivered once the manager answered", sent, dropped, len(vl.Query(`guid:"shop-4"`)))
	if n := len(vl.Query(`guid:"shop-4"`)); n > 30 {
		t.Fatalf("%d records delivered after the outage: more than the queue holds", n)
	}
	t.Logf("sent %d log records to a shipper with a queue of 30 and no manager: %v dropped and counted, %d delivered later", sent, dropped, len(vl.Query(`guid:"shop-4"`)))
}
