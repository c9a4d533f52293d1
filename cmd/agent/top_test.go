package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/slave/monitor"
	"github.com/agentproj/agent/stackconfig"
)

// runCLI runs the agent's command line in this process.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// monitorAPI serves a real node monitor of the given groups, refreshed
// every interval, at an httptest server standing for the agent's API.
func monitorAPI(t *testing.T, interval time.Duration, groups ...stackconfig.MonitorProcess) string {
	t.Helper()
	cfg := monitor.Config{Monitor: stackconfig.DefaultMonitor}
	cfg.Interval, cfg.Containers, cfg.Processes = interval, false, groups
	m, err := monitor.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	mux := http.NewServeMux()
	mux.Handle("GET "+monitor.Path, m.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.Close(); cancel(); <-done })
	poll.Until(t, 10*time.Second, func() bool { return !m.Snapshot().Time.IsZero() }, "the monitor did not read /proc")
	return srv.URL
}

func TestTop(t *testing.T) {
	marker := fmt.Sprintf("top-busy-%d", time.Now().UnixNano())
	busy := exec.Command("sh", "-c", "while :; do :; done", marker)
	busy.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-busy.Process.Pid, syscall.SIGKILL); _ = busy.Wait() })
	api := monitorAPI(t, 300*time.Millisecond,
		stackconfig.MonitorProcess{Name: "busy", Cmdline: marker, GUID: "shop-1"},
		stackconfig.MonitorProcess{Name: "gone", PID: 99999999},
	)
	csvPath := filepath.Join(t.TempDir(), "top.csv")
	out, err := runCLI(t, "top", "--api", api, "--count", "5", "--interval", "400ms", "--csv", csvPath)
	if err != nil {
		t.Fatalf("agent top: %v\n%s", err, out)
	}
	tables := strings.Split(out, "node monitor at ")
	last := tables[len(tables)-1]
	if len(tables) != 6 || !strings.Contains(last, "sorted by cpu") {
		t.Fatalf("want 5 tables, got:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(last), "\n")
	// Header, then busy first (by CPU), then the gone group.
	if len(lines) != 4 || !strings.Contains(lines[1], "KIND") {
		t.Fatalf("last table:\n%s", last)
	}
	busyLine, goneLine := strings.Fields(lines[2]), strings.Fields(lines[3])
	if busyLine[1] != "busy" || busyLine[2] != "shop-1" || busyLine[3] != "up" || busyLine[4] != "1" {
		t.Fatalf("busy line: %q", lines[2])
	}
	// A busy loop's share depends on how loaded the machine is: only its
	// being measured and above zero is certain.
	if cpu, err := strconv.ParseFloat(busyLine[6], 64); err != nil || cpu <= 0 {
		t.Fatalf("busy loop CPU%% = %q, want a number above 0:\n%s", busyLine[6], out)
	}
	if goneLine[1] != "gone" || goneLine[3] != "down" {
		t.Fatalf("gone line: %q", lines[3])
	}

	f, err := os.Open(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+5*2 || recs[0][0] != "time" || recs[0][7] != "cpu_percent" {
		t.Fatalf("CSV: header and 2 rows per sample, got %d records: %v\n%s", len(recs), recs, out)
	}
	var rated int
	for _, r := range recs[1:] {
		if r[2] == "busy" && r[7] != "" {
			if v, err := strconv.ParseFloat(r[7], 64); err == nil && v > 0 {
				rated++
			}
		}
	}
	if rated < 2 {
		t.Fatalf("CSV: busy has a CPU rate in %d samples, want most of them:\n%v", rated, recs)
	}
	// A second run appends, without a second header.
	if _, err := runCLI(t, "top", "--api", api, "--count", "1", "--csv", csvPath); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(csvPath)
	if n := strings.Count(string(b), "time,kind,name"); n != 1 {
		t.Fatalf("CSV header written %d times", n)
	}
}

func TestTopBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"top", "--sort", "disk"}, `--sort: must be cpu or mem, got "disk"`},
		{[]string{"top", "--interval", "0s"}, "--interval: must be at least 100ms, got 0s"},
		{[]string{"top", "--api", "http://127.0.0.1:1", "--count", "1"}, "ask agent"},
	} {
		_, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
		var ec exitCode
		if strings.HasPrefix(c.want, "--") && (!errors.As(err, &ec) || ec.code != 2) {
			t.Errorf("%v: want exit code 2, got %v", c.args, err)
		}
	}
}

func TestTopSortByMemory(t *testing.T) {
	rows := []topRow{{kind: "group", name: "a", mem: 10, cpu: 90}, {kind: "container", name: "b", mem: 300, cpu: nan}, {kind: "group", name: "c", mem: 20, cpu: 5}}
	sortTop(rows, "mem")
	if rows[0].name != "b" || rows[1].name != "c" || rows[2].name != "a" {
		t.Fatalf("by mem: %v", rows)
	}
	sortTop(rows, "cpu")
	if rows[0].name != "a" || rows[1].name != "c" || rows[2].name != "b" {
		t.Fatalf("by cpu (unknown last): %v", rows)
	}
}

// Pods (Kubernetes mode) are rows of their own, named namespace/pod: up
// from pod_up, figures from their cgroup, "-" for what a pod has none of
// (threads, virtual memory, open files; everything for a pod not started).
func TestTopShowsPods(t *testing.T) {
	const exposition = `# TYPE agent_monitor_refresh_timestamp_seconds gauge
agent_monitor_refresh_timestamp_seconds 1000
# TYPE pod_up gauge
pod_up{guid="shop-1",namespace="shop-1",owner_kind="Deployment",owner_name="web",pod="web-x",qos="Burstable",uid="u1"} 1
pod_up{guid="shop-1",namespace="shop-1",owner_kind="",owner_name="",pod="pending",qos="BestEffort",uid="u2"} 0
# TYPE pod_processes gauge
pod_processes{guid="shop-1",namespace="shop-1",owner_kind="Deployment",owner_name="web",pod="web-x",qos="Burstable",uid="u1"} 3
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{guid="shop-1",namespace="shop-1",owner_kind="Deployment",owner_name="web",pod="web-x",qos="Burstable",uid="u1"} 2097152
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{guid="shop-1",namespace="shop-1",owner_kind="Deployment",owner_name="web",pod="web-x",qos="Burstable",uid="u1"} %g
`
	sample := func(cpu float64, at int) *topSample {
		t.Helper()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(
			strings.Replace(fmt.Sprintf(exposition, cpu), "seconds 1000", fmt.Sprintf("seconds %d", at), 1)))
		if err != nil {
			t.Fatal(err)
		}
		return topFromFamilies(fams)
	}
	cur := sample(12.5, 1010)
	cur.rates(sample(10, 1000)) // 2.5 s of CPU in 10 s
	var b strings.Builder
	printTop(&b, &topOptions{api: apiClient{url: "http://127.0.0.1:9"}, sort: "cpu"}, cur)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a title, a header and two pods:\n%s", b.String())
	}
	want := [][]string{
		{"pod", "shop-1/web-x", "shop-1", "up", "3", "-", "25.0", "2.0MiB", "-", "-"},
		{"pod", "shop-1/pending", "shop-1", "down", "-", "-", "-", "-", "-", "-"},
	}
	for i, w := range want {
		if got := strings.Fields(lines[2+i]); !slices.Equal(got[:len(w)], w) {
			t.Errorf("row %d: %q, want it to begin with %q", i, lines[2+i], w)
		}
	}
}
