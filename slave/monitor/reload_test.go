package monitor

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/stackconfig"
)

// A reloaded [monitor] takes effect in the running monitor: a group that
// stays keeps its counters (here the CPU of a process that already left
// it), a new group is measured, a removed one is no longer served, and a
// new interval paces the readings.
func TestReloadChangesGroupsAndKeepsCounters(t *testing.T) {
	marker := fmt.Sprintf("busy-%d", time.Now().UnixNano())
	sleeper := start(t, "sleep", "300")
	burner := start(t, "sh", "-c", "while :; do :; done", marker)
	m, logs := newMonitor(t, func(c *Config) { c.Interval = 50 * time.Millisecond },
		stackconfig.MonitorProcess{Name: "busy", Cmdline: marker},
		stackconfig.MonitorProcess{Name: "gone", PID: sleeper.Process.Pid},
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	var s map[string]float64
	until := func(what string, cond func() bool) {
		t.Helper()
		poll.Until(t, 20*time.Second, func() bool { s = scrape(t, m); return cond() }, "%s; last scrape %v", what, s)
	}
	busyCPU := func() float64 {
		return s[series("namedprocess_namegroup_cpu_seconds_total", "group", "busy", "mode", "user")]
	}

	until("the busy group to use 0.3 s of CPU", func() bool { return busyCPU() >= 0.3 })
	// The burner leaves the group; a quiet process of the same command
	// line stays in it.
	start(t, "sh", "-c", "while :; do sleep 1; done", marker)
	stop(t, burner)
	until("the burner gone from the group", func() bool {
		return s[series("namedprocess_namegroup_num_procs", "group", "busy")] >= 1 && busyCPU() >= 0.3
	})
	before := busyCPU()

	next := stackconfig.DefaultMonitor
	next.Containers = false
	next.Processes = []stackconfig.MonitorProcess{
		{Name: "one", PID: sleeper.Process.Pid}, // the same process, in a new group
		{Name: "busy", Cmdline: marker},         // stays, now second
	}
	next.Interval = time.Hour
	m.SetConfig(next)
	until("group one measured", func() bool { return s[series("namedprocess_namegroup_num_procs", "group", "one")] == 1 })
	if got := busyCPU(); got < before {
		t.Errorf("the busy group's CPU went from %v to %v across the reload: its counters were reset", before, got)
	}
	if _, ok := s[series("namedprocess_namegroup_up", "group", "gone")]; ok {
		t.Errorf("the removed group is still served")
	}

	// An hour between readings, then 50 ms again: the readings follow.
	refreshes := s[series("agent_monitor_refreshes_total")]
	next.Interval = 50 * time.Millisecond
	m.SetConfig(next)
	until("readings every 50 ms again", func() bool { return s[series("agent_monitor_refreshes_total")] >= refreshes+5 })
	if n := strings.Count(logs.String(), "monitor: config reloaded"); n != 2 {
		t.Errorf("logged %d reloads, want 2:\n%s", n, logs)
	}
}
