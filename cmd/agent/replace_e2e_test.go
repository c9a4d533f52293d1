package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// A member whose host is gone for good is replaced: three agents grow an
// etcd, one is killed with -9 and stays away, and a fourth agent, a client
// because the etcd has its members, takes the dead member's place once it
// has been silent (and its agent gone) for --etcd-replace-dead-after (1m,
// the least). Started again on its data, the killed agent finds its member
// removed, sets the data aside and comes back as a client.
func TestDeadEtcdMemberIsReplaced(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	founderArgs := append(embeddedAgentArgs(t, "r1", t.TempDir()), "--etcd-members", "3", "--etcd-replace-dead-after", "1m")
	startProc(t, "agent-r1", agentBinary(t), founderArgs...)
	founderEtcd := flagValue(founderArgs, "--embedded-etcd-listen")
	member := func() []string {
		return []string{"--embedded-etcd-listen", "http://" + etcdtest.FreeAddr(t), "--embedded-etcd-peer-listen", "http://" + etcdtest.FreeAddr(t)}
	}
	startAgent(t, founderEtcd, "r2", "5s", member()...)
	r3Dir := t.TempDir()
	r3 := startAgentIn(t, founderEtcd, "r3", "5s", r3Dir, member()...)
	etcdtest.Eventually(t, 90*time.Second, func() bool {
		names, total := etcdMembers(t, founderEtcd)
		return slices.Equal(names, []string{"r1", "r2", "r3"}) && total == 3
	}, "etcd members to be r1, r2 and r3")

	r3.kill()
	killed := time.Now()
	r4 := startAgent(t, founderEtcd, "r4", "5s", member()...)
	etcdtest.Eventually(t, 3*time.Minute, func() bool {
		names, total := etcdMembers(t, founderEtcd)
		return slices.Equal(names, []string{"r1", "r2", "r4"}) && total == 3
	}, "r4 to take the place of r3, dead for more than a minute")
	t.Logf("r4 a voting member in r3's place %s after r3's kill -9 (replace_dead_after 1m, looked at every 30s)", time.Since(killed).Round(time.Second))
	if log := readFile(t, r4.log); !strings.Contains(log, "removed a dead etcd member to take its place") {
		t.Errorf("r4's log does not say it replaced r3:\n%s", log)
	}

	// r3 on its data again: its member is gone, so it comes back a client.
	r3 = &agentProc{proc: startProc(t, "agent-r3-again", agentBinary(t), r3.cmd.Args[1:]...), node: "r3", api: r3.api}
	etcdtest.Eventually(t, 60*time.Second, r3.ready, "r3 not ready after its restart")
	if log := readFile(t, r3.log); !strings.Contains(log, "its data is set aside and the agent goes on as a client") {
		t.Errorf("r3's log does not say its member was removed:\n%s", log)
	}
	if aside, _ := filepath.Glob(filepath.Join(r3Dir, "etcd.removed-*")); len(aside) != 1 {
		t.Errorf("r3's member data set aside: %v, want one etcd.removed-* directory", aside)
	}
	if names, total := etcdMembers(t, founderEtcd); !slices.Equal(names, []string{"r1", "r2", "r4"}) || total != 3 {
		t.Fatalf("etcd members after r3's return: %v of %d, want r1, r2 and r4", names, total)
	}
}
