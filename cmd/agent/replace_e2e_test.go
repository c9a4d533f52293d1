package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// A member whose host is gone for good is replaced: three agents grow an
// etcd, the founder is killed with -9 and stays away, and a fourth agent, a
// client because the etcd has its members, takes the dead member's place
// once it has been silent (and its agent gone) for
// --etcd-replace-dead-after (1m, the least). Started again as it was, on
// its data and without --etcd, the founder asks the members it last saw
// (etcd-endpoints.json), finds its member removed, sets the data aside and
// comes back as a client. (A joiner's return is TestARemovedMemberRestartsAsAClient.)
func TestDeadEtcdMemberIsReplaced(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	r1Dir := t.TempDir()
	founderArgs := append(embeddedAgentArgs(t, "r1", r1Dir), "--etcd-members", "3", "--etcd-replace-dead-after", "1m")
	r1 := &agentProc{proc: startProc(t, "agent-r1", agentBinary(t), founderArgs...), node: "r1", api: flagValue(founderArgs, "--listen")}
	founderEtcd := flagValue(founderArgs, "--embedded-etcd-listen")
	member := func() []string {
		return []string{"--embedded-etcd-listen", "http://" + etcdtest.FreeAddr(t), "--embedded-etcd-peer-listen", "http://" + etcdtest.FreeAddr(t)}
	}
	r2Args := member()
	r2Etcd := flagValue(r2Args, "--embedded-etcd-listen")
	startAgent(t, founderEtcd, "r2", "5s", r2Args...)
	startAgent(t, founderEtcd, "r3", "5s", member()...)
	etcdtest.Eventually(t, 90*time.Second, func() bool {
		names, total := etcdMembers(t, founderEtcd)
		return slices.Equal(names, []string{"r1", "r2", "r3"}) && total == 3
	}, "etcd members to be r1, r2 and r3")
	// The founder keeps the members' client URLs for its next start (it
	// looks every 30s).
	endpointsFile := filepath.Join(r1Dir, "etcd-endpoints.json")
	var kept []string
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		kept = nil
		b, err := os.ReadFile(endpointsFile)
		return err == nil && json.Unmarshal(b, &kept) == nil && len(kept) == 3 && slices.Contains(kept, r2Etcd)
	}, "the founder did not keep the three members' client URLs in %s: %v", endpointsFile, &kept)

	r1.kill()
	killed := time.Now()
	r4 := startAgent(t, r2Etcd, "r4", "5s", member()...)
	etcdtest.Eventually(t, 3*time.Minute, func() bool {
		names, total := etcdMembers(t, r2Etcd)
		return slices.Equal(names, []string{"r2", "r3", "r4"}) && total == 3
	}, "r4 to take the place of r1, dead for more than a minute")
	t.Logf("r4 a voting member in r1's place %s after r1's kill -9 (replace_dead_after 1m, looked at every 30s)", time.Since(killed).Round(time.Second))
	if log := readFile(t, r4.log); !strings.Contains(log, "removed a dead etcd member to take its place") {
		t.Errorf("r4's log does not say it replaced r1:\n%s", log)
	}

	// r1 as it was started, on its data: its member is gone, so it comes
	// back a client of the members it kept.
	r1 = &agentProc{proc: startProc(t, "agent-r1-again", agentBinary(t), founderArgs...), node: "r1", api: r1.api}
	etcdtest.Eventually(t, 60*time.Second, r1.ready, "r1 not ready after its restart")
	if log := readFile(t, r1.log); !strings.Contains(log, "its data is set aside and the agent goes on as a client") {
		t.Errorf("r1's log does not say its member was removed:\n%s", log)
	}
	if aside, _ := filepath.Glob(filepath.Join(r1Dir, "etcd.removed-*")); len(aside) != 1 {
		t.Errorf("r1's member data set aside: %v, want one etcd.removed-* directory", aside)
	}
	if names, total := etcdMembers(t, r2Etcd); !slices.Equal(names, []string{"r2", "r3", "r4"}) || total != 3 {
		t.Fatalf("etcd members after r1's return: %v of %d, want r2, r3 and r4", names, total)
	}
}
