package releases

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/helm"
	"github.com/agentproj/agent/drivers/helm/kubetest"
	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/slave/apps"
	"github.com/agentproj/agent/stackconfig"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// fixture is one cluster of agents: an embedded etcd, the shared API, a
// namespace of the agent's own. Every name a test makes starts with p,
// so tests on the one API keep apart.
type fixture struct {
	t       *testing.T
	p       string
	api     *kubetest.API
	k       kubernetes.Interface
	cli     *clientv3.Client
	keys    etcd.Keys
	agentNS string
}

func newFixture(t *testing.T, p string) *fixture {
	t.Helper()
	api := kubetest.Shared(t)
	f := &fixture{t: t, p: p, api: api, k: api.Client(t), cli: etcdtest.Start(t).Client(), keys: etcd.NewKeys("/agent", p), agentNS: p + "-agent"}
	if _, err := f.k.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.agentNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return f
}

// config stands the project's small charts in for the upstream ones:
// hello for the metrics stack and the trace collector, guidapp and a
// hello that the API refuses as app charts.
func (f *fixture) config() Config {
	h := stackconfig.DefaultHelm
	h.Namespace = f.agentNS
	h.Metrics = stackconfig.HelmChart{Enabled: true, Release: "agent-metrics", Path: kubetest.Chart("hello")}
	h.Logs = stackconfig.HelmChart{Enabled: false, Release: "agent-logs"}
	h.Traces = stackconfig.HelmChart{Enabled: true, Release: "agent-traces", Path: kubetest.Chart("hello")}
	h.AppCharts = map[string]stackconfig.HelmChart{
		"guidapp": {Path: kubetest.Chart("guidapp")},
		"broken":  {Path: kubetest.Chart("hello"), Values: "port: 70000"},
	}
	return Config{
		Node: "n1", Cluster: f.p, Keys: f.keys, Helm: h,
		Values: Input{
			Cluster: f.p, Namespace: f.agentNS, Service: "agent", ServicePort: 9464,
			Relay: true, Prometheus: stackconfig.DefaultStack.Prometheus,
			Manager:       stackconfig.Manager{TracesOTLPEndpoint: "http://manager.example:4317", TracesOTLPProtocol: "grpc"},
			TracesRelease: "agent-traces", TracesQueueSize: 100,
		},
		AllowedImages: []string{"busybox:*"},
		Interval:      time.Second, BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
	}
}

// driver is a helm client with user's own kubeconfig.
func (f *fixture) driver(user string) *helm.Client {
	f.t.Helper()
	c, err := helm.New(context.Background(), helm.Config{
		Kubeconfig: f.api.Kubeconfig(f.t, user, ""), Namespace: f.agentNS, Timeout: time.Minute,
		ChartCache: filepath.Join(f.t.TempDir(), "charts"),
	}, helm.WithLogger(quiet()))
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) putApp(spec apps.AppSpec) {
	f.t.Helper()
	b, _ := json.Marshal(apps.Record{Spec: spec, Node: "n1", Created: time.Now()})
	if _, err := f.cli.Put(context.Background(), f.keys.App(spec.GUID), string(b)); err != nil {
		f.t.Fatal(err)
	}
}

// term is one running term of a duty.
type runningTerm struct {
	sess   *concurrency.Session
	lead   etcd.Leader
	cancel context.CancelFunc
	done   chan error
}

// start wins a term for node and runs d in it.
func (f *fixture) start(d interface {
	Run(context.Context, etcd.Leader) error
}, node string,
) *runningTerm {
	f.t.Helper()
	sess, lead := etcdtest.Campaign(f.t, f.cli, f.keys, node, 5)
	ctx, cancel := context.WithCancel(context.Background())
	rt := &runningTerm{sess: sess, lead: lead, cancel: cancel, done: make(chan error, 1)}
	go func() { rt.done <- d.Run(ctx, lead) }()
	f.t.Cleanup(func() { rt.stop(f.t) })
	return rt
}

// stop ends the term: the duty stops, the session (and the election key)
// goes. It returns what Run returned.
func (rt *runningTerm) stop(t testing.TB) error {
	t.Helper()
	if rt.cancel == nil {
		return nil
	}
	rt.cancel()
	rt.cancel = nil
	var err error
	select {
	case err = <-rt.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the duty did not return within 2 minutes of its term's end")
	}
	_ = rt.sess.Close()
	return err
}

func (f *fixture) releases(d *helm.Client) map[string]state.Release {
	f.t.Helper()
	list, err := d.List(context.Background(), map[string]string{workload.LabelCluster: f.p})
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]state.Release{}
	for _, s := range list {
		out[s.Namespace+"/"+s.Name] = s
	}
	return out
}

// settled waits until every release in want is deployed, the duty has
// checked every release at least checks times, and its status has no
// error.
func (f *fixture) settled(d *Duty, c *helm.Client, want []string, checks int) map[string]state.Release {
	f.t.Helper()
	var got map[string]state.Release
	etcdtest.Eventually(f.t, 2*time.Minute, func() bool {
		got = f.releases(c)
		for _, k := range want {
			if got[k].Status != "deployed" {
				return false
			}
		}
		return len(got) == len(want) && testutil.ToFloat64(d.m.actions.WithLabelValues(workload.RoleApp, "ok")) >= float64(checks)
	}, "releases not settled: %v", func() []string {
		var s []string
		for k, v := range got {
			s = append(s, k+"="+v.Status)
		}
		return s
	}())
	return got
}

func (f *fixture) appStatus(guid string) (apps.Status, clientv3.LeaseID, bool) {
	f.t.Helper()
	resp, err := f.cli.Get(context.Background(), f.keys.AppStatus(guid))
	if err != nil {
		f.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return apps.Status{}, 0, false
	}
	var s apps.Status
	if err := json.Unmarshal(resp.Kvs[0].Value, &s); err != nil {
		f.t.Fatal(err)
	}
	return s, clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func envOf(c corev1.Container) map[string]string {
	out := map[string]string{}
	for _, e := range c.Env {
		out[e.Name] = e.Value
	}
	return out
}

// The master installs the stack and each app (namespace, trace collector,
// app by image or by chart), and after a restart adopts every release
// without a new revision.
func TestInstallThenAdoptAfterRestart(t *testing.T) {
	f := newFixture(t, "ia")
	ctx := context.Background()
	f.putApp(apps.AppSpec{GUID: "ia-img", Image: "busybox:1.36", Args: []string{"sleep", "1d"}, Env: map[string]string{"MODE": "x"}, Metrics: &apps.Metrics{Port: 9102, Path: "/metrics"}})
	f.putApp(apps.AppSpec{GUID: "ia-chart", Chart: "guidapp", Env: map[string]string{"MODE": "y"}})
	c := f.driver(kubetest.AgentA)
	d := New(f.cli, f.config(), c, quiet(), prometheus.NewRegistry())
	rt := f.start(d, "n1")

	want := []string{f.agentNS + "/agent-metrics", "ia-img/agent-traces", "ia-img/agent-app", "ia-chart/agent-traces", "ia-chart/agent-app"}
	got := f.settled(d, c, want, 2)
	for _, k := range want {
		if got[k].Revision != 1 || got[k].Labels[workload.LabelOwner] != Owner || got[k].Labels[LabelTerm] == "" {
			t.Errorf("%s: %+v", k, got[k])
		}
	}
	if got["ia-img/agent-app"].Labels[workload.LabelGUID] != "ia-img" || got["ia-img/agent-app"].Chart != "agent-app" {
		t.Errorf("app release: %+v", got["ia-img/agent-app"])
	}

	// The app by image: a Deployment whose container name and host name
	// are the guid, with the guid labels and the OTEL_* environment.
	dep, err := f.k.AppsV1().Deployments("ia-img").Get(ctx, "ia-img", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := dep.Spec.Template
	ctr := pod.Spec.Containers[0]
	env := envOf(ctr)
	if ctr.Name != "ia-img" || pod.Spec.Hostname != "ia-img" || ctr.Image != "busybox:1.36" || !slices.Equal(ctr.Args, []string{"sleep", "1d"}) ||
		pod.Labels[workload.LabelGUID] != "ia-img" || dep.Labels[workload.LabelCluster] != "ia" ||
		env["OTEL_SERVICE_NAME"] != "ia-img" || env["OTEL_EXPORTER_OTLP_ENDPOINT"] != "http://agent-traces.ia-img.svc:4318" ||
		env["OTEL_RESOURCE_ATTRIBUTES"] != "guid=ia-img,node=$(K8S_NODE_NAME),cluster=ia" || env["MODE"] != "x" ||
		ctr.Ports[0].ContainerPort != 9102 {
		t.Errorf("Deployment: labels %v, pod %+v", dep.Labels, pod)
	}
	// The app by chart: the chart's StatefulSet, named by the guid it got.
	sts, err := f.k.AppsV1().StatefulSets("ia-chart").Get(ctx, "ia-chart", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := sts.Spec.Template.Spec.Containers[0]; c.Name != "ia-chart" || envOf(c)["MODE"] != "y" || sts.Labels[workload.LabelGUID] != "ia-chart" {
		t.Errorf("StatefulSet: %+v", sts)
	}
	// Namespaces named and labelled by the guid.
	for _, guid := range []string{"ia-img", "ia-chart"} {
		ns, err := f.k.CoreV1().Namespaces().Get(ctx, guid, metav1.GetOptions{})
		if err != nil || ns.Labels[workload.LabelGUID] != guid || ns.Labels[workload.LabelManaged] != "true" || ns.Labels[workload.LabelCluster] != "ia" {
			t.Errorf("namespace %s: %v, %v", guid, ns, err)
		}
		etcdtest.Eventually(t, 10*time.Second, func() bool {
			s, lease, ok := f.appStatus(guid)
			return ok && s.Status == "deployed" && lease == rt.lead.Lease && strings.Contains(s.ID, "revision 1")
		}, "status/apps/%s", guid)
	}
	st := d.Status()
	if st == nil || len(st.Releases) != 5 || len(st.Namespaces) != 2 {
		t.Fatalf("Status() = %+v", st)
	}

	// Restart: the term ends, a new agent process (a new duty and driver)
	// wins the next one and adopts everything as it is.
	if err := rt.stop(t); err != nil {
		t.Fatalf("Run at the end of the term: %v", err)
	}
	if d.Status() != nil {
		t.Fatal("a duty out of its term reports a status")
	}
	c2 := f.driver(kubetest.AgentA)
	d2 := New(f.cli, f.config(), c2, quiet(), prometheus.NewRegistry())
	f.start(d2, "n1")
	got = f.settled(d2, c2, want, 4) // every app release checked twice
	for _, k := range want {
		if got[k].Revision != 1 {
			t.Errorf("%s after the restart: revision %d, want 1 (adopted)", k, got[k].Revision)
		}
	}
}

// Two agents with their own credentials: the first master's term ends,
// the second adopts what it installed, then upgrades what its own
// configuration changes. The first one, run again on its stale term,
// writes nothing.
func TestFailoverAdoptsAndAStaleMasterWritesNothing(t *testing.T) {
	f := newFixture(t, "fo")
	f.putApp(apps.AppSpec{GUID: "fo-app", Image: "busybox:1"})
	want := []string{f.agentNS + "/agent-metrics", "fo-app/agent-traces", "fo-app/agent-app"}

	ca := f.driver(kubetest.AgentA)
	da := New(f.cli, f.config(), ca, quiet(), prometheus.NewRegistry())
	ta := f.start(da, "a")
	f.settled(da, ca, want, 1)
	staleLead := ta.lead
	if err := ta.stop(t); err != nil {
		t.Fatal(err)
	}

	cb := f.driver(kubetest.AgentB)
	cfgB := f.config()
	cfgB.Helm.Metrics.Values = "message: from b"
	db := New(f.cli, cfgB, cb, quiet(), prometheus.NewRegistry())
	tb := f.start(db, "b")
	var got map[string]state.Release
	etcdtest.Eventually(t, time.Minute, func() bool {
		got = f.releases(cb)
		return got[f.agentNS+"/agent-metrics"].Revision == 2 && got[f.agentNS+"/agent-metrics"].Status == "deployed"
	}, "metrics not upgraded by b: %+v", got)
	got = f.settled(db, cb, want, 2)
	if got["fo-app/agent-app"].Revision != 1 || got["fo-app/agent-traces"].Revision != 1 {
		t.Fatalf("b changed what it should adopt: %+v", got)
	}
	if got[f.agentNS+"/agent-metrics"].Labels[LabelTerm] != strconv.FormatInt(tb.lead.Rev, 10) {
		t.Fatalf("metrics carries term %s, want b's %d", got[f.agentNS+"/agent-metrics"].Labels[LabelTerm], tb.lead.Rev)
	}
	cm, err := f.k.CoreV1().ConfigMaps(f.agentNS).Get(context.Background(), "agent-metrics-hello", metav1.GetOptions{})
	if err != nil || cm.Data["message"] != "from b" {
		t.Fatalf("metrics ConfigMap = %v, %v", cm, err)
	}

	// a, run again on its old term, wants other values and another app:
	// its first write is fenced and ends the term; nothing changes.
	f.putApp(apps.AppSpec{GUID: "fo-late", Image: "busybox:1"})
	cfgA := f.config()
	cfgA.Helm.Metrics.Values = "message: from a stale master"
	stale := New(f.cli, cfgA, ca, quiet(), prometheus.NewRegistry())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := stale.Run(ctx, staleLead); !errors.Is(err, etcd.ErrFenced) {
		t.Fatalf("stale Run = %v, want etcd.ErrFenced", err)
	}
	// b installs fo-late meanwhile; whatever exists carries b's term.
	for k, st := range f.releases(cb) {
		if st.Revision > 1 && st.Labels[LabelTerm] != strconv.FormatInt(tb.lead.Rev, 10) {
			t.Errorf("%s written by another term than b's: %+v", k, st)
		}
	}
	got = f.releases(cb)
	if m := got[f.agentNS+"/agent-metrics"]; m.Revision != 2 || m.Labels[LabelTerm] != strconv.FormatInt(tb.lead.Rev, 10) {
		t.Fatalf("the stale master changed metrics: %+v", m)
	}
	if cm, _ := f.k.CoreV1().ConfigMaps(f.agentNS).Get(context.Background(), "agent-metrics-hello", metav1.GetOptions{}); cm.Data["message"] != "from b" {
		t.Fatalf("the stale master's values reached the ConfigMap: %v", cm.Data)
	}
}

// Deleting an app uninstalls its releases, deletes its namespace (it stays
// Terminating here: no namespace controller runs) and its status.
func TestDeletedAppIsUninstalledAndItsNamespaceDeleted(t *testing.T) {
	f := newFixture(t, "da")
	ctx := context.Background()
	f.putApp(apps.AppSpec{GUID: "da-app", Image: "busybox:1"})
	c := f.driver(kubetest.AgentA)
	d := New(f.cli, f.config(), c, quiet(), prometheus.NewRegistry())
	f.start(d, "n1")
	f.settled(d, c, []string{f.agentNS + "/agent-metrics", "da-app/agent-traces", "da-app/agent-app"}, 1)
	etcdtest.Eventually(t, 10*time.Second, func() bool { _, _, ok := f.appStatus("da-app"); return ok }, "no app status")

	if _, err := f.cli.Delete(ctx, f.keys.App("da-app")); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, time.Minute, func() bool {
		got := f.releases(c)
		_, app := got["da-app/agent-app"]
		_, traces := got["da-app/agent-traces"]
		ns, err := f.k.CoreV1().Namespaces().Get(ctx, "da-app", metav1.GetOptions{})
		_, _, status := f.appStatus("da-app")
		return !app && !traces && err == nil && ns.DeletionTimestamp != nil && !status
	}, "app releases, namespace or status still there")
	if _, err := f.k.AppsV1().Deployments("da-app").Get(ctx, "da-app", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the app's Deployment after the uninstall: %v", err)
	}
	if got := f.releases(c); got[f.agentNS+"/agent-metrics"].Status != "deployed" {
		t.Fatalf("the metrics stack went with the app: %+v", got)
	}
}

// A release the API refuses is reported with Helm's message and retried
// with backoff; the other releases are installed meanwhile. Records the
// master refuses install nothing and say why.
func TestFailuresAreReportedRetriedAndHoldNothingUp(t *testing.T) {
	f := newFixture(t, "fr")
	f.putApp(apps.AppSpec{GUID: "fr-bad", Chart: "broken"})
	f.putApp(apps.AppSpec{GUID: "fr-good", Image: "busybox:1"})
	f.putApp(apps.AppSpec{GUID: "fr-evil", Image: "evil.example/miner:1"})
	f.putApp(apps.AppSpec{GUID: "kube-public", Image: "busybox:1"})
	f.putApp(apps.AppSpec{GUID: "fr-nochart", Chart: "nope"})
	c := f.driver(kubetest.AgentA)
	d := New(f.cli, f.config(), c, quiet(), prometheus.NewRegistry())
	f.start(d, "n1")

	const apiMsg = "spec.ports[0].port: Invalid value: 70000"
	etcdtest.Eventually(t, 2*time.Minute, func() bool {
		got := f.releases(c)
		return got["fr-good/agent-app"].Status == "deployed" && got[f.agentNS+"/agent-metrics"].Status == "deployed" &&
			testutil.ToFloat64(d.m.actions.WithLabelValues(workload.RoleApp, "error")) >= 3
	}, "good releases not installed, or the bad one not retried")
	var bad *state.ReleaseReport
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		for _, r := range d.Status().Releases {
			if r.Namespace == "fr-bad" && r.Name == AppRelease {
				bad = &r
			}
		}
		return bad != nil && bad.Status == "failed" && strings.Contains(bad.LastError, apiMsg) && strings.Contains(bad.Description, apiMsg) && !bad.NextTry.IsZero()
	}, "status of the refused release = %+v", bad)
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		s, _, ok := f.appStatus("fr-bad")
		return ok && s.Status == "failed" && strings.Contains(s.LastError, apiMsg)
	}, "status/apps/fr-bad does not carry Helm's message")
	for guid, why := range map[string]string{
		"fr-evil":     `spec.image: must match one of api.allowed_images (busybox:*), got "evil.example/miner:1"`,
		"kube-public": `spec.guid: "kube-public" cannot be a namespace of the agent's: it is a namespace of Kubernetes itself`,
		"fr-nochart":  `spec.chart: must be one of stack.helm.app_charts (broken, guidapp), got "nope"`,
	} {
		etcdtest.Eventually(t, 10*time.Second, func() bool {
			s, _, ok := f.appStatus(guid)
			return ok && s.Status == apps.StatusInvalid && s.LastError == why
		}, "status/apps/%s does not say %q", guid, why)
		if _, ok := f.releases(c)[guid+"/agent-app"]; ok {
			t.Errorf("%s was installed", guid)
		}
	}
	if _, err := f.k.CoreV1().Namespaces().Get(context.Background(), "fr-evil", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a namespace for a refused app: %v", err)
	}
}

// Releases of this cluster's master that nothing wants are removed;
// releases of another cluster, or not the agent's, are left alone.
func TestOrphansAreRemovedAndOthersLeftAlone(t *testing.T) {
	f := newFixture(t, "or")
	ctx := context.Background()
	c := f.driver(kubetest.AgentA)
	allow := func(context.Context, state.Release) error { return nil }
	for _, r := range []struct{ name, cluster string }{{"orphan", "or"}, {"theirs", "other"}} {
		hello, err := c.LoadChart(ctx, helm.ChartRef{Path: kubetest.Chart("hello")})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Ensure(ctx, helm.Release{Name: r.name, Namespace: f.agentNS, Chart: hello, Values: map[string]any{},
			Labels: map[string]string{workload.LabelOwner: Owner, workload.LabelCluster: r.cluster}}, allow)
		if err != nil {
			t.Fatal(err)
		}
	}
	d := New(f.cli, f.config(), c, quiet(), prometheus.NewRegistry())
	f.start(d, "n1")
	etcdtest.Eventually(t, time.Minute, func() bool {
		orphan, _ := c.Get(ctx, f.agentNS, "orphan")
		metrics, _ := c.Get(ctx, f.agentNS, "agent-metrics")
		return orphan.Status == state.Missing && metrics.Status == "deployed"
	}, "the orphan was not removed")
	if theirs, _ := c.Get(ctx, f.agentNS, "theirs"); theirs.Status != "deployed" {
		t.Fatalf("another cluster's release: %+v", theirs)
	}
}

// The master's pod carries the master label for the length of its term;
// a stale term labels nothing.
func TestMasterLabelFollowsTheTerm(t *testing.T) {
	f := newFixture(t, "ml")
	ctx := context.Background()
	if _, err := f.k.CoreV1().ServiceAccounts(f.agentNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"agent-a", "agent-b"} {
		if _, err := f.k.CoreV1().Pods(f.agentNS).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/name": "agent"}},
			Spec:       corev1.PodSpec{NodeName: name, Containers: []corev1.Container{{Name: "agent", Image: "agent:dev"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	labelled := func() []string {
		pods, err := f.k.CoreV1().Pods(f.agentNS).List(ctx, metav1.ListOptions{LabelSelector: LabelMaster + "=true"})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range pods.Items {
			out = append(out, p.Name)
		}
		return out
	}
	ma := NewMasterLabel(f.driver(kubetest.AgentA), f.agentNS, "agent-a", quiet())
	ta := f.start(ma, "a")
	etcdtest.Eventually(t, 10*time.Second, func() bool { return slices.Equal(labelled(), []string{"agent-a"}) }, "agent-a not labelled")
	stale := ta.lead
	if err := ta.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := labelled(); len(got) != 0 {
		t.Fatalf("labelled after the term: %v", got)
	}
	mb := NewMasterLabel(f.driver(kubetest.AgentB), f.agentNS, "agent-b", quiet())
	f.start(mb, "b")
	etcdtest.Eventually(t, 10*time.Second, func() bool { return slices.Equal(labelled(), []string{"agent-b"}) }, "agent-b not labelled")
	if err := ma.Run(ctx, stale); !errors.Is(err, etcd.ErrFenced) {
		t.Fatalf("MasterLabel on a stale term = %v", err)
	}
	if got := labelled(); !slices.Equal(got, []string{"agent-b"}) {
		t.Fatalf("after a stale term: %v", got)
	}
}

// An install whose release stopped being wanted while it ran (its app
// deleted meanwhile) is recorded without a crash, and the release is left
// for the next action to remove.
func TestResultOfAReleaseNoLongerWanted(t *testing.T) {
	d := New(nil, Config{}, nil, quiet(), prometheus.NewRegistry())
	tm := &term{units: map[string]*unit{}, nss: map[string]state.Namespace{}}
	u := &unit{ns: "gone", name: "agent-traces", busy: true, done: ""}
	tm.units["gone/agent-traces"] = u
	st := state.Release{Name: "agent-traces", Namespace: "gone", Revision: 1, Status: "deployed"}
	if err := d.record(context.Background(), tm, result{key: "gone/agent-traces", fp: "old", state: st}); err != nil {
		t.Fatal(err)
	}
	if u.busy || u.done != "" || u.state.Status != "deployed" {
		t.Fatalf("unit after the result: %+v", u)
	}
}

// A reloaded api.allowed_images (SIGHUP) reaches a running term: an app
// whose image it now allows is installed, and uninstalled again when a
// later reload no longer allows it, with the reason in its status.
func TestReloadedImageListReachesTheReleases(t *testing.T) {
	f := newFixture(t, "ai")
	f.putApp(apps.AppSpec{GUID: "ai-app", Image: "quay.example/app:1"})
	c := f.driver(kubetest.AgentA)
	d := New(f.cli, f.config(), c, quiet(), prometheus.NewRegistry())
	f.start(d, "n1")
	refused := func() bool {
		s, _, ok := f.appStatus("ai-app")
		return ok && s.Status == apps.StatusInvalid && strings.Contains(s.LastError, "must match one of api.allowed_images")
	}
	etcdtest.Eventually(t, time.Minute, refused, "status of ai-app to say its image is not allowed")
	f.settled(d, c, []string{f.agentNS + "/agent-metrics"}, 0)

	d.SetAllowedImages([]string{"busybox:*", "quay.example/*"})
	f.settled(d, c, []string{f.agentNS + "/agent-metrics", "ai-app/agent-traces", "ai-app/agent-app"}, 1)

	d.SetAllowedImages([]string{"busybox:*"})
	etcdtest.Eventually(t, time.Minute, func() bool {
		_, app := f.releases(c)["ai-app/agent-app"]
		return !app && refused()
	}, "ai-app to be uninstalled and refused once its image is no longer allowed")
}

// A reloaded config (SIGHUP) reaches the releases of a running term: the
// metrics stack is upgraded with the new values, and nothing else.
func TestReloadedValuesUpgradeTheReleases(t *testing.T) {
	f := newFixture(t, "rv")
	f.putApp(apps.AppSpec{GUID: "rv-app", Image: "busybox:1"})
	c := f.driver(kubetest.AgentA)
	cfg := f.config()
	d := New(f.cli, cfg, c, quiet(), prometheus.NewRegistry())
	f.start(d, "n1")
	all := []string{f.agentNS + "/agent-metrics", "rv-app/agent-traces", "rv-app/agent-app"}
	before := f.settled(d, c, all, 1)

	in := cfg.Values
	in.Prometheus.ScrapeInterval = 7 * time.Second
	d.SetValues(in)
	etcdtest.Eventually(t, time.Minute, func() bool {
		r := f.releases(c)[f.agentNS+"/agent-metrics"]
		return r.Revision == before[f.agentNS+"/agent-metrics"].Revision+1 && r.Status == "deployed"
	}, "the metrics stack upgraded with the reloaded scrape interval")
	after := f.settled(d, c, all, 2)
	for _, k := range all[1:] {
		if after[k].Revision != before[k].Revision {
			t.Errorf("%s went from revision %d to %d; its values did not change", k, before[k].Revision, after[k].Revision)
		}
	}
}
