package main

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// etcdMembers are the names of the started voting members, sorted, and the
// number of all members.
func etcdMembers(t *testing.T, endpoint string) ([]string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := etcdClient(t, endpoint).MemberList(ctx)
	if err != nil {
		return nil, 0
	}
	var names []string
	for _, m := range resp.Members {
		if !m.IsLearner && m.Name != "" {
			names = append(names, m.Name)
		}
	}
	slices.Sort(names)
	return names, len(resp.Members)
}

// Three agents started at once on a founder's embedded etcd with
// etcd.members = 3 make it a three-member etcd: the cluster outlives its
// founder (killed with -9: the other two keep a master), and the founder
// comes back from its data as one of the three.
func TestEmbeddedEtcdGrowsAndOutlivesItsFounder(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	founderArgs := append(embeddedAgentArgs(t, "g1", t.TempDir()), "--etcd-members", "3")
	// All three start at once, as a host's agents do after a power cut:
	// the joiners may ask before the founder's etcd answers or has
	// recorded its growth.
	started := time.Now()
	g1 := &agentProc{proc: startProc(t, "agent-g1", agentBinary(t), founderArgs...), node: "g1", api: flagValue(founderArgs, "--listen")}
	founderEtcd := flagValue(founderArgs, "--embedded-etcd-listen")

	joiners := map[string]*agentProc{}
	etcdURL := map[string]string{}
	for _, node := range []string{"g2", "g3"} {
		etcdURL[node] = "http://" + etcdtest.FreeAddr(t)
		joiners[node] = startAgent(t, founderEtcd, node, "5s",
			"--embedded-etcd-listen", etcdURL[node], "--embedded-etcd-peer-listen", "http://"+etcdtest.FreeAddr(t))
	}
	want := []string{"g1", "g2", "g3"}
	etcdtest.Eventually(t, 90*time.Second, func() bool {
		names, total := etcdMembers(t, founderEtcd)
		return slices.Equal(names, want) && total == 3
	}, "etcd members to be g1, g2 and g3")
	t.Logf("three voting etcd members %s after the agents started", time.Since(started).Round(10*time.Millisecond))
	etcdtest.Eventually(t, 10*time.Second, g1.ready, "founder not ready")
	for node, a := range joiners {
		etcdtest.Eventually(t, 10*time.Second, a.ready, "%s not ready", node)
		if log := readFile(t, a.log); !strings.Contains(log, "became an etcd member") {
			t.Errorf("%s's log does not say it became an etcd member:\n%s", node, log)
		}
	}
	if s := agentStatus(t, founderEtcd); s.Master == nil || len(s.Members) != 3 ||
		s.Etcd == nil || s.Etcd.GrowsTo != 3 || len(s.Etcd.Members) != 3 {
		t.Fatalf("before the founder is killed: status %+v (etcd %+v), want 3 agents and a master on 3 etcd members that grow to 3", s, s.Etcd)
	}
	// An agent's API shows the etcd too (read every 15 s).
	etcdtest.Eventually(t, 40*time.Second, func() bool {
		var v etcd.ClusterView
		resp, err := http.Get("http://" + joiners["g3"].api + "/api/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&v) != nil || v.Etcd == nil {
			return false
		}
		voting := 0
		for _, m := range v.Etcd.Members {
			if m.State() == "voting" {
				voting++
			}
		}
		return voting == 3
	}, "g3's /api/v1/status to show three voting etcd members")

	g1.kill()
	killed := time.Now()
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		s, err := tryAgentStatus(t, etcdURL["g2"])
		return err == nil && s.Master != nil && s.Master.Node != "g1" && len(s.Members) == 2
	}, "a master of g2 and g3 once the founder is gone")
	t.Logf("a master of the other two, and the founder's agent record gone, %s after its kill -9 (TTL 5s)", time.Since(killed).Round(10*time.Millisecond))

	g1 = &agentProc{proc: startProc(t, "agent-g1-restarted", agentBinary(t), founderArgs...), node: "g1", api: g1.api}
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		s, err := tryAgentStatus(t, etcdURL["g3"])
		return err == nil && g1.ready() && len(s.Members) == 3
	}, "the founder back, from its data, as one of three agents")
	if names, total := etcdMembers(t, etcdURL["g3"]); !slices.Equal(names, want) || total != 3 {
		t.Fatalf("etcd members after the founder's restart: %v of %d, want %v", names, total, want)
	}
}
