package slave

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.ClientLeaks()...)
}

var testLogOut io.Writer = io.Discard

var testKeys = etcd.NewKeys("/agent", "test")

// duty records how many masters act at once across every node of a test.
type duty struct {
	active, maxActive, terms atomic.Int32
	fail                     error // returned at once when set
}

func (d *duty) Run(ctx context.Context, lead etcd.Leader) error {
	n := d.active.Add(1)
	defer d.active.Add(-1)
	for {
		m := d.maxActive.Load()
		if n <= m || d.maxActive.CompareAndSwap(m, n) {
			break
		}
	}
	d.terms.Add(1)
	if d.fail != nil {
		return d.fail
	}
	<-ctx.Done()
	return nil
}

type testNode struct {
	*Node
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func startNode(t *testing.T, srv *etcdtest.Server, name string, d MasterDuties) *testNode {
	t.Helper()
	return startNodeWith(t, srv.Client(), name, d)
}

func startNodeWith(t *testing.T, cli *clientv3.Client, name string, d MasterDuties) *testNode {
	t.Helper()
	return startNodeConfig(t, cli, nodeConfig(name), d)
}

func nodeConfig(name string) NodeConfig {
	return NodeConfig{Node: name, API: "127.0.0.1:1", Version: "test", TTL: 2 * time.Second, Keys: testKeys}
}

func startNodeConfig(t *testing.T, cli *clientv3.Client, cfg NodeConfig, d MasterDuties) *testNode {
	t.Helper()
	reg := prometheus.NewRegistry()
	n := NewNode(cfg, cli, d, nil, slog.New(slog.NewTextHandler(testLogOut, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", cfg.Node), reg)
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{Node: n, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { tn.done <- n.Run(ctx) }()
	t.Cleanup(func() { tn.stop(t) })
	return tn
}

// stop shuts the node down as SIGTERM would and waits for Run to return.
func (n *testNode) stop(t *testing.T) error {
	t.Helper()
	n.cancel()
	select {
	case err, ok := <-n.done:
		if ok {
			close(n.done)
		}
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("node did not stop within 10s")
		return nil
	}
}

func masterOf(t *testing.T, cli *clientv3.Client) string {
	t.Helper()
	view, err := etcd.Registry{KV: cli, Keys: testKeys, Cluster: "test"}.View(context.Background())
	if err != nil || view.Master == nil {
		return ""
	}
	return view.Master.Node
}

func TestSingleNodeJoinsAndLeads(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	d := &duty{}
	n := startNode(t, srv, "n1", d)
	etcdtest.Eventually(t, 5*time.Second, func() bool { return n.Ready() && n.Master() }, "node not ready and master")
	etcdtest.Eventually(t, 5*time.Second, func() bool { return d.active.Load() == 1 }, "master duties not running")

	resp, err := cli.Get(context.Background(), testKeys.Member("n1"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("member record: %v %v", resp, err)
	}
	var m etcd.Member
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil || m.Node != "n1" || m.Version != "test" || resp.Kvs[0].Lease == 0 {
		t.Fatalf("member record %s (lease %x): %v", resp.Kvs[0].Value, resp.Kvs[0].Lease, err)
	}
	if got := testutil.ToFloat64(n.m.isMaster); got != 1 {
		t.Fatalf("agent_is_master = %v", got)
	}

	if err := n.stop(t); err != nil {
		t.Fatalf("clean stop returned %v", err)
	}
	if d.active.Load() != 0 {
		t.Fatal("duties still running after stop")
	}
	// The lease was revoked: every key of the agent is gone at once.
	resp, err = cli.Get(context.Background(), testKeys.Root(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("keys left after a clean stop: %d (%v)", resp.Count, err)
	}
}

func TestOneMasterAndFailover(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	d := &duty{}
	nodes := map[string]*testNode{}
	for _, name := range []string{"a", "b", "c"} {
		nodes[name] = startNode(t, srv, name, d)
	}
	for round := 0; round < 2; round++ {
		var master string
		etcdtest.Eventually(t, 5*time.Second, func() bool {
			master = masterOf(t, cli)
			return master != "" && nodes[master] != nil && nodes[master].Master()
		}, "no master elected")
		count := 0
		for _, n := range nodes {
			if n.Master() {
				count++
			}
		}
		if count != 1 {
			t.Fatalf("%d nodes think they are master", count)
		}
		// A graceful stop hands over at once, well within one TTL.
		start := time.Now()
		nodes[master].stop(t)
		delete(nodes, master)
		etcdtest.Eventually(t, 2*time.Second, func() bool {
			m := masterOf(t, cli)
			return m != "" && m != master && nodes[m].Master()
		}, "no new master after %s stopped", master)
		t.Logf("graceful handover from %s took %s", master, time.Since(start))
	}
	if got := d.maxActive.Load(); got != 1 {
		t.Fatalf("at some moment %d masters ran their duties", got)
	}
}

func TestDuplicateNodeNameRefused(t *testing.T) {
	srv := etcdtest.Start(t)
	first := startNode(t, srv, "same", nil)
	etcdtest.Eventually(t, 5*time.Second, first.Ready, "first node not ready")
	second := startNode(t, srv, "same", nil)
	select {
	case err := <-second.done:
		close(second.done)
		if !errors.Is(err, ErrNodeTaken) {
			t.Fatalf("second agent with the same name: got %v, want ErrNodeTaken", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second agent with the same name did not refuse to start")
	}
	if !first.Ready() {
		t.Fatal("first agent lost its place")
	}
}

// A restarted agent (same name, new process) waits for its previous lease
// to expire instead of refusing.
func TestRestartAfterCrashTakesNameBack(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	// A crashed agent: a member record under a lease nobody refreshes.
	lease, err := cli.Grant(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), testKeys.Member("n1"), `{"node":"n1"}`, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, srv, "n1", nil)
	etcdtest.Eventually(t, 5*time.Second, n.Ready, "restarted agent did not take its name back")
}

// crashedRun leaves in etcd what an agent killed with -9 leaves: its member
// record and election key under a lease nobody refreshes, alive for ttl
// seconds (an embedded etcd restarts leases at full length); leaseFile, if
// not empty, records that lease as the agent would have.
func crashedRun(t *testing.T, cli *clientv3.Client, node string, ttl int64, file string) clientv3.LeaseID {
	t.Helper()
	ctx := context.Background()
	lease, err := cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	key := testKeys.Member(node)
	if _, err := cli.Put(ctx, key, `{"node":"`+node+`","api":"127.0.0.1:1"}`, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, fmt.Sprintf("%s/%x", testKeys.Election(), lease.ID), node, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if file != "" {
		if err := (leaseFile{path: file}).write(key, lease.ID); err != nil {
			t.Fatal(err)
		}
	}
	return lease.ID
}

// An agent restarted on its data dir after a crash recognises the lease of
// its previous run and revokes it: it is ready and master at once, long
// before that lease would expire, instead of waiting TTL+1s and refusing
// its own name.
func TestCrashRestartTakesOverPreviousLease(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	file := filepath.Join(t.TempDir(), "lease.json")
	old := crashedRun(t, cli, "n1", 600, file)

	cfg := nodeConfig("n1")
	cfg.LeaseFile = file
	d := &duty{}
	n := startNodeConfig(t, cli, cfg, d)
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		select {
		case err := <-n.done:
			close(n.done)
			t.Fatalf("restarted agent refused to start: %v", err)
		default:
		}
		return n.Ready() && n.Master()
	}, "restarted agent not ready and master, though its previous lease has 600s to live")
	ttl, err := cli.TimeToLive(context.Background(), old)
	if err != nil || ttl.TTL != -1 {
		t.Fatalf("the previous run's lease %x is still alive (ttl %d, %v)", old, ttl.TTL, err)
	}
	etcdtest.Eventually(t, 5*time.Second, func() bool { return d.active.Load() == 1 }, "master duties not running")
	// The file now names the new lease; a clean stop removes it.
	if got, err := (leaseFile{path: file}).read(testKeys.Member("n1")); err != nil || got == 0 || got == old {
		t.Fatalf("lease file after joining: %x, %v", got, err)
	}
	if err := n.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("lease file left after a clean stop: %v", err)
	}
}

// Another agent of the same name, with its own data dir (its lease file
// names another lease, or none), is still refused while the first lives.
func TestOtherAgentWithSameNameStillRefused(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	first := startNode(t, srv, "same", nil)
	etcdtest.Eventually(t, 5*time.Second, first.Ready, "first node not ready")
	file := filepath.Join(t.TempDir(), "lease.json")
	crashedRun(t, cli, "other", 600, file) // a lease of its own, for another key
	cfg := nodeConfig("same")
	cfg.LeaseFile = file
	second := startNodeConfig(t, cli, cfg, nil)
	select {
	case err := <-second.done:
		close(second.done)
		if !errors.Is(err, ErrNodeTaken) {
			t.Fatalf("second agent with the same name: got %v, want ErrNodeTaken", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("second agent with the same name did not refuse to start")
	}
	if !first.Ready() {
		t.Fatal("first agent lost its place")
	}
}

// A duty whose fenced write is refused ends the term; the node campaigns
// again and starts a new term.
func TestFencedDutyEndsTerm(t *testing.T) {
	srv := etcdtest.Start(t)
	d := &duty{fail: etcd.ErrFenced}
	n := startNode(t, srv, "n1", d)
	etcdtest.Eventually(t, 10*time.Second, func() bool { return d.terms.Load() >= 2 }, "no new term after a fenced write")
	if got := testutil.ToFloat64(n.m.electionsLost); got < 1 {
		t.Fatalf("agent_elections_lost_total = %v after a fenced step-down", got)
	}
}

// Deleting the election key (an operator, or a bug elsewhere) ends the term
// at once, though the session lives on.
func TestDeletedElectionKeyEndsTerm(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	d := &duty{}
	n := startNode(t, srv, "n1", d)
	etcdtest.Eventually(t, 5*time.Second, func() bool { return d.active.Load() == 1 }, "not master")
	if _, err := cli.Delete(context.Background(), testKeys.Election()+"/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 5*time.Second, func() bool { return d.terms.Load() == 2 && d.active.Load() == 1 }, "term did not restart after its key was deleted")
	if !n.Ready() {
		t.Fatal("node left the cluster")
	}
}

// etcd becomes unreachable (cut at the network) and comes back.
func TestEtcdOutage(t *testing.T) {
	srv := etcdtest.Start(t)
	px := srv.Proxy()
	d := &duty{}
	var nodes []*testNode
	for _, name := range []string{"a", "b"} {
		nodes = append(nodes, startNodeWith(t, srv.ClientVia(px.Endpoint()), name, d))
	}
	etcdtest.Eventually(t, 5*time.Second, func() bool { return d.active.Load() == 1 }, "no master")

	px.Cut()
	// Within TTL + 1s of losing etcd, no agent is ready and none acts as master.
	etcdtest.Eventually(t, 4*time.Second, func() bool {
		return !nodes[0].Ready() && !nodes[1].Ready() && d.active.Load() == 0
	}, "agents still ready or master during the outage")

	px.Restore()
	etcdtest.Eventually(t, 15*time.Second, func() bool {
		return nodes[0].Ready() && nodes[1].Ready() && d.active.Load() == 1
	}, "agents did not rejoin with exactly one master")
	masters := 0
	for _, n := range nodes {
		if n.Master() {
			masters++
		}
	}
	if masters != 1 {
		t.Fatalf("%d masters after the outage", masters)
	}
	if d.maxActive.Load() != 1 {
		t.Fatalf("at some moment %d masters ran their duties", d.maxActive.Load())
	}
}
