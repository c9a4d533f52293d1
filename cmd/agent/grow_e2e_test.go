package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
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

// An etcd grown over TLS: the founder's member serves https:// with a
// certificate of the operator's CA, a joiner becomes a member with its
// own, both agents reach etcd with their member's certificate, and only a
// holder of a certificate of that CA can read the cluster.
func TestEmbeddedEtcdGrowsOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	ca := testca.New(t)
	// An agent's member: its client URL, and its flags.
	tlsMember := func(node string) (string, []string) {
		cert, key := ca.Issue(t, node)
		url := "https://" + etcdtest.FreeAddr(t)
		return url, []string{"--embedded-etcd-listen", url, "--embedded-etcd-peer-listen", "https://" + etcdtest.FreeAddr(t),
			"--embedded-etcd-cert-file", cert, "--embedded-etcd-key-file", key, "--etcd-ca-file", ca.CertFile}
	}
	founderEtcd, founderTLS := tlsMember("t1")
	// The TLS flags come last: they override embeddedAgentArgs' http:// URLs.
	founderArgs := append(append(embeddedAgentArgs(t, "t1", t.TempDir()), "--etcd-members", "3"), founderTLS...)
	founder := &agentProc{proc: startProc(t, "agent-t1", agentBinary(t), founderArgs...), node: "t1", api: flagValue(founderArgs, "--listen")}
	joinerEtcd, joinerTLS := tlsMember("t2")
	joiner := startAgent(t, founderEtcd, "t2", "5s", joinerTLS...)

	admin, adminKey := ca.Issue(t, "admin")
	status := func(endpoint string, withCert bool) (etcd.ClusterView, error) {
		args := []string{"status", "--etcd", endpoint, "--cluster", "e2e", "-o", "json", "--etcd-ca-file", ca.CertFile}
		if withCert {
			args = append(args, "--etcd-cert-file", admin, "--etcd-key-file", adminKey)
		}
		var v etcd.ClusterView
		out, err := exec.Command(agentBinary(t), args...).CombinedOutput()
		if err != nil {
			return v, fmt.Errorf("agent status: %w\n%s", err, out)
		}
		return v, json.Unmarshal(out, &v)
	}
	etcdtest.Eventually(t, 90*time.Second, func() bool {
		v, err := status(joinerEtcd, true)
		return err == nil && v.Master != nil && len(v.Members) == 2 && v.Etcd != nil && len(v.Etcd.Members) == 2 &&
			v.Etcd.Members[0].State() == "voting" && v.Etcd.Members[1].State() == "voting"
	}, "t2's member to serve a status of two agents on two voting etcd members, over TLS")
	etcdtest.Eventually(t, 10*time.Second, founder.ready, "founder not ready")
	etcdtest.Eventually(t, 10*time.Second, joiner.ready, "joiner not ready")
	if log := readFile(t, joiner.log); !strings.Contains(log, "became an etcd member") {
		t.Errorf("t2's log does not say it became an etcd member:\n%s", log)
	}
	// Without a client certificate the cluster is not read, and the
	// command says why.
	for _, ep := range []string{founderEtcd, joinerEtcd} {
		if _, err := status(ep, false); err == nil || !strings.Contains(err.Error(), "TLS: it asks for a client certificate (etcd.cert_file and etcd.key_file)") {
			t.Errorf("agent status --etcd %s without a client certificate: %v, want a refusal that names the client certificate", ep, err)
		}
	}
}
