package stackconfig

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMonitorConfig(t *testing.T) {
	cfg, err := Load("../testdata/config/monitor.good.toml", joinFlags(t), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	no := false
	want := Monitor{
		Enabled: true, Interval: 5 * time.Second, Containers: false, Pods: false, MaxProcesses: 100, MaxSeries: 2000,
		ProcRoot: "/proc", CgroupRoot: "/sys/fs/cgroup",
		Processes: []MonitorProcess{
			{Name: "init", PID: 1},
			{Name: "daemon", PIDFile: "/run/daemon.pid", Children: &no},
			{Name: "ssh", SystemdUnit: "ssh"},
			{Name: "sleepers", Comm: "sleep"},
			{Name: "java-app", Cmdline: `java .*-jar app\.jar`, GUID: "shop-1"},
			{Name: "svc", MonitorFile: "/var/run/app/monitor.json"},
		},
	}
	if !reflect.DeepEqual(cfg.Monitor, want) {
		t.Fatalf("monitor:\n got %+v\nwant %+v", cfg.Monitor, want)
	}
	if !cfg.Monitor.Processes[0].WithChildren() || cfg.Monitor.Processes[1].WithChildren() {
		t.Fatal("children: default must be true, children = false must be false")
	}
	if got := cfg.Monitor.Processes[2].UnitName(); got != "ssh.service" {
		t.Fatalf("UnitName = %q", got)
	}
	if k, v := cfg.Monitor.Processes[4].Selector(); k != "cmdline" || v != `java .*-jar app\.jar` {
		t.Fatalf("Selector = %q %q", k, v)
	}
}

// On by default, for containers; the flags and the environment set it.
func TestMonitorDefaultsAndFlags(t *testing.T) {
	cfg, err := Load("", joinFlags(t, "--node", "n1"), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.Monitor; !m.Enabled || !m.Containers || !m.Pods || m.Interval != 10*time.Second {
		t.Fatalf("defaults: %+v", m)
	}
	t.Setenv("AGENT_MONITOR_CONTAINERS", "false")
	t.Setenv("AGENT_MONITOR_PODS", "false")
	t.Setenv("AGENT_MONITOR_MAX_PROCESSES", "7")
	cfg, err = Load("", joinFlags(t, "--node", "n1", "--monitor=false", "--monitor-interval", "30s"), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.Monitor; m.Enabled || m.Containers || m.Pods || m.Interval != 30*time.Second || m.MaxProcesses != 7 {
		t.Fatalf("flags and env: %+v", m)
	}
	_, err = Load("", joinFlags(t, "--node", "n1", "--monitor-interval", "0s"), JoinOptions)
	if err == nil || !strings.Contains(err.Error(), "monitor.interval: must be at least 1s, got 0s") {
		t.Fatalf("bad interval flag: %v", err)
	}
}
