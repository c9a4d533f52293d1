package apps

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	pmodel "github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/slave"
)

// fakeSupervisor records the desired sets it is given and reports the
// states a test sets; the real Supervisor is tested in drivers/workload.
type fakeSupervisor struct {
	mu     sync.Mutex
	sets   int
	specs  []workload.Spec
	states []workload.State
	calls  int // of States
}

func (f *fakeSupervisor) Set(specs []workload.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets++
	f.specs = slices.Clone(specs)
	return nil
}

func (f *fakeSupervisor) States() []workload.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return slices.Clone(f.states)
}

func (f *fakeSupervisor) statesCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// guids are the names of the desired set, sorted.
func (f *fakeSupervisor) guids() []string { return slices.Sorted(maps.Keys(f.desired())) }

func (f *fakeSupervisor) desired() map[string]workload.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]workload.Spec{}
	for _, s := range f.specs {
		out[s.Name] = s
	}
	return out
}

func (f *fakeSupervisor) setStates(st ...workload.State) {
	f.mu.Lock()
	f.states = st
	f.mu.Unlock()
}

// node runs a Reconciler and the real TargetPublisher for node n1 under
// one session.
type node struct {
	rec  *Reconciler
	sup  *fakeSupervisor
	sess *concurrency.Session
	reg  *prometheus.Registry
}

func startNode(t *testing.T, cli *clientv3.Client, name string) *node {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	n := &node{sup: &fakeSupervisor{}, sess: sess, reg: prometheus.NewRegistry()}
	pub := slave.NewTargetPublisher(name, testKeys, cli, quiet(), n.reg)
	n.rec = NewReconciler(cli, ReconcilerConfig{
		Node: name, Cluster: "c1", Keys: testKeys,
		OTLPEndpoint: "http://127.0.0.1:14318", Host: "10.0.0.5", StatusInterval: 20 * time.Millisecond,
		AllowedImages: testImages,
	}, n.sup, pub, quiet(), n.reg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range []slave.SessionWorker{pub, n.rec} {
		wg.Go(func() {
			if err := w.Run(ctx, sess); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		sess.Close()
	})
	return n
}

func putRecord(t *testing.T, cli *clientv3.Client, rec Record) {
	t.Helper()
	b, _ := json.Marshal(rec)
	if _, err := cli.Put(context.Background(), testKeys.App(rec.Spec.GUID), string(b)); err != nil {
		t.Fatal(err)
	}
}

func getKV(t *testing.T, cli *clientv3.Client, key string) (string, clientv3.LeaseID, bool) {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, false
	}
	return string(resp.Kvs[0].Value), clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func TestReconcilerRunsAssignedApps(t *testing.T) {
	cli := etcdtest.Start(t).Client()
	full, err := DecodeApp(bytes.NewReader(readExample(t, "full.json")), ImagePolicy{"registry.example/*/*"})
	if err != nil {
		t.Fatal(err)
	}
	putRecord(t, cli, Record{Spec: full, Node: "n1"})
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "elsewhere", Image: "busybox:1"}, Node: "n2"})
	// Written around the API: an env name the API refuses, and a label that
	// would redirect the scrape. Neither may reach a workload or a label.
	if _, err := cli.Put(context.Background(), testKeys.App("evil"),
		`{"spec":{"guid":"evil","image":"busybox:1","env":{"OTEL_SERVICE_NAME":"x"}},"node":"n1"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), testKeys.App("evil2"),
		`{"spec":{"guid":"evil2","image":"busybox:1","labels":{"__address__":"169.254.169.254:80"}},"node":"n1"}`); err != nil {
		t.Fatal(err)
	}

	n := startNode(t, cli, "n1")
	<-n.rec.Synced()
	got := n.sup.desired()
	if len(got) != 1 {
		t.Fatalf("desired %v, want only billing-7f3a", slices.Collect(maps.Keys(got)))
	}
	s := got["billing-7f3a"]
	if s.Name != "billing-7f3a" || s.Hostname != "billing-7f3a" || s.Image != "registry.example/billing/api:2.0.1" || !slices.Equal(s.Args, full.Args) {
		t.Fatalf("spec %+v", s)
	}
	wantEnv := map[string]string{
		"LOG_LEVEL": "info", "DATABASE_URL": "postgres://billing@db.internal:5432/billing",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:14318",
		"OTEL_RESOURCE_ATTRIBUTES":    "guid=billing-7f3a,node=n1,cluster=c1",
		"OTEL_SERVICE_NAME":           "billing-7f3a",
	}
	if !maps.Equal(s.Env, wantEnv) {
		t.Fatalf("env %v, want %v", s.Env, wantEnv)
	}
	wantLabels := map[string]string{
		workload.LabelGUID: "billing-7f3a", workload.LabelRole: workload.RoleApp,
		workload.LabelNode: "n1", workload.LabelCluster: "c1",
		LabelAppPrefix + "team": "payments", LabelAppPrefix + "tier": "backend",
	}
	if !maps.Equal(s.Labels, wantLabels) {
		t.Fatalf("labels %v, want %v", s.Labels, wantLabels)
	}
	if got := testutil.ToFloat64(n.rec.m.invalid); got != 2 {
		t.Fatalf("invalid records counted %v, want 2", got)
	}

	// The metrics port is published as a target group under the lease.
	var tg etcd.Target
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		set, err := etcd.Registry{KV: cli, Keys: testKeys}.Targets(context.Background())
		if err != nil || len(set.Targets) != 1 {
			return false
		}
		tg = set.Targets[0]
		return true
	}, "no app target published")
	if tg.Node != "n1" || tg.Job != "apps" || tg.ID != "billing-7f3a" || !slices.Equal(tg.Targets, []string{"10.0.0.5:9102"}) {
		t.Fatalf("target %+v", tg)
	}
	for k, v := range map[string]string{"guid": "billing-7f3a", "node": "n1", "cluster": "c1", "__metrics_path__": "/internal/metrics", "team": "payments"} {
		if string(tg.Labels[pmodel.LabelName(k)]) != v {
			t.Fatalf("target labels %v: %s is not %q", tg.Labels, k, v)
		}
	}
	if _, lease, _ := getKV(t, cli, testKeys.Target("n1", "apps", "billing-7f3a")); lease != n.sess.Lease() {
		t.Fatalf("target under lease %x, want the session's %x", lease, n.sess.Lease())
	}

	// The observed state is written under the session lease, and again when
	// it changes.
	waitStatus := func(want string) Status {
		t.Helper()
		var st Status
		etcdtest.Eventually(t, 5*time.Second, func() bool {
			v, lease, ok := getKV(t, cli, testKeys.AppStatus("billing-7f3a"))
			if !ok || lease != n.sess.Lease() || json.Unmarshal([]byte(v), &st) != nil {
				return false
			}
			return st.Status == want
		}, "status never became %q", want)
		return st
	}
	if st := waitStatus(StatusPending); st.Node != "n1" {
		t.Fatalf("status %+v", st)
	}
	since := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
	n.sup.setStates(workload.State{Name: "billing-7f3a", Status: workload.StatusRunning, ID: "c0ffee", Since: since, Restarts: 1})
	if st := waitStatus("running"); st.ID != "c0ffee" || !st.Since.Equal(since) || st.Restarts != 1 {
		t.Fatalf("status %+v", st)
	}
	if _, _, ok := getKV(t, cli, testKeys.AppStatus("elsewhere")); ok {
		t.Fatal("n1 wrote the status of an app assigned to n2")
	}

	// Deleted (around the API, so that the status is left to the node): the
	// workload, its target and its status go.
	if _, err := cli.Delete(context.Background(), testKeys.App("billing-7f3a")); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		_, _, ok := getKV(t, cli, testKeys.AppStatus("billing-7f3a"))
		_, _, tok := getKV(t, cli, testKeys.Target("n1", "apps", "billing-7f3a"))
		return len(n.sup.desired()) == 0 && !ok && !tok
	}, "deleted app still desired, or its status or target left")
}

// TestReconcilerLeavesAnotherNodesStatus: when an app moves away, the node
// deletes only the status it wrote, never the one its new node writes.
func TestReconcilerLeavesAnotherNodesStatus(t *testing.T) {
	cli := etcdtest.Start(t).Client()
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "mover", Image: "busybox:1"}, Node: "n1"})
	n1 := startNode(t, cli, "n1")
	<-n1.rec.Synced()
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		_, lease, ok := getKV(t, cli, testKeys.AppStatus("mover"))
		return ok && lease == n1.sess.Lease()
	}, "n1 never wrote the status")

	// The new node's status, under its own lease, then the move.
	other, err := cli.Grant(context.Background(), 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), testKeys.AppStatus("mover"), `{"node":"n2","status":"running","exit_code":0,"restarts":0}`, clientv3.WithLease(other.ID)); err != nil {
		t.Fatal(err)
	}
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "mover", Image: "busybox:1"}, Node: "n2"})
	etcdtest.Eventually(t, 5*time.Second, func() bool { return len(n1.sup.desired()) == 0 }, "n1 still runs the moved app")
	// Two more status rounds of n1 begin after the one that followed the
	// move, so that one has finished.
	calls := n1.sup.statesCalls()
	etcdtest.Eventually(t, 5*time.Second, func() bool { return n1.sup.statesCalls() >= calls+2 }, "n1 stopped reporting")
	if _, lease, ok := getKV(t, cli, testKeys.AppStatus("mover")); !ok || lease != other.ID {
		t.Fatalf("status lease %x, present %v; want the new node's %x", lease, ok, other.ID)
	}
}

// TestReconcilerRefusesWhatTheAPIWould: records written straight into etcd
// with an image outside this node's allow-list, above MaxRecordBytes, or
// with keys encoding/json would read loosely are not run: each is counted
// once, and its status under the node's lease says why. A record put right
// is run.
func TestReconcilerRefusesWhatTheAPIWould(t *testing.T) {
	cli := etcdtest.Start(t).Client()
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "good", Image: "busybox:1"}, Node: "n1"})
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "miner", Image: "evil.example/miner:1"}, Node: "n1"})
	env := map[string]string{}
	for i := range 80 {
		env[fmt.Sprintf("V%d", i)] = strings.Repeat("x", 4000) // each field within its limit
	}
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "huge", Image: "busybox:1", Env: env}, Node: "n1"})
	for guid, value := range map[string]string{
		"upper": `{"spec":{"guid":"upper","Image":"evil.example/miner:1","image":"busybox:1"},"node":"n1"}`,
		"twice": `{"spec":{"guid":"twice","image":"busybox:1","image":"evil.example/miner:1"},"node":"n1"}`,
	} {
		if _, err := cli.Put(context.Background(), testKeys.App(guid), value); err != nil {
			t.Fatal(err)
		}
	}
	// An app that names a chart runs only in Kubernetes mode.
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "charted", Chart: "web"}, Node: "n1"})
	// Another node's record outside n1's list is that node's business.
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "theirs", Image: "evil.example/miner:1"}, Node: "n2"})

	n := startNode(t, cli, "n1")
	<-n.rec.Synced()
	if got := n.sup.guids(); !slices.Equal(got, []string{"good"}) {
		t.Fatalf("desired %v, want only good", got)
	}
	for guid, why := range map[string]string{
		"miner":   "spec.image: must match one of api.allowed_images",
		"huge":    fmt.Sprintf("larger than the %d bytes an app record may have", MaxRecordBytes),
		"upper":   `Image: field names are case-sensitive: use "image"`,
		"twice":   `image: duplicate key "image"`,
		"charted": `spec.chart: an app that names a chart runs only in Kubernetes mode (stack.driver = helm), got "web"`,
	} {
		etcdtest.Eventually(t, 5*time.Second, func() bool {
			v, lease, ok := getKV(t, cli, testKeys.AppStatus(guid))
			var st Status
			return ok && lease == n.sess.Lease() && json.Unmarshal([]byte(v), &st) == nil &&
				st.Status == StatusInvalid && st.Node == "n1" && strings.Contains(st.LastError, why)
		}, "status of %s never said %q", guid, why)
	}
	if _, _, ok := getKV(t, cli, testKeys.AppStatus("theirs")); ok {
		t.Fatal("n1 wrote a status for n2's app")
	}
	if got := testutil.ToFloat64(n.rec.m.invalid); got != 5 {
		t.Fatalf("invalid records counted %v, want 5 (once each)", got)
	}

	// Put right, the app runs.
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "miner", Image: "busybox:1"}, Node: "n1"})
	etcdtest.Eventually(t, 5*time.Second, func() bool { _, ok := n.sup.desired()["miner"]; return ok }, "corrected record not run")
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		v, _, _ := getKV(t, cli, testKeys.AppStatus("miner"))
		var st Status
		return json.Unmarshal([]byte(v), &st) == nil && st.Status == StatusPending
	}, "status of the corrected app still invalid")
	if got := testutil.ToFloat64(n.rec.m.invalid); got != 5 {
		t.Fatalf("invalid records counted %v after the status rounds, want still 5", got)
	}
}

// A reloaded api.allowed_images (SIGHUP) is applied to the records already
// assigned here: an app it now allows starts, one it no longer allows is
// stopped and reported as refused, without a write to its record.
func TestReconcilerFollowsAReloadedImageList(t *testing.T) {
	cli := etcdtest.Start(t).Client()
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "web", Image: "busybox:1"}, Node: "n1"})
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "cache", Image: "registry.example/cache:2"}, Node: "n1"})
	n := startNode(t, cli, "n1")
	<-n.rec.Synced()
	if got := n.sup.guids(); !slices.Equal(got, []string{"web"}) {
		t.Fatalf("desired %v before the reload, want only web", got)
	}

	n.rec.SetAllowedImages([]string{"registry.example/*"})
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		return slices.Equal(n.sup.guids(), []string{"cache"})
	}, "desired set to become cache only after the reload; it is %v", poll.Latest(func() any { return n.sup.guids() }))
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		v, _, _ := getKV(t, cli, testKeys.AppStatus("web"))
		var st Status
		return json.Unmarshal([]byte(v), &st) == nil && st.Status == StatusInvalid &&
			strings.Contains(st.LastError, "spec.image: must match one of api.allowed_images")
	}, "status of web to say its image is no longer allowed")

	// Records written after the reload are checked against the new list.
	putRecord(t, cli, Record{Spec: AppSpec{GUID: "late", Image: "registry.example/late:1"}, Node: "n1"})
	etcdtest.Eventually(t, 5*time.Second, func() bool { _, ok := n.sup.desired()["late"]; return ok },
		"a record written after the reload to run")
}
