package slave

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// BenchmarkAPILoad is `make bench-api`: an agent process (built from this
// tree, --driver none) on a Debian etcd process holding 10,000 target
// groups of about 240 bytes each (2.4 MB of values), hit by 1,000
// concurrent GETs per round of one endpoint. It reports the latency of
// every request (p50, p99), the requests that were not 200 or 304, and the
// agent's peak RSS (VmHWM, reset before each endpoint) — the agent's own,
// since it runs as its own process. -benchtime Nx gives N rounds.
//
// Env: API_BENCH_TARGETS (10000), API_BENCH_CONCURRENCY (1000),
// API_BENCH_SMALL=1 for values of about 60 bytes (node label only).
func BenchmarkAPILoad(b *testing.B) {
	targets := envInt(b, "API_BENCH_TARGETS", 10000)
	conc := envInt(b, "API_BENCH_CONCURRENCY", 1000)
	endpoint := etcdtest.StartProcess(b)
	cli := etcdtest.NewClient(b, endpoint)
	keys := etcd.NewKeys("/agent", "bench")
	putBenchTargets(b, cli, keys, targets)

	api := etcdtest.FreeAddr(b)
	pid := startBenchAgent(b, "join", "--etcd", endpoint, "--node", "bench", "--cluster", "bench",
		"--listen", api, "--data-dir", b.TempDir(), "--ttl", "5s", "--driver", "none", "--log-level", "warn")
	base := "http://" + api
	// Like Prometheus, the client accepts gzip; it does not decompress, so
	// that the latency is the agent's (time to deliver the answer), not
	// this process's CPU.
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxIdleConns: conc, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	etcdtest.Eventually(b, 30*time.Second, func() bool {
		resp, err := client.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "agent never ready")
	joined := procKB(b, pid, "VmRSS")
	etcdtest.Eventually(b, 30*time.Second, func() bool {
		resp, err := http.Get(base + "/sd/http") // gzip, decoded, as Prometheus
		if err == nil {
			defer http.DefaultClient.CloseIdleConnections()
		}
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200 && strings.Count(string(body), `"targets"`) >= targets
	}, "agent never served %d targets", targets)
	idle := procKB(b, pid, "VmRSS")

	get := func(path, etag string) (*http.Response, error) {
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept-Encoding", "gzip")
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		return client.Do(req)
	}
	for _, tc := range []struct {
		name, path string
		revalidate bool // send If-None-Match with the ETag of a first answer, as a poller would
	}{
		{"sd_http", "/sd/http", false},
		{"sd_http_if_none_match", "/sd/http", true},
		{"api_v1_status", "/api/v1/status", false},
		{"api_v1_targets", "/api/v1/targets", false},
	} {
		path := tc.path
		b.Run(tc.name, func(b *testing.B) {
			etag := ""
			if tc.revalidate {
				resp, err := get(path, "")
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				etag = resp.Header.Get("ETag")
			}
			_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) // reset VmHWM
			var lat []time.Duration
			var mu sync.Mutex
			failed, bytes := 0, int64(0)
			b.ResetTimer()
			for range b.N {
				start := make(chan struct{})
				var wg sync.WaitGroup
				for range conc {
					wg.Go(func() {
						<-start
						t0 := time.Now()
						resp, err := get(path, etag)
						n := int64(0)
						ok := err == nil
						if ok {
							n, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							ok = resp.StatusCode == 200 || resp.StatusCode == 304
						}
						d := time.Since(t0)
						mu.Lock()
						lat = append(lat, d)
						bytes += n
						if !ok {
							failed++
						}
						mu.Unlock()
					})
				}
				close(start)
				wg.Wait()
			}
			b.StopTimer()
			slices.Sort(lat)
			p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
			peak := procKB(b, pid, "VmHWM")
			sessions := "?"
			if resp, err := client.Get(base + "/metrics"); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				for _, l := range strings.Split(string(body), "\n") {
					if v, ok := strings.CutPrefix(l, "agent_sessions_total "); ok {
						sessions = v
					}
				}
			}
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(peak)/1024, "peak-rss-MiB")
			b.ReportMetric(float64(failed), "failed")
			b.Logf("%s (ETag %q): %d targets, %d rounds of %d concurrent GETs: p50 %s p99 %s, failed %d, %.1f MiB received; agent RSS joined %.1f MiB, idle %.1f MiB, peak %.1f MiB; etcd sessions so far %s (1: never lost)",
				path, etag, targets, b.N, conc, p50.Round(time.Millisecond), p99.Round(time.Millisecond), failed,
				float64(bytes)/(1<<20), float64(joined)/1024, float64(idle)/1024, float64(peak)/1024, sessions)
		})
	}
}

// putBenchTargets writes n target groups of 100 nodes, as agents publish
// them, with labels that make each value about 240 bytes.
func putBenchTargets(b *testing.B, cli *clientv3.Client, keys etcd.Keys, n int) {
	b.Helper()
	var ops []clientv3.Op
	flush := func() {
		if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := range n {
		node := fmt.Sprintf("node-%03d", i%100)
		val := fmt.Sprintf(`{"targets":["10.%d.%d.%d:9100"],"labels":{"node":%q,"cluster":"bench","rack":"rack-%02d","team":"observability-platform","env":"production","region":"eu-central-1","zone":"eu-central-1a","owner":"sre-oncall@example.com"}}`,
			i/65536%256, i/256%256, i%256, node, i%40)
		if os.Getenv("API_BENCH_SMALL") == "1" {
			val = fmt.Sprintf(`{"targets":["10.%d.%d.%d:9100"],"labels":{"node":%q}}`, i/65536%256, i/256%256, i%256, node)
		}
		ops = append(ops, clientv3.OpPut(keys.Target(node, "node", strconv.Itoa(i/100)), val))
		if len(ops) == 100 {
			flush()
		}
	}
	if len(ops) > 0 {
		flush()
	}
}

// startBenchAgent builds the agent from this tree and runs it with args in
// its own process group, killed when the benchmark ends; it returns the
// pid.
func startBenchAgent(b *testing.B, args ...string) int {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "agent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/agentproj/agent/cmd/agent").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	log, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if b.Failed() {
			out, _ := os.ReadFile(log.Name())
			b.Logf("agent log:\n%s", out)
		}
	})
	return cmd.Process.Pid
}

// procKB reads a kB field (VmRSS, VmHWM) of /proc/<pid>/status.
func procKB(b *testing.B, pid int, field string) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s: must be a positive integer, got %q", name, v)
	}
	return n
}
