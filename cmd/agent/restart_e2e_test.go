package main

import (
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// embeddedAgentArgs are the flags of an agent that runs its own etcd.
func embeddedAgentArgs(t testing.TB, node, dataDir string) []string {
	t.Helper()
	return []string{"join", "--node", node, "--cluster", "e2e", "--listen", etcdtest.FreeAddr(t),
		"--data-dir", dataDir, "--ttl", "5s", "--driver", "none",
		"--embedded-etcd-listen", "http://" + etcdtest.FreeAddr(t), "--embedded-etcd-peer-listen", "http://" + etcdtest.FreeAddr(t)}
}

// restartAfterKill kills a with -9 and starts it again with the same flags
// and data dir; it returns the new process once it is ready, and how long
// that took from its start.
func restartAfterKill(t testing.TB, a *agentProc, args []string) (*agentProc, time.Duration) {
	t.Helper()
	a.kill()
	start := time.Now()
	b := &agentProc{proc: startProc(t, a.name+"-restarted", agentBinary(t), args...), node: a.node, api: a.api}
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		select {
		case <-b.done:
			t.Fatalf("restarted agent exited (%v):\n%s", b.err, readFile(t, b.log))
		default:
		}
		return b.ready()
	}, "restarted agent %s not ready", a.node)
	return b, time.Since(start)
}

// flagValue is the value that follows flag in args.
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// An agent killed with -9 and restarted at once with the same flags and
// data dir takes its own keys over (it revokes its previous run's lease,
// which the embedded etcd restarted at full TTL) instead of refusing its
// name; another agent on the same data dir is refused while one runs.
func TestCrashRestartOnEmbeddedEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	args := embeddedAgentArgs(t, "r1", dir)
	a := &agentProc{proc: startProc(t, "agent-r1", agentBinary(t), args...), node: "r1", api: flagValue(args, "--listen")}
	etcdtest.Eventually(t, 30*time.Second, a.ready, "agent not ready")

	twin := startProc(t, "agent-r1-twin", agentBinary(t), embeddedAgentArgs(t, "r1", dir)...)
	if code, err := twin.wait(30 * time.Second); err != nil || code != 1 {
		t.Fatalf("a second agent on the same data dir: exit %d, %v", code, err)
	}
	if log := readFile(t, twin.log); !strings.Contains(log, "data dir "+dir+" is in use by another agent (pid ") {
		t.Fatalf("second agent on the same data dir does not say why it stopped:\n%s", log)
	}

	b, took := restartAfterKill(t, a, args)
	t.Logf("crash-restart on the embedded etcd: ready %s after the new process started", took)
	if log := readFile(t, b.log); !strings.Contains(log, "taking over from this node's previous run") {
		t.Fatalf("restarted agent did not take over its previous lease:\n%s", log)
	}
	etcd := flagValue(args, "--embedded-etcd-listen")
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		s := agentStatus(t, etcd)
		return len(s.Members) == 1 && s.Master != nil && s.Master.Node == "r1"
	}, "restarted agent is not the only member and master")
}

// The same on an external etcd: the restarted agent does not wait for its
// previous lease to expire.
func TestCrashRestartOnExternalEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	endpoint := startEtcd(t)
	dir := t.TempDir()
	a := startAgentIn(t, endpoint, "r1", "5s", dir)
	etcdtest.Eventually(t, 30*time.Second, a.ready, "agent not ready")
	b, took := restartAfterKill(t, a, a.cmd.Args[1:])
	t.Logf("crash-restart on an external etcd: ready %s after the new process started", took)
	if log := readFile(t, b.log); !strings.Contains(log, "taking over from this node's previous run") {
		t.Fatalf("restarted agent did not take over its previous lease:\n%s", log)
	}
}
