package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

var e2eKeys = etcd.NewKeys("/agent", "e2e")

// Three agent processes against one etcd process: one master; kill -9 it
// and another takes over once its lease expires; SIGTERM the next one and
// the handover is immediate; a duplicate node name is refused.
func TestClusterProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	endpoint := startEtcd(t)
	cli := etcdClient(t, endpoint)
	const ttl = 2 * time.Second
	agents := map[string]*agentProc{}
	for _, n := range []string{"a", "b", "c"} {
		agents[n] = startAgent(t, endpoint, n, ttl.String())
	}
	for _, a := range agents {
		etcdtest.Eventually(t, 20*time.Second, a.ready, "agent %s not ready", a.node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first, _, err := masterSince(ctx, cli, e2eKeys, "")
	if err != nil {
		t.Fatal(err)
	}
	status := agentStatus(t, endpoint)
	if len(status.Members) != 3 || status.Master == nil || status.Master.Node != first {
		t.Fatalf("status before failover: %+v", status)
	}

	// kill -9: the master's lease must expire first.
	agents[first].kill()
	killed := time.Now()
	second, seen, err := masterSince(ctx, cli, e2eKeys, first)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 of %s: %s took over after %s (ttl %s)", first, second, seen.Sub(killed), ttl)
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		s := agentStatus(t, endpoint)
		return len(s.Members) == 2 && s.Master != nil && s.Master.Node == second
	}, "dead agent %s still listed, or master not %s", first, second)

	// SIGTERM: resign and revoke; the next master follows at once.
	agents[second].signal(syscall.SIGTERM)
	stopped := time.Now()
	third, seen, err := masterSince(ctx, cli, e2eKeys, second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGTERM of %s: %s took over after %s", second, third, seen.Sub(stopped))
	if code, err := agents[second].wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("agent %s after SIGTERM: exit %d, %v", second, code, err)
	}
	if seen.Sub(stopped) >= ttl {
		t.Fatalf("graceful handover took %s, not faster than the lease TTL %s: the lease was not revoked", seen.Sub(stopped), ttl)
	}

	// A second agent with a live node name refuses to start, and says why.
	dup := startAgent(t, endpoint, third, ttl.String())
	code, err := dup.wait(15 * time.Second)
	if err != nil || code == 0 {
		t.Fatalf("duplicate agent %s: exit %d, %v", third, code, err)
	}
	if !strings.Contains(readFile(t, dup.log), "already taken by a live agent") {
		t.Fatalf("duplicate agent's message does not say the name is taken:\n%s", readFile(t, dup.log))
	}
}

// waitMaster returns the master's node name once status shows one: agents
// are ready before one of them has won the election.
func waitMaster(t *testing.T, endpoint string) string {
	t.Helper()
	var master string
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		if m := agentStatus(t, endpoint).Master; m != nil {
			master = m.Node
		}
		return master != ""
	}, "no master in agent status")
	return master
}

func agentStatus(t *testing.T, endpoint string) etcd.ClusterView {
	t.Helper()
	v, err := tryAgentStatus(t, endpoint)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// tryAgentStatus is agentStatus for an etcd that may not answer yet.
func tryAgentStatus(t *testing.T, endpoint string) (etcd.ClusterView, error) {
	var v etcd.ClusterView
	out, err := exec.Command(agentBinary(t), "status", "--etcd", endpoint, "--cluster", "e2e", "-o", "json").Output()
	if err != nil {
		return v, fmt.Errorf("agent status: %w", err)
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return v, fmt.Errorf("agent status -o json: %w\n%s", err, out)
	}
	return v, nil
}
