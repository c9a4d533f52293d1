package nodestack

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/process/processtest"
	"github.com/agentproj/agent/stackconfig"
)

// BenchmarkTraceAgentForward measures the node's trace agent (the real
// otelcol, with the config the agent renders: memory_limiter, resource,
// batch, otlp_grpc exporter behind the queue on disk) forwarding spans to
// a collector: spans per CPU-second of the trace agent's process and its
// peak RSS. Applications send OTLP/HTTP protobuf, 100 spans a request
// from 4 senders, as SDKs batch; the collector is a second otelcol that
// discards what it receives. Each iteration is one request; the numbers
// count only the trace agent's own CPU (utime+stime from /proc).
//
//	make bench-traces
func BenchmarkTraceAgentForward(b *testing.B) {
	bin := processtest.Testbin(b, "otelcol", "otelcol")
	dir := b.TempDir()
	sinkGRPC, sinkTelemetry := etcdtest.FreeAddr(b), etcdtest.FreeAddr(b)
	sink := fmt.Sprintf(`receivers: {otlp: {protocols: {grpc: {endpoint: %q}}}}
exporters: {debug: {verbosity: basic, sampling_initial: 1, sampling_thereafter: 1000}}
service:
  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
  telemetry:
    logs: {level: warn}
    metrics: {level: normal, readers: [{pull: {exporter: {prometheus: {host: 127.0.0.1, port: %s}}}}]}
`, sinkGRPC, strings.Split(sinkTelemetry, ":")[1])
	writeFile(b, filepath.Join(dir, "sink.yml"), sink)
	processtest.Start(b, "sink", bin, "--config=file:"+filepath.Join(dir, "sink.yml"))

	in, agent := startTraceAgent(b, bin, dir, "http://"+sinkGRPC, spansProto(1))
	url := "http://" + in.HTTPListen + "/v1/traces"
	sinkMetrics := "http://" + sinkTelemetry + "/metrics"
	etcdtest.Eventually(b, 30*time.Second, func() bool {
		n, _ := processtest.Metric(sinkMetrics, "otelcol_receiver_accepted_spans")
		return n >= 1
	}, "the collector gets nothing")

	const perRequest, senders = 100, 4
	body := spansProto(perRequest)
	idle := float64(rss(b, agent.Cmd.Process.Pid, "VmRSS:")) / (1 << 20)
	cpu0 := cpuSeconds(b, agent.Cmd.Process.Pid)
	start := time.Now()
	b.ResetTimer()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sendErr error
	work := make(chan struct{})
	for range senders {
		wg.Go(func() {
			for range work {
				if err := post(url, body); err != nil {
					mu.Lock()
					sendErr = err
					mu.Unlock()
				}
			}
		})
	}
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	if sendErr != nil {
		b.Fatal(sendErr)
	}
	want := float64(1 + b.N*perRequest)
	etcdtest.Eventually(b, 5*time.Minute, func() bool {
		n, _ := processtest.Metric(sinkMetrics, "otelcol_receiver_accepted_spans")
		return n >= want
	}, "the collector did not get every span")
	b.StopTimer()
	cpu := cpuSeconds(b, agent.Cmd.Process.Pid) - cpu0
	spans := float64(b.N * perRequest)
	b.ReportMetric(spans/cpu, "spans/cpu-s")
	b.ReportMetric(spans/time.Since(start).Seconds(), "spans/s")
	b.ReportMetric(idle, "idle-RSS-MiB")
	b.ReportMetric(float64(rss(b, agent.Cmd.Process.Pid, "VmHWM:"))/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(0, "ns/op")
}

func writeFile(b *testing.B, path, content string) {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
}

func post(url string, body []byte) error {
	resp, err := http.Post(url, "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// cpuSeconds is utime+stime of pid (Linux, 100 ticks a second).
func cpuSeconds(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// rss is field (VmRSS: now, VmHWM: peak) of pid in bytes.
func rss(b *testing.B, pid int, field string) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// spansProto is an OTLP ExportTraceServiceRequest of n spans of one
// service, encoded by hand (the agent has no OTLP library): resource
// {service.name, guid}, one scope, spans with ids, name, kind, times and
// two attributes, as an instrumented HTTP handler sends.
func spansProto(n int) []byte {
	str := func(field protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, field, protowire.BytesType), s)
	}
	msg := func(field protowire.Number, parts ...[]byte) []byte {
		body := bytes.Join(parts, nil)
		return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), body)
	}
	kv := func(field protowire.Number, k, v string) []byte { // KeyValue{key, AnyValue{string_value}}
		return msg(field, str(1, k), msg(2, str(1, v)))
	}
	fixed := func(field protowire.Number, v uint64) []byte {
		return protowire.AppendFixed64(protowire.AppendTag(nil, field, protowire.Fixed64Type), v)
	}
	now := uint64(time.Now().UnixNano())
	var spans [][]byte
	for range n {
		var id [24]byte
		_, _ = rand.Read(id[:])
		kind := protowire.AppendVarint(protowire.AppendTag(nil, 6, protowire.VarintType), 2)
		spans = append(spans, msg(2, // ScopeSpans.spans
			msg(1, id[:16]), msg(2, id[16:]), // trace_id, span_id
			str(5, "GET /orders/{id}"), kind, fixed(7, now-2_000_000), fixed(8, now),
			kv(9, "http.request.method", "GET"), kv(9, "url.path", "/orders/12345"),
		))
	}
	scope := msg(2, append([][]byte{msg(1, str(1, "bench"))}, spans...)...) // ResourceSpans.scope_spans
	resource := msg(1, kv(1, "service.name", "shop-1"), kv(1, "guid", "shop-1"))
	return msg(1, resource, scope) // ExportTraceServiceRequest.resource_spans
}

// BenchmarkTraceAgentQueueOnDisk measures what the trace agent's queue on
// disk costs while the master's collector is unreachable: bytes of its
// storage folder per queued span (the spans of BenchmarkTraceAgentForward:
// 100 a request), and so the disk a full default queue takes. Each
// iteration is one request of 100 spans; keep b.N*100 below the default
// queue size, or the surplus is dropped (and counted).
//
//	make bench-traces
func BenchmarkTraceAgentQueueOnDisk(b *testing.B) {
	bin := processtest.Testbin(b, "otelcol", "otelcol")
	dir := b.TempDir()
	// A collector address nobody listens on; the probe holds no span.
	in, agent := startTraceAgent(b, bin, dir, "http://"+etcdtest.FreeAddr(b), spansProto(0))
	url := "http://" + in.HTTPListen + "/v1/traces"
	metrics := "http://" + in.TelemetryListen + "/metrics"
	empty := dirSize(b, in.StorageDir)

	const perRequest = 100
	body := spansProto(perRequest)
	b.ResetTimer()
	for range b.N {
		if err := post(url, body); err != nil {
			b.Fatal(err)
		}
	}
	spans := float64(b.N * perRequest)
	etcdtest.Eventually(b, 2*time.Minute, func() bool {
		queued, _ := processtest.Metric(metrics, "otelcol_exporter_queue_size", `exporter="otlp_grpc"`)
		dropped, _ := processtest.Metric(metrics, "otelcol_exporter_enqueue_failed_spans", `exporter="otlp_grpc"`)
		return queued+dropped >= spans
	}, "the queue did not take the %v spans", spans)
	b.StopTimer()
	queued, _ := processtest.Metric(metrics, "otelcol_exporter_queue_size", `exporter="otlp_grpc"`)
	used := float64(dirSize(b, in.StorageDir) - empty)
	b.ReportMetric(queued, "spans-queued")
	b.ReportMetric(used/queued, "disk-B/span")
	b.ReportMetric(used/queued*float64(in.QueueSize)/(1<<20), "full-queue-MiB")
	b.ReportMetric(float64(rss(b, agent.Cmd.Process.Pid, "VmHWM:"))/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(0, "ns/op")
}

// startTraceAgent runs the trace agent (otelcol at bin) with the default
// stack's memory limit and queue size, its config and storage under dir,
// forwarding to collector, and waits until it takes the request probe.
func startTraceAgent(b *testing.B, bin, dir, collector string, probe []byte) (stackconfig.TraceAgentInput, *processtest.Proc) {
	b.Helper()
	in := stackconfig.TraceAgentInput{
		Node: "bench", Cluster: "bench", GRPCListen: etcdtest.FreeAddr(b), HTTPListen: etcdtest.FreeAddr(b),
		TelemetryListen: etcdtest.FreeAddr(b), StorageDir: filepath.Join(dir, "storage"),
		MemoryLimitMiB: stackconfig.DefaultStack.TraceAgent.MemoryLimitMiB,
		CollectorURL:   collector, QueueSize: stackconfig.DefaultStack.TraceAgent.QueueSize,
	}
	yml, err := stackconfig.RenderTraceAgent(in)
	if err != nil {
		b.Fatal(err)
	}
	writeFile(b, filepath.Join(dir, "agent.yml"), string(yml))
	agent := processtest.Start(b, "trace-agent", bin, "--config=file:"+filepath.Join(dir, "agent.yml"))
	url := "http://" + in.HTTPListen + "/v1/traces"
	etcdtest.Eventually(b, 30*time.Second, func() bool { return post(url, probe) == nil }, "the trace agent does not take spans")
	return in, agent
}

// dirSize is the disk space (allocated blocks) of the files under dir.
func dirSize(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}
