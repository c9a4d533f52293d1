package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/drivers/docker/dockertest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/slave/monitor"
	"github.com/agentproj/agent/stackconfig"
)

// BenchmarkNodeMonitor measures the node monitor on real processes and
// containers, side by side with Debian's prometheus-process-exporter
// watching the same processes (`make bench-monitor`):
//
//   - agent/procs=N: CPU time (cpu-ms/op) and allocations of one refresh
//     plus one scrape of /metrics/monitor, with N processes in one group
//     (selected by name), in this test process;
//   - process-exporter/procs=N: the exporter's own CPU time per scrape of
//     the same N processes (it reads /proc when scraped), with its
//     defaults (threads and smaps on) and with both off;
//   - agent/procs=1000+containers=50: the same with 50 containers of a
//     real dockerd;
//   - agent-process/...: an agent process (external etcd, driver none)
//     with the monitor at a 1s interval: its CPU per second and per
//     refresh, whole process, its Go heap in use and its RSS (rss-MiB)
//     after ten refreshes, with the monitor off as the baseline.
func BenchmarkNodeMonitor(b *testing.B) {
	exporter := requireBinary(b, "prometheus-process-exporter", "prometheus-process-exporter")
	names := map[int]string{100: "monb100", 1000: "monb1000"}
	for n, name := range names {
		startSleepers(b, name, n)
	}
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("agent/procs=%d", n), func(b *testing.B) {
			benchRefresh(b, monitorOf(b, names[n], nil))
		})
		for _, mode := range []struct{ name, flags string }{
			{"defaults", ""},
			{"no-threads-no-smaps", "-threads=false -gather-smaps=false"},
		} {
			b.Run(fmt.Sprintf("process-exporter/procs=%d/%s", n, mode.name), func(b *testing.B) {
				benchExporter(b, exporter, names[n], strings.Fields(mode.flags))
			})
		}
	}

	e := dockertest.Start(b)
	image := "agent-test/bench:1"
	dockertest.BusyboxImage(b, e.Client, image, "#!/bin/sh\nexec sleep 2147483647\n", nil)
	for i := range 50 {
		startContainer(b, e, image, fmt.Sprintf("monbench-%02d", i))
	}
	b.Run("agent/procs=1000+containers=50", func(b *testing.B) {
		benchRefresh(b, monitorOf(b, names[1000], e))
	})

	b.Setenv("DOCKER_HOST", e.Host)
	endpoint := startEtcd(b)
	for _, on := range []bool{false, true} {
		name := "agent-process/monitor-off"
		if on {
			name = "agent-process/procs=1000+containers=50"
		}
		b.Run(name, func(b *testing.B) { benchAgentProcess(b, endpoint, names[1000], on) })
	}
}

// startSleepers runs n processes named name (a copy of sleep), killed when
// the benchmark ends.
func startSleepers(b *testing.B, name string, n int) {
	src, err := exec.LookPath("sleep")
	if err != nil {
		b.Fatal(err)
	}
	body, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(b.TempDir(), name)
	if err := os.WriteFile(bin, body, 0o755); err != nil {
		b.Fatal(err)
	}
	for range n {
		cmd := exec.Command(bin, "3600")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
}

func startContainer(b *testing.B, e *dockertest.Engine, image, name string) {
	ctx := context.Background()
	init := true
	resp, err := e.Client.ContainerCreate(ctx, &container.Config{Image: image},
		&container.HostConfig{NetworkMode: "host", Init: &init}, &network.NetworkingConfig{}, nil, name)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Client.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		b.Fatal(err)
	}
}

// monitorOf is a monitor of one group (the processes named comm) and, with
// an engine, its containers.
func monitorOf(b *testing.B, comm string, e *dockertest.Engine) *monitor.Monitor {
	cfg := monitor.Config{Monitor: stackconfig.DefaultMonitor}
	cfg.Containers = e != nil
	if e != nil {
		cfg.Docker = e.Client
	}
	cfg.Processes = []stackconfig.MonitorProcess{{Name: comm, Comm: comm}}
	m, err := monitor.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// benchRefresh times refresh + scrape and reports their CPU time.
func benchRefresh(b *testing.B, m *monitor.Monitor) {
	h := m.Handler()
	m.Refresh(context.Background()) // the first sight of every process
	b.ReportAllocs()
	b.ResetTimer()
	cpu := selfCPU()
	for range b.N {
		m.Refresh(context.Background())
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", monitor.Path, nil))
	}
	b.ReportMetric((selfCPU()-cpu).Seconds()*1000/float64(b.N), "cpu-ms/op")
	s := m.Snapshot()
	procs := 0
	for _, g := range s.Groups {
		procs += g.Procs
	}
	b.ReportMetric(float64(procs), "procs")
	b.ReportMetric(float64(len(s.Containers)), "containers")
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time of another process, from /proc/<pid>/stat.
func procCPU(b *testing.B, pid int) time.Duration {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

// benchExporter runs process-exporter on the processes named comm and
// reports its CPU time per scrape.
func benchExporter(b *testing.B, bin, comm string, flags []string) {
	cfg := filepath.Join(b.TempDir(), "process-exporter.yml")
	yml := fmt.Sprintf("process_names:\n  - name: %q\n    comm: [%q]\n", comm, comm)
	if err := os.WriteFile(cfg, []byte(yml), 0o644); err != nil {
		b.Fatal(err)
	}
	addr := etcdtest.FreeAddr(b)
	p := startProc(b, "process-exporter", bin, append([]string{"-config.path", cfg, "-web.listen-address", addr}, flags...)...)
	url := "http://" + addr + "/metrics"
	etcdtest.Eventually(b, 10*time.Second, func() bool { return httpCode(url) == 200 }, "process-exporter not up")
	scrape := func() string {
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body)
	}
	first := scrape()
	want := fmt.Sprintf(`namedprocess_namegroup_num_procs{groupname=%q} `, comm)
	if !strings.Contains(first, want) {
		b.Fatalf("process-exporter does not see the group %s", comm)
	}
	b.ResetTimer()
	cpu := procCPU(b, p.cmd.Process.Pid)
	for range b.N {
		scrape()
	}
	b.ReportMetric((procCPU(b, p.cmd.Process.Pid)-cpu).Seconds()*1000/float64(b.N), "cpu-ms/op")
}

func httpBody(b *testing.B, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		b.Logf("GET %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// benchAgentProcess runs an agent with the monitor on or off and reports
// its RSS after ten refreshes and, with the monitor on, its CPU time per
// refresh.
func benchAgentProcess(b *testing.B, endpoint, comm string, on bool) {
	cfg := filepath.Join(b.TempDir(), "agent.toml")
	toml := fmt.Sprintf("[monitor]\nenabled = %v\ninterval = \"1s\"\n[[monitor.processes]]\nname = %q\ncomm = %q\n", on, comm, comm)
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		b.Fatal(err)
	}
	a := startAgent(b, endpoint, "bench", "5s", "--config", cfg)
	etcdtest.Eventually(b, 30*time.Second, a.ready, "agent not ready")
	pid := a.cmd.Process.Pid
	refreshes := func() float64 {
		resp, err := http.Get("http://" + a.api + "/metrics")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "agent_monitor_refreshes_total "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return 0
	}
	// One measurement whatever b.N: a window of ten refreshes is the
	// sample (ns/op means nothing here). The window is slept through, not
	// polled: scraping the agent would cost it CPU and memory too.
	r0, cpu0 := refreshes(), procCPU(b, pid)
	time.Sleep(10*time.Second + 500*time.Millisecond)
	r1, cpu1 := refreshes(), procCPU(b, pid)
	b.ReportMetric((cpu1-cpu0).Seconds()*1000/10.5, "cpu-ms/s")
	if on {
		if r1-r0 < 9 {
			b.Fatalf("%v refreshes in 10.5s at a 1s interval", r1-r0)
		}
		b.ReportMetric((cpu1-cpu0).Seconds()*1000/(r1-r0), "cpu-ms/refresh")
	}
	b.StopTimer()
	if body := httpBody(b, "http://"+a.api+"/metrics"); body != "" {
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				b.ReportMetric(f/(1<<20), "heap-inuse-MiB")
			}
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		for key, unit := range map[string]string{"VmRSS:": "rss-MiB", "VmHWM:": "peak-rss-MiB"} {
			if v, ok := strings.CutPrefix(line, key); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				b.ReportMetric(kb/1024, unit)
			}
		}
	}
}
