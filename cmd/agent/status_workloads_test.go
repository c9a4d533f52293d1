package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/helm/state"
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

// In Kubernetes mode the master's report lists each release (chart,
// version, revision, status, Helm's error) and each guid namespace.
func TestStatusPrintsKubernetesReleases(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ks := state.Report{
		Releases: []state.ReleaseReport{
			{Release: state.Release{Name: "agent-metrics", Namespace: "obs", Chart: "kube-prometheus-stack", Version: "88.5.3", Revision: 2, Status: "deployed"}},
			{Release: state.Release{Name: "agent-app", Namespace: "shop-1", Chart: "hello", Version: "0.1.0", Revision: 1, Status: "failed",
				Description: "Release \"agent-app\" failed:\nService \"x\" is invalid"}, GUID: "shop-1",
				LastError: "install shop-1/agent-app: Service \"x\" is invalid", NextTry: since},
		},
		Namespaces: []state.Namespace{{Name: "shop-1", Phase: "Active", Created: since}},
	}
	b, _ := json.Marshal(ks)
	v := etcd.ClusterView{Cluster: "c1", Members: []etcd.MemberView{{
		Member: etcd.Member{Node: "n1", Started: since}, Master: true,
		Status: &etcd.NodeStatus{Node: "n1", Updated: since, Kubernetes: b},
	}}}
	out, flat := printedStatus(v)
	for _, want := range []string{
		"| RELEASE NAMESPACE CHART VERSION REVISION STATUS LAST ERROR |",
		"| agent-metrics obs kube-prometheus-stack 88.5.3 2 deployed |",
		"| agent-app shop-1 hello 0.1.0 1 failed install shop-1/agent-app: Service \"x\" is invalid (next try 2026-01-02T03:04:05Z) |",
		"| GUID NAMESPACE PHASE CREATED |",
		"| shop-1 Active 2026-01-02T03:04:05Z |",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// The etcd part lists each member with its state, how many members the
// etcd grows to, and after how long a dead one is replaced.
func TestStatusPrintsTheEtcd(t *testing.T) {
	v := etcd.ClusterView{Cluster: "c1", Members: []etcd.MemberView{}, Etcd: &etcd.EtcdView{GrowsTo: 3, ReplaceDeadAfter: 600, Members: []etcd.EtcdMember{
		{ID: "a1", Name: "g1", ClientURLs: []string{"http://10.0.0.1:2379"}, PeerURLs: []string{"http://10.0.0.1:2380"}},
		{ID: "b2", Name: "g2", Learner: true, ClientURLs: []string{"http://10.0.0.2:2379"}, PeerURLs: []string{"http://10.0.0.2:2380"}},
		{ID: "c3", PeerURLs: []string{"http://10.0.0.3:2380"}},
	}}}
	out, flat := printedStatus(v)
	for _, want := range []string{
		"| etcd: 3 members, grows to 3 as agents join; a member dead for 10m0s is replaced |",
		"| NAME ID STATE CLIENT URLS PEER URLS |",
		"| g1 a1 voting http://10.0.0.1:2379 http://10.0.0.1:2380 |",
		"| g2 b2 learner http://10.0.0.2:2379 http://10.0.0.2:2380 |",
		"| - c3 not started http://10.0.0.3:2380 |",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// printedStatus is what printStatus prints, and the same with lines
// joined by " | " and spaces collapsed (the columns are the tabwriter's).
func printedStatus(v etcd.ClusterView) (out, flat string) {
	var b bytes.Buffer
	cmd := &cobra.Command{}
	cmd.SetOut(&b)
	printStatus(cmd, v)
	return b.String(), strings.Join(strings.Fields(strings.ReplaceAll(b.String(), "\n", " | ")), " ")
}
