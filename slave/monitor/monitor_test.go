package monitor

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/stackconfig"
)

// Real processes picked by each kind of selector: a pid, a comm, a
// command-line pattern (a busy loop), a pidfile of a process with
// children, with and without them.
func TestGroupsOfRealProcesses(t *testing.T) {
	sleeper := start(t, "sleep", "300")
	bin := uniqueBinary(t)
	start(t, bin, "300")
	start(t, bin, "301")
	marker := fmt.Sprintf("busy-%d", time.Now().UnixNano())
	start(t, "sh", "-c", "while :; do :; done", marker)
	tree := start(t, "sh", "-c", "sleep 300 & sleep 300 & wait")
	tree2 := start(t, "sh", "-c", "sleep 300 & sleep 300 & wait")
	dir := t.TempDir()
	pidfile, pidfile2 := filepath.Join(dir, "tree.pid"), filepath.Join(dir, "tree2.pid")
	writeFile(t, pidfile, strconv.Itoa(tree.Process.Pid)+"\n")
	writeFile(t, pidfile2, strconv.Itoa(tree2.Process.Pid)+"\n")
	no := false

	m, _ := newMonitor(t, nil,
		stackconfig.MonitorProcess{Name: "one", PID: sleeper.Process.Pid, GUID: "g-1"},
		stackconfig.MonitorProcess{Name: "by-comm", Comm: filepath.Base(bin)},
		stackconfig.MonitorProcess{Name: "busy", Cmdline: marker},
		stackconfig.MonitorProcess{Name: "tree", PIDFile: pidfile},
		stackconfig.MonitorProcess{Name: "tree-alone", PIDFile: pidfile2, Children: &no},
		stackconfig.MonitorProcess{Name: "tree-again", PIDFile: pidfile},
	)
	s := eventually(t, m, 20*time.Second, "every group measured", func(s map[string]float64) bool {
		return s[series("namedprocess_namegroup_num_procs", "group", "tree")] == 3 &&
			s[series("namedprocess_namegroup_num_procs", "group", "by-comm")] == 2 &&
			s[series("namedprocess_namegroup_cpu_seconds_total", "group", "busy", "mode", "user")] >= 0.3
	})
	one := func(name string) float64 { return s[series(name, "group", "one", "guid", "g-1")] }
	if one("namedprocess_namegroup_up") != 1 || one("namedprocess_namegroup_num_procs") != 1 || one("namedprocess_namegroup_num_threads") != 1 {
		t.Fatalf("group one: up %v procs %v threads %v", one("namedprocess_namegroup_up"), one("namedprocess_namegroup_num_procs"), one("namedprocess_namegroup_num_threads"))
	}
	if v := s[series("namedprocess_namegroup_memory_bytes", "group", "one", "guid", "g-1", "memtype", "resident")]; v < 100<<10 {
		t.Fatalf("resident memory of sleep: %v", v)
	}
	if v := s[series("namedprocess_namegroup_memory_bytes", "group", "one", "guid", "g-1", "memtype", "virtual")]; v < 1<<20 {
		t.Fatalf("virtual memory of sleep: %v", v)
	}
	if one("namedprocess_namegroup_open_filedesc") < 3 || one("namedprocess_namegroup_limit_filedesc") < 1024 {
		t.Fatalf("fds %v limit %v", one("namedprocess_namegroup_open_filedesc"), one("namedprocess_namegroup_limit_filedesc"))
	}
	if st := one("namedprocess_namegroup_oldest_start_time_seconds"); st < float64(time.Now().Add(-time.Minute).Unix()) || st > float64(time.Now().Unix()+1) {
		t.Fatalf("start time %v, want about now", st)
	}
	if v := s[series("namedprocess_namegroup_context_switches_total", "group", "one", "guid", "g-1", "ctxswitchtype", "voluntary")]; v < 1 {
		t.Fatalf("context switches of sleep: %v", v)
	}
	if v := s[series("namedprocess_namegroup_num_procs", "group", "tree-alone")]; v != 1 {
		t.Fatalf("children = false: %v processes, want the selected one only", v)
	}
	// Each process counts once, in the first group that selects it.
	if v := s[series("namedprocess_namegroup_num_procs", "group", "tree-again")]; v != 0 || s[series("namedprocess_namegroup_up", "group", "tree-again")] != 0 {
		t.Fatalf("a process selected by two groups counts in the second: %v", v)
	}
	if v := s[series("namedprocess_namegroup_num_procs", "group", "busy")]; v != 1 {
		t.Fatalf("busy loop: %v processes", v)
	}
	if _, ok := s[series("namedprocess_namegroup_network_receive_bytes_total", "group", "one", "guid", "g-1")]; ok {
		t.Fatal("a process on the host network has network series")
	}

	// The busy loop's CPU keeps growing; a gone process is up 0, still
	// served, its counters kept.
	cpu := s[series("namedprocess_namegroup_cpu_seconds_total", "group", "busy", "mode", "user")]
	ctx := s[series("namedprocess_namegroup_context_switches_total", "group", "one", "guid", "g-1", "ctxswitchtype", "voluntary")]
	stop(t, sleeper)
	s = eventually(t, m, 20*time.Second, "gone process is up 0 and the busy loop keeps burning", func(s map[string]float64) bool {
		return s[series("namedprocess_namegroup_up", "group", "one", "guid", "g-1")] == 0 &&
			s[series("namedprocess_namegroup_cpu_seconds_total", "group", "busy", "mode", "user")] > cpu+0.2
	})
	if v := s[series("namedprocess_namegroup_num_procs", "group", "one", "guid", "g-1")]; v != 0 {
		t.Fatalf("gone process: num_procs %v", v)
	}
	if v := s[series("namedprocess_namegroup_context_switches_total", "group", "one", "guid", "g-1", "ctxswitchtype", "voluntary")]; v < ctx {
		t.Fatalf("a counter went down when its process left: %v < %v", v, ctx)
	}
}

// A daemon restarted under the same pidfile is followed, and the group's
// counters keep growing across the restart.
func TestPidfileRestart(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "d.pid")
	first := start(t, "sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec sleep 300")
	writeFile(t, pidfile, strconv.Itoa(first.Process.Pid))
	m, _ := newMonitor(t, nil, stackconfig.MonitorProcess{Name: "daemon", PIDFile: pidfile})
	key := func(name string, kv ...string) string {
		return series(name, append([]string{"group", "daemon"}, kv...)...)
	}
	s := eventually(t, m, 30*time.Second, "first daemon measured after its busy start", func(s map[string]float64) bool {
		return s[key("namedprocess_namegroup_up")] == 1 && s[key("namedprocess_namegroup_cpu_seconds_total", "mode", "user")] > 0.05
	})
	startedFirst := s[key("namedprocess_namegroup_oldest_start_time_seconds")]
	cpuFirst := s[key("namedprocess_namegroup_cpu_seconds_total", "mode", "user")] + s[key("namedprocess_namegroup_cpu_seconds_total", "mode", "system")]

	stop(t, first)
	eventually(t, m, 20*time.Second, "stopped daemon is down", func(s map[string]float64) bool {
		return s[key("namedprocess_namegroup_up")] == 0
	})
	time.Sleep(20 * time.Millisecond) // a later start time than the first daemon's, in 10 ms ticks
	second := start(t, "sleep", "300")
	writeFile(t, pidfile, strconv.Itoa(second.Process.Pid)+"\n")
	s = eventually(t, m, 20*time.Second, "restarted daemon followed", func(s map[string]float64) bool {
		return s[key("namedprocess_namegroup_up")] == 1 && s[key("namedprocess_namegroup_oldest_start_time_seconds")] > startedFirst
	})
	cpu := s[key("namedprocess_namegroup_cpu_seconds_total", "mode", "user")] + s[key("namedprocess_namegroup_cpu_seconds_total", "mode", "system")]
	if cpu < cpuFirst {
		t.Fatalf("cpu counter went down across the restart: %v < %v", cpu, cpuFirst)
	}
}

// A monitor file rewritten while the monitor runs: its pid is followed,
// serviceName and ip become labels, bad JSON is logged once and the last
// good value kept.
func TestMonitorFile(t *testing.T) {
	a := start(t, "sleep", "300")
	b := start(t, "sleep", "301")
	path := filepath.Join(t.TempDir(), "monitor.json")
	writeFile(t, path, fmt.Sprintf(`{"pid": %d, "serviceName": "orders", "ip": "10.0.0.1"}`, a.Process.Pid))
	m, logs := newMonitor(t, nil, stackconfig.MonitorProcess{Name: "app", MonitorFile: path})
	up := func(service, ip string) string {
		return series("namedprocess_namegroup_up", "group", "app", "service", service, "ip", ip)
	}
	eventually(t, m, 10*time.Second, "monitor file read", func(s map[string]float64) bool { return s[up("orders", "10.0.0.1")] == 1 })

	writeFile(t, path, `{"pid": 12, "serviceName": `)
	for range 3 {
		m.Refresh(context.Background())
	}
	s := scrape(t, m)
	if s[up("orders", "10.0.0.1")] != 1 {
		t.Fatalf("bad JSON: the last good value is not kept: %v", s)
	}
	if n := strings.Count(logs.String(), "bad JSON"); n != 1 {
		t.Fatalf("bad JSON logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "keeping_pid="+strconv.Itoa(a.Process.Pid)) {
		t.Fatalf("the log does not say which pid is kept:\n%s", logs)
	}

	writeFile(t, path, fmt.Sprintf(`{"pid": %d, "serviceName": "orders-v2", "ip": "10.0.0.2"}`, b.Process.Pid))
	s = eventually(t, m, 10*time.Second, "rewritten monitor file followed", func(s map[string]float64) bool { return s[up("orders-v2", "10.0.0.2")] == 1 })
	if _, ok := s[up("orders", "10.0.0.1")]; ok {
		t.Fatal("the old labels are still served")
	}
	writeFile(t, path, `{"serviceName": "x"}`)
	m.Refresh(context.Background())
	if !strings.Contains(logs.String(), `\"pid\": want a process id > 0`) {
		t.Fatalf("a monitor file without pid is not reported:\n%s", logs)
	}
}

// A process of a systemd unit is found through its cgroup. systemd is not
// PID 1 here, so the test makes the unit's cgroup itself, as systemd
// would, in the name=systemd hierarchy (v1) or the unified one (v2).
func TestSystemdUnit(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("making a cgroup needs root (CI=true)")
		}
		t.Skip("making a cgroup needs root")
	}
	root := "/sys/fs/cgroup/systemd"
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		root = "/sys/fs/cgroup"
	}
	unit := fmt.Sprintf("agtest-%d.service", time.Now().UnixNano()%1e9)
	dir := filepath.Join(root, "system.slice", unit)
	_, err := os.Stat(filepath.Dir(dir))
	madeSlice := os.IsNotExist(err)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("make the unit's cgroup: %v", err)
	}
	t.Cleanup(func() {
		for deadline := time.Now().Add(10 * time.Second); os.Remove(dir) != nil && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond) // until its processes are reaped
		}
		if madeSlice {
			_ = os.Remove(filepath.Dir(dir))
		}
	})
	svc := start(t, "sleep", "300")
	other := start(t, "sleep", "300")
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(svc.Process.Pid)), 0o644); err != nil {
		t.Fatalf("move the process into the unit: %v", err)
	}
	m, _ := newMonitor(t, nil, stackconfig.MonitorProcess{Name: "svc", SystemdUnit: strings.TrimSuffix(unit, ".service")})
	eventually(t, m, 10*time.Second, "unit's process found", func(s map[string]float64) bool {
		return s[series("namedprocess_namegroup_num_procs", "group", "svc")] == 1
	})
	_ = other
}

// Processes that come and go all the time: some exit between the listing
// and the reads. They are skipped; the scrape never fails.
func TestVanishingProcesses(t *testing.T) {
	marker := fmt.Sprintf("forker-%d", time.Now().UnixNano())
	start(t, "sh", "-c", "while :; do /bin/true; /bin/true; /bin/true; done", marker)
	m, _ := newMonitor(t, nil, stackconfig.MonitorProcess{Name: "forker", Cmdline: marker})
	eventually(t, m, 60*time.Second, "some processes vanished mid-read", func(s map[string]float64) bool {
		return s[series("namedprocess_namegroup_up", "group", "forker")] == 1 && s["agent_monitor_vanished_total{}"] > 0
	})
}

// monitor.max_processes and max_series bound the work and the output,
// and what they leave out is counted.
func TestLimits(t *testing.T) {
	tree := start(t, "sh", "-c", "sleep 300 & sleep 300 & sleep 300 & wait")
	a, b := start(t, "sleep", "300"), start(t, "sleep", "300")
	m, logs := newMonitor(t, func(c *Config) { c.MaxProcesses = 2; c.MaxSeries = 2 * seriesPerGroup },
		stackconfig.MonitorProcess{Name: "tree", PID: tree.Process.Pid},
		stackconfig.MonitorProcess{Name: "a", PID: a.Process.Pid},
		stackconfig.MonitorProcess{Name: "b", PID: b.Process.Pid},
	)
	// tree has 4 processes, a 1: 2 are measured and 3 dropped per reading.
	s := eventually(t, m, 10*time.Second, "limits applied", func(s map[string]float64) bool {
		return s[series("namedprocess_namegroup_num_procs", "group", "tree")]+s[series("namedprocess_namegroup_num_procs", "group", "a")] == 2 &&
			s["agent_monitor_processes{}"] == 2 && s[series("agent_monitor_dropped_total", "what", "processes")] >= 3
	})
	if _, ok := s[series("namedprocess_namegroup_up", "group", "b")]; ok {
		t.Fatal("max_series: the third group is served")
	}
	if s[series("agent_monitor_dropped_total", "what", "series")] < seriesPerGroup {
		t.Fatalf("dropped series not counted: %v", s[series("agent_monitor_dropped_total", "what", "series")])
	}
	if strings.Count(logs.String(), "monitor.max_processes reached") != 1 {
		t.Fatalf("max_processes not logged once:\n%s", logs)
	}
}

// The endpoint speaks OpenMetrics when asked, and serves the last
// snapshot without reading /proc.
func TestOpenMetricsAndSnapshot(t *testing.T) {
	m, _ := newMonitor(t, nil, stackconfig.MonitorProcess{Name: "init", PID: 1})
	m.Refresh(context.Background())
	req := httptest.NewRequest("GET", Path, nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, req)
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("Content-Type %q", ct)
	}
	body := rec.Body.String()
	if !strings.Contains(body, `namedprocess_namegroup_cpu_seconds_total{group="init",guid="",ip="",mode="user",service=""}`) || !strings.HasSuffix(body, "# EOF\n") {
		t.Fatalf("OpenMetrics body:\n%s", body)
	}
	before := m.Snapshot()
	for range 3 {
		scrape(t, m)
	}
	if m.Snapshot() != before {
		t.Fatal("a scrape changed the snapshot")
	}
}

// A group in a network namespace of its own gets that namespace's byte
// counters; the kernel has none per process.
func TestGroupNetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("unshare -n needs root (CI=true)")
		}
		t.Skip("unshare -n needs root")
	}
	for _, bin := range []string{"unshare", "busybox"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (CI=true)", bin)
			}
			t.Skipf("%s is missing", bin)
		}
	}
	netns := start(t, "unshare", "-n", "busybox", "sh", "-c",
		"busybox ip link set lo up; while :; do busybox ping -c 1 -W 1 127.0.0.1 >/dev/null; sleep 0.2; done")
	m, _ := newMonitor(t, nil, stackconfig.MonitorProcess{Name: "isolated", PID: netns.Process.Pid})
	eventually(t, m, 20*time.Second, "network counters of the group's namespace", func(s map[string]float64) bool {
		return s[series("namedprocess_namegroup_network_receive_bytes_total", "group", "isolated")] > 0 &&
			s[series("namedprocess_namegroup_network_transmit_bytes_total", "group", "isolated")] > 0
	})
}
