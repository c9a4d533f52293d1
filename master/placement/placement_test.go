package placement

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/slave/apps"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.ClientLeaks()...)
}

var keys = etcd.NewKeys("/agent", "test")

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// member registers node under its own session, as an agent does; closing
// the session is the agent dying (its lease goes).
func member(t *testing.T, cli *clientv3.Client, node string) *concurrency.Session {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	v, _ := json.Marshal(etcd.Member{Node: node})
	if _, err := cli.Put(context.Background(), keys.Member(node), string(v), clientv3.WithLease(sess.Lease())); err != nil {
		t.Fatal(err)
	}
	return sess
}

func putApp(t *testing.T, cli *clientv3.Client, guid, node string, pinned bool) {
	t.Helper()
	spec := apps.AppSpec{GUID: guid, Image: "busybox:1"}
	if pinned {
		spec.Node = node
	}
	v, _ := json.Marshal(apps.Record{Spec: spec, Node: node, Pinned: pinned, Created: time.Now()})
	if _, err := cli.Put(context.Background(), keys.App(guid), string(v)); err != nil {
		t.Fatal(err)
	}
}

func nodeOf(t *testing.T, cli *clientv3.Client, guid string) string {
	t.Helper()
	resp, err := cli.Get(context.Background(), keys.App(guid))
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("read %s: %v", guid, err)
	}
	rec, err := apps.ParseRecord(keys, resp.Kvs[0].Key, resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Node
}

// term wins an election for node.
func term(t *testing.T, cli *clientv3.Client, node string) (etcd.Leader, *concurrency.Session) {
	t.Helper()
	sess, lead := etcdtest.Campaign(t, cli, keys, node, 5)
	return lead, sess
}

// running is a duty's Run in progress: err is set when done closes.
type running struct {
	done chan struct{}
	err  error
}

// run runs the duty until it returns or the test ends.
func run(t *testing.T, p *Placer, lead etcd.Leader) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan struct{})}
	go func() { defer close(r.done); r.err = p.Run(ctx, lead) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
		if r.err != nil && !errors.Is(r.err, etcd.ErrFenced) {
			t.Errorf("Run = %v", r.err)
		}
	})
	return r
}

func TestMovesAppsOfDeadNodeAfterGrace(t *testing.T) {
	cli := etcdtest.Start(t).Client()
	n1 := member(t, cli, "n1")
	member(t, cli, "n2")
	member(t, cli, "n3")
	putApp(t, cli, "a", "n1", false)
	putApp(t, cli, "pinned", "n1", true)
	putApp(t, cli, "b", "n2", false)
	lead, _ := term(t, cli, "n2")
	const grace = 300 * time.Millisecond
	p := New(cli, Config{Keys: keys, Grace: grace}, quiet(), nil)
	run(t, p, lead)

	died := time.Now()
	if err := n1.Close(); err != nil { // revokes the lease: members/n1 goes
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool { return nodeOf(t, cli, "a") != "n1" }, "app a never left dead n1")
	if waited := time.Since(died); waited < grace {
		t.Fatalf("moved after %s, before the grace of %s", waited, grace)
	}
	if got := nodeOf(t, cli, "a"); got != "n3" {
		t.Fatalf("a moved to %s, want n3 (fewest apps)", got)
	}
	// The move is counted once its write has succeeded, which the watch
	// above may see first.
	etcdtest.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(p.m.moves) >= 1 }, "the move not counted")
	// The pinned app stays, and is counted as stranded.
	etcdtest.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(p.m.stranded) == 1 }, "pinned app not counted as stranded")
	if got := testutil.ToFloat64(p.m.moves); got != 1 {
		t.Fatalf("replacements = %v, want 1", got)
	}
	if got := nodeOf(t, cli, "pinned"); got != "n1" {
		t.Fatalf("pinned app moved to %s", got)
	}
}

// TestNodeBackWithinGraceKeepsApps: n1 restarts within its grace period,
// n4 does not; by the time n4's app moves, n1's earlier deadline has passed
// too, and its app must still be on n1.
func TestNodeBackWithinGraceKeepsApps(t *testing.T) {
	cli := etcdtest.Start(t).Client()
	n1 := member(t, cli, "n1")
	member(t, cli, "n2")
	n4 := member(t, cli, "n4")
	putApp(t, cli, "on-n1", "n1", false)
	putApp(t, cli, "on-n4", "n4", false)
	lead, _ := term(t, cli, "n2")
	run(t, New(cli, Config{Keys: keys, Grace: 300 * time.Millisecond}, quiet(), nil), lead)

	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	member(t, cli, "n1") // the restarted agent registers again
	if err := n4.Close(); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool { return nodeOf(t, cli, "on-n4") != "n4" }, "app of dead n4 never moved")
	if got := nodeOf(t, cli, "on-n1"); got != "n1" {
		t.Fatalf("app of restarted n1 moved to %s", got)
	}
}

// TestStaleLeaderIsFenced: a master whose term is over moves nothing and
// ends with ErrFenced.
func TestStaleLeaderIsFenced(t *testing.T) {
	cli := etcdtest.Start(t).Client()
	member(t, cli, "n2")
	putApp(t, cli, "a", "dead", false)
	stale, sess := term(t, cli, "n1")
	if err := sess.Close(); err != nil { // the term ends
		t.Fatal(err)
	}
	term(t, cli, "n2") // a newer term
	r := run(t, New(cli, Config{Keys: keys, Grace: time.Millisecond}, quiet(), nil), stale)
	select {
	case <-r.done:
		if !errors.Is(r.err, etcd.ErrFenced) {
			t.Fatalf("Run = %v, want ErrFenced", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stale master kept running")
	}
	if got := nodeOf(t, cli, "a"); got != "dead" {
		t.Fatalf("a stale master moved the app to %s", got)
	}
}

// TestMoveGuardedByModRevision: a record changed after the duty
// read it (here: re-created by the API) is not overwritten by a move based
// on the old one.
func TestMoveGuardedByModRevision(t *testing.T) {
	cli := etcdtest.Start(t).Client()
	member(t, cli, "n2")
	putApp(t, cli, "a", "dead", false)
	lead, _ := term(t, cli, "n2")
	p := New(cli, Config{Keys: keys}, quiet(), nil)
	resp, err := cli.Get(context.Background(), keys.App("a"))
	if err != nil {
		t.Fatal(err)
	}
	old := resp.Kvs[0].ModRevision
	putApp(t, cli, "a", "n2", true) // changed since read
	rec := apps.Record{Spec: apps.AppSpec{GUID: "a", Image: "busybox:1"}, Node: "n2"}
	if _, err := p.move(context.Background(), lead, rec, old); !errors.Is(err, errChanged) {
		t.Fatalf("move on an old revision = %v, want errChanged", err)
	}
	if got := nodeOf(t, cli, "a"); got != "n2" {
		t.Fatal("record overwritten")
	}
}

func TestInvalidRecordsSkipped(t *testing.T) {
	cli := etcdtest.Start(t).Client()
	member(t, cli, "n2")
	if _, err := cli.Put(context.Background(), keys.App("bad"), `{"spec":{"guid":"bad","image":"busybox:1"},"node":"../etc"}`); err != nil {
		t.Fatal(err)
	}
	putApp(t, cli, "good", "dead", false)
	lead, _ := term(t, cli, "n2")
	p := New(cli, Config{Keys: keys, Grace: time.Millisecond}, quiet(), nil)
	run(t, p, lead)
	etcdtest.Eventually(t, 10*time.Second, func() bool { return nodeOf(t, cli, "good") == "n2" }, "valid app not moved")
	if got := testutil.ToFloat64(p.m.invalid); got != 1 {
		t.Fatalf("invalid = %v, want 1", got)
	}
	resp, _ := cli.Get(context.Background(), keys.App("bad"))
	if len(resp.Kvs) != 1 || resp.Kvs[0].Version != 1 {
		t.Fatal("the invalid record was touched")
	}
}
