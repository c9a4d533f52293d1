package processtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/freeaddr"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
)

// Proc is a component process a test started; it is killed (with its
// process group) when the test ends, and its log is shown if the test
// failed.
type Proc struct {
	Cmd *exec.Cmd
	Log string
	// Done is closed once the process has exited.
	Done chan struct{}
}

// Start runs bin with args in its own process group, output to a log file
// under a temporary folder.
func Start(t testing.TB, name, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Log: filepath.Join(t.TempDir(), name+".log"), Done: make(chan struct{})}
	f, err := os.Create(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Stdout, p.Cmd.Stderr = f, f
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.Cmd.Wait(); close(p.Done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.Log)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("--- end of the log of %s:\n%s", name, b)
		}
	})
	return p
}

// Kill sends SIGKILL to the process group and waits for the process.
func (p *Proc) Kill() {
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.Done
}

// freeAddr returns a loopback host:port reserved for the test
// (freeaddr.Reserve): the components it starts bind it seconds later.
func freeAddr(t testing.TB) string {
	t.Helper()
	return freeaddr.Reserve(t)
}

// HTTPGet returns the body of a 200 answer, or "" for anything else.
func HTTPGet(u string) string {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

// Jaeger is a Jaeger v2 (testbin jaeger) that stores what it receives in
// memory and answers its query API: the manager's trace store in tests.
type Jaeger struct {
	*Proc
	// OTLPGRPC and OTLPHTTP are its receivers (host:port); Query is the
	// base URL of its query API.
	OTLPGRPC, OTLPHTTP, Query string
}

// StartJaeger runs a manager-side Jaeger on free loopback ports and waits
// until it is healthy.
func StartJaeger(t testing.TB) *Jaeger {
	t.Helper()
	bin := Testbin(t, "jaeger", "jaeger")
	j := &Jaeger{OTLPGRPC: freeAddr(t), OTLPHTTP: freeAddr(t), Query: "http://" + freeAddr(t)}
	health, queryGRPC := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: %s
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
processors:
  batch:
    timeout: 50ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, health, strings.TrimPrefix(j.Query, "http://"), queryGRPC, j.OTLPGRPC, j.OTLPHTTP)
	path := filepath.Join(t.TempDir(), "jaeger.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	j.Proc = Start(t, "jaeger-manager", bin, "--config=file:"+path)
	poll.Until(t, 30*time.Second, func() bool { return HTTPGet("http://"+health+"/status") != "" }, "manager-side Jaeger not healthy on %s", health)
	return j
}

// Trace returns the resource attributes (Jaeger's process tags, and
// service.name) of each span of the trace, or nil when Jaeger does not
// have it.
func (j *Jaeger) Trace(traceID string) []map[string]string {
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	if json.Unmarshal([]byte(HTTPGet(j.Query+"/api/traces/"+traceID)), &body) != nil || len(body.Data) == 0 {
		return nil
	}
	return body.Data[0].resources()
}

// Traces returns every trace of service (a guid) that Jaeger holds,
// keyed by trace id (without leading zeros, as Jaeger's API writes it),
// with the resource attributes of their spans.
func (j *Jaeger) Traces(service string) map[string][]map[string]string {
	q := url.Values{"service": {service}, "limit": {"100000"}, "lookback": {"24h"}}
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	if json.Unmarshal([]byte(HTTPGet(j.Query+"/api/traces?"+q.Encode())), &body) != nil {
		return nil
	}
	out := map[string][]map[string]string{}
	for _, tr := range body.Data {
		out[tr.TraceID] = tr.resources()
	}
	return out
}

type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		ProcessID string `json:"processID"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
		Tags        []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"processes"`
}

func (tr jaegerTrace) resources() []map[string]string {
	var out []map[string]string
	for _, s := range tr.Spans {
		p := tr.Processes[s.ProcessID]
		m := map[string]string{"service.name": p.ServiceName}
		for _, tag := range p.Tags {
			m[tag.Key] = fmt.Sprint(tag.Value)
		}
		out = append(out, m)
	}
	return out
}

// VictoriaLogs is a VictoriaLogs (testbin victorialogs): the manager's log
// store in tests.
type VictoriaLogs struct {
	*Proc
	// URL is its base URL; OTLPLogs the OTLP/HTTP logs endpoint.
	URL, OTLPLogs string
}

// StartVictoriaLogs runs VictoriaLogs on a free loopback port and waits
// until it answers.
func StartVictoriaLogs(t testing.TB) *VictoriaLogs {
	t.Helper()
	return StartVictoriaLogsAt(t, freeAddr(t))
}

// StartVictoriaLogsAt is StartVictoriaLogs on addr (host:port): a manager
// that comes back where the shippers were told to send.
func StartVictoriaLogsAt(t testing.TB, addr string) *VictoriaLogs {
	t.Helper()
	bin := Testbin(t, "victorialogs", "victoria-logs")
	v := &VictoriaLogs{URL: "http://" + addr, OTLPLogs: "http://" + addr + "/insert/opentelemetry/v1/logs"}
	v.Proc = Start(t, "victoria-logs", bin, "-httpListenAddr="+addr, "-storageDataPath="+filepath.Join(t.TempDir(), "data"))
	poll.Until(t, 30*time.Second, func() bool { return HTTPGet(v.URL+"/health") != "" }, "VictoriaLogs not ready on %s", addr)
	return v
}

// Query runs a LogsQL query and returns the matching records' fields.
func (v *VictoriaLogs) Query(q string) []map[string]string {
	body := HTTPGet(v.URL + "/select/logsql/query?" + url.Values{"query": {q}}.Encode())
	var out []map[string]string
	for _, line := range strings.Split(body, "\n") {
		var rec map[string]string
		if json.Unmarshal([]byte(line), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// Metric returns the sum of the samples of a metric (all label sets whose
// text contains every one of match) in a Prometheus text exposition at
// metricsURL, and whether any was found. A counter may be named with or
// without _total: collector v0.139 (Jaeger) adds it, v0.165 does not.
func Metric(metricsURL, name string, match ...string) (float64, bool) {
	var sum float64
	found := false
	for _, line := range strings.Split(HTTPGet(metricsURL), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") &&
			!strings.HasPrefix(line, name+"_total{") && !strings.HasPrefix(line, name+"_total ") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(line, m)
		}
		if !ok {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}
