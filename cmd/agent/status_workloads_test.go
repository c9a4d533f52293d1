package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/workload"
)

// A crash-looping workload's row says so, with its restarts and error, and
// its last output follows the table without breaking its columns.
func TestStatusPrintsCrashLoopingWorkloads(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	v := etcd.ClusterView{Cluster: "c1", Members: []etcd.MemberView{{
		Member: etcd.Member{Node: "n1", Started: since},
		Status: &etcd.NodeStatus{Node: "n1", Updated: since, Stack: []workload.State{
			{Name: "agent-node-exporter-n1", Driver: "process", Status: workload.StatusCrashLooping, Binary: "/usr/bin/prometheus-node-exporter",
				Since: since, Restarts: 3, LastError: "exited 3 times in a row, last with exit code 1: bind: address already in use",
				LastOutput: []string{"level=info msg=Starting", "level=error err=\"bind: address already in use\""}},
			{Name: "agent-prometheus-n1", Driver: "process", Status: workload.StatusRunning, Binary: "/usr/bin/prometheus", Since: since},
		}},
	}}}
	var out bytes.Buffer
	cmd := &cobra.Command{}
	cmd.SetOut(&out)
	printStatus(cmd, v)
	lines := strings.Split(out.String(), "\n")
	col := func(prefix string) int {
		for _, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return strings.Index(l, "process")
			}
		}
		t.Fatalf("no line starts with %q:\n%s", prefix, out.String())
		return -1
	}
	if a, b := col("agent-node-exporter-n1"), col("agent-prometheus-n1"); a != b || a < 0 {
		t.Errorf("DRIVER column at %d and %d: the rows are not aligned:\n%s", a, b, out.String())
	}
	for _, want := range []string{
		"crash-looping  /usr/bin/prometheus-node-exporter",
		"  3         exited 3 times in a row, last with exit code 1: bind: address already in use\n",
		"  last output of agent-node-exporter-n1:\n    level=info msg=Starting\n    level=error err=\"bind: address already in use\"\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "last output of agent-prometheus-n1") {
		t.Errorf("a workload without output gets an output block:\n%s", out.String())
	}
}
