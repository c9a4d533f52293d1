package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/process/processtest"
	"github.com/agentproj/agent/master/collectors"
)

// traceAgentProc is an agent of the process-driver traces test with the
// addresses of its collectors.
type traceAgentProc struct {
	*agentProc
	dataDir, jaegerGRPC, traceHTTP, logFile string
}

// startTracesAgent runs an agent with the process driver whose stack is
// the Jaeger collector and the trace agent from the testbins (Prometheus
// and node_exporter off), shipping logs with otelcol to logsURL and traces
// to the manager's OTLP endpoint.
func startTracesAgent(t *testing.T, endpoint, node, traces, logsURL string) *traceAgentProc {
	t.Helper()
	a := &traceAgentProc{dataDir: t.TempDir(), jaegerGRPC: etcdtest.FreeAddr(t), traceHTTP: etcdtest.FreeAddr(t)}
	a.logFile = filepath.Join(t.TempDir(), "app.log")
	cfg := filepath.Join(t.TempDir(), "agent.toml")
	toml := fmt.Sprintf(`
[stack.prometheus]
enabled = false
[stack.node_exporter]
enabled = false
[stack.jaeger]
binary = %q
otlp_grpc_listen = %q
otlp_http_listen = %q
health_listen = %q
telemetry_listen = %q
[stack.trace_agent]
binary = %q
otlp_grpc_listen = %q
otlp_http_listen = %q
health_listen = %q
telemetry_listen = %q
[stack.logs]
files = [%q]
[manager]
logs_url = %q
traces_otlp_endpoint = %q
`, processtest.Testbin(t, "jaeger", "jaeger"), a.jaegerGRPC, etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t),
		processtest.Testbin(t, "otelcol", "otelcol"), etcdtest.FreeAddr(t), a.traceHTTP, etcdtest.FreeAddr(t), etcdtest.FreeAddr(t),
		a.logFile, logsURL, traces)
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeProcesses(t, a.dataDir) })
	a.agentProc = startAgentIn(t, endpoint, node, "2s", a.dataDir, "--config", cfg, "--driver", "process")
	return a
}

// spanSender sends one span every interval to a trace agent, as an
// instrumented application with an SDK would (trying a refused connection
// again for up to 5 s), and records what the trace agent took.
type spanSender struct {
	mu       sync.Mutex
	accepted []appSpan
	refused  int
	stop     chan struct{}
	done     chan struct{}
}

func startSpanSender(url, guid string, interval time.Duration) *spanSender {
	s := &spanSender{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for seq := 1; ; seq++ {
			start := time.Now()
			span := processtest.NewSpan("order")
			body := processtest.TracesJSON(map[string]string{"guid": guid, "service.name": guid}, span)
			ok := false
			for deadline := start.Add(5 * time.Second); !ok && time.Now().Before(deadline); {
				code, err := processtest.PostOTLP(url, "/v1/traces", body, 2*time.Second)
				ok = err == nil && code == 200
				if !ok {
					time.Sleep(100 * time.Millisecond) // an SDK's retry backoff
				}
			}
			s.mu.Lock()
			if ok {
				s.accepted = append(s.accepted, appSpan{seq: seq, trace: span.TraceID, accepted: true, at: start})
			} else {
				s.refused++
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-time.After(time.Until(start.Add(interval))):
			}
		}
	}()
	return s
}

func (s *spanSender) Stop() []appSpan {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

func (s *spanSender) acceptedAfter(t time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.accepted {
		if a.at.After(t) {
			n++
		}
	}
	return n
}

// The process driver runs the whole trace and log path from local
// binaries (paths in the config): two agents, each with the real trace
// agent, the master with the real Jaeger collector, a manager-side Jaeger
// and VictoriaLogs. An application on the node that is not master sends a
// span every 100 ms; a log file of that node is shipped. Then the master's
// host dies (kill -9 of its agent and of its collector process): spans
// keep arriving through the new master's collector, and none that the
// trace agent took after the new collector URL appeared is lost.
func TestTracesAndLogsWithTheProcessDriver(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	jaeger := processtest.StartJaeger(t)
	logs := processtest.StartVictoriaLogs(t)
	endpoint := startEtcd(t)
	agents := map[string]*traceAgentProc{}
	for _, n := range []string{"a", "b"} {
		agents[n] = startTracesAgent(t, endpoint, n, "http://"+jaeger.OTLPGRPC, logs.OTLPLogs)
	}
	for _, a := range agents {
		etcdtest.Eventually(t, 30*time.Second, a.ready, "agent %s not ready", a.node)
	}
	master := masterOf(t, endpoint)
	other := map[string]string{"a": "b", "b": "a"}[master]
	app := agents[other]

	// A line of a configured file reaches the manager with node and cluster.
	if err := os.WriteFile(app.logFile, []byte("payment service started\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 60*time.Second, func() bool { return len(logs.Query(`"payment service started"`)) == 1 }, "the log file's line is not at the manager")
	if rec := logs.Query(`"payment service started"`)[0]; rec["node"] != other || rec["cluster"] != "e2e" {
		t.Fatalf("log record: %v", rec)
	}

	const guid = "pay-1"
	var sender *spanSender
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		code, _ := processtest.PostOTLP("http://"+app.traceHTTP, "/v1/traces", processtest.TracesJSON(nil), time.Second)
		return code == 200
	}, "the trace agent of %s does not take spans", other)
	sender = startSpanSender("http://"+app.traceHTTP, guid, 100*time.Millisecond)
	defer func() {
		if sender != nil {
			sender.Stop()
		}
	}()
	etcdtest.Eventually(t, 60*time.Second, func() bool { return len(jaeger.Traces(guid)) >= 5 }, "no span of %s at the manager", guid)
	for _, res := range jaeger.Traces(guid) {
		if r := res[0]; r["guid"] != guid || r["node"] != other || r["cluster"] != "e2e" {
			t.Fatalf("span resource at the manager: %v", r)
		}
		break
	}

	// The master's host dies.
	cli := etcdClient(t, endpoint)
	key := etcd.NewKeys("/agent", "e2e").Collector(collectors.JaegerOTLPGRPC)
	want := `"url":"http://` + agents[other].jaegerGRPC + `"`
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	wch := cli.Watch(wctx, key)
	killedAt := time.Now()
	collectorPid := pidOf(t, agents[master].dataDir, "agent-jaeger-"+master)
	agents[master].kill()
	if collectorPid == "" {
		t.Fatal("no pid file of the master's collector")
	}
	// The process driver runs each workload in its own process group.
	if pid, err := strconv.Atoi(collectorPid); err != nil || syscall.Kill(-pid, syscall.SIGKILL) != nil {
		t.Fatalf("kill -9 of the master's collector (pid %s): %v", collectorPid, err)
	}
	var appeared time.Time
	func() {
		timeout := time.After(60 * time.Second)
		for {
			select {
			case wr := <-wch:
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypePut && strings.Contains(string(ev.Kv.Value), want) {
						appeared = time.Now()
						return
					}
				}
			case <-timeout:
				t.Fatalf("%s did not publish its collector", other)
			}
		}
	}()
	stopWatch()
	etcdtest.Eventually(t, 60*time.Second, func() bool { return sender.acceptedAfter(appeared) >= 30 }, "the trace agent takes no spans after the failover")
	spans := sender.Stop()
	refused := sender.refused
	sender = nil

	var lost, lostAfter int
	var settled time.Time
	for deadline := time.Now().Add(60 * time.Second); ; {
		have := jaeger.Traces(guid)
		lost, lostAfter = 0, 0
		for _, s := range spans {
			if have[s.trace] == nil {
				lost++
				if s.at.After(appeared) {
					lostAfter++
				}
			}
		}
		if lostAfter == 0 && settled.IsZero() {
			settled = time.Now()
		}
		if lost == 0 || time.Now().After(deadline) || (!settled.IsZero() && time.Since(settled) > 10*time.Second) {
			break
		}
		time.Sleep(500 * time.Millisecond) // poll the manager's Jaeger
	}
	t.Logf("process driver failover: new collector URL %.1fs after kill -9; %d spans taken by the trace agent, %d refused, %d lost (%d of them taken after the new URL appeared)",
		appeared.Sub(killedAt).Seconds(), len(spans), refused, lost, lostAfter)
	if lostAfter > 0 {
		t.Fatalf("%d spans taken after the new collector URL appeared were lost", lostAfter)
	}
}
