package kubepods

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/helm/kubetest"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/slave/monitor/cgroup"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// The kube-apiserver is shared by the package's tests; no kubelet runs,
// so the pods these tests create never start: their cgroups are the
// fixture trees under testdata, named with the uids the API gave them.
func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

var seq atomic.Int64

// names are one test's node and guid namespace, apart from the others'.
func names(t *testing.T) (node, ns string) {
	n := seq.Add(1)
	return fmt.Sprintf("node-%d-%d", os.Getpid(), n), fmt.Sprintf("guid-%d-%d", os.Getpid(), n)
}

func ptr[T any](v T) *T { return &v }

// cluster is what a test made in the API: uid by fixture key.
type cluster struct {
	kube kubernetes.Interface
	node string
	ns   string
	uids map[string]string
}

var (
	web   = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
	side  = "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2"
	db    = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"
	agent = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
)

// makeCluster creates a guid namespace with a Deployment (and the
// ReplicaSet the controller-manager would make), a StatefulSet and a
// DaemonSet, one pod of each on node, their container ids in the pods'
// status as the kubelet would write them, and a pod on another node.
func makeCluster(t *testing.T, ctx context.Context, kube kubernetes.Interface) *cluster {
	t.Helper()
	node, ns := names(t)
	c := &cluster{kube: kube, node: node, ns: ns, uids: map[string]string{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{workload.LabelGUID: ns},
	}}, metav1.CreateOptions{})
	must(err)
	t.Cleanup(func() {
		_ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	// No controller-manager makes the namespace's default service
	// account, which admission wants for a pod.
	_, err = kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	must(err)
	sel := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	tmpl := func(app string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: "busybox"}}},
		}
	}
	dep, err := kube.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       appsv1.DeploymentSpec{Selector: sel("web"), Template: tmpl("web")},
	}, metav1.CreateOptions{})
	must(err)
	owner := func(kind, name string, uid types.UID) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: uid, Controller: ptr(true)}}
	}
	rs, err := kube.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-5d8f7c", OwnerReferences: owner("Deployment", "web", dep.UID)},
		Spec:       appsv1.ReplicaSetSpec{Selector: sel("web"), Template: tmpl("web")},
	}, metav1.CreateOptions{})
	must(err)
	sts, err := kube.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec:       appsv1.StatefulSetSpec{Selector: sel("db"), Template: tmpl("db")},
	}, metav1.CreateOptions{})
	must(err)
	ds, err := kube.AppsV1().DaemonSets(ns).Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec:       appsv1.DaemonSetSpec{Selector: sel("agent"), Template: tmpl("agent")},
	}, metav1.CreateOptions{})
	must(err)

	cpu := resource.MustParse("100m")
	mem := resource.MustParse("1Gi")
	pods := []struct {
		key, name string
		owners    []metav1.OwnerReference
		res       corev1.ResourceRequirements
		hostNet   bool
		ids       map[string]string // container name -> id
	}{
		{"web", "web-5d8f7c-x2x9q", owner("ReplicaSet", rs.Name, rs.UID),
			corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: cpu}}, false,
			map[string]string{"app": web, "sidecar": side}},
		{"db-0", "db-0", owner("StatefulSet", sts.Name, sts.UID),
			corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem},
			}, false, map[string]string{"db": db}},
		{"agent", "agent-7kq2w", owner("DaemonSet", ds.Name, ds.UID), corev1.ResourceRequirements{}, true,
			map[string]string{"agent": agent}},
	}
	for _, p := range pods {
		spec := corev1.PodSpec{NodeName: node, HostNetwork: p.hostNet}
		for _, name := range sortedKeys(p.ids) {
			spec.Containers = append(spec.Containers, corev1.Container{Name: name, Image: "busybox", Resources: p.res})
		}
		pod, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, OwnerReferences: p.owners}, Spec: spec,
		}, metav1.CreateOptions{})
		must(err)
		c.uids[p.key] = string(pod.UID)
		for _, name := range sortedKeys(p.ids) {
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
				Name: name, Image: "busybox", ContainerID: "containerd://" + p.ids[name], Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
			})
		}
		pod.Status.Phase = corev1.PodRunning
		_, err = kube.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		must(err)
	}
	// Another node's pod is not this agent's.
	_, err = kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "elsewhere"},
		Spec:       corev1.PodSpec{NodeName: node + "-other", Containers: []corev1.Container{{Name: "x", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	must(err)
	return c
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// tree copies the fixture tree name into a temporary folder, naming each
// pod's cgroup with the uid the API gave the pod of that key (dashes, or
// underscores in systemd slice names); a key without a pod gets a uid no
// pod has.
func (c *cluster) tree(t *testing.T, name string) string {
	t.Helper()
	uids := maps.Clone(c.uids)
	uids["stray"] = "0badc0de-0000-4000-8000-000000000001"
	rename := func(s string) string {
		for key, uid := range uids {
			s = strings.ReplaceAll(s, "POD-"+key, uid)
			s = strings.ReplaceAll(s, "POD_"+key, strings.ReplaceAll(uid, "-", "_"))
		}
		return s
	}
	src := filepath.Join("testdata", name)
	dst := filepath.Join(t.TempDir(), name)
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		out := filepath.Join(dst, rename(rel))
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// hierarchy is the reader of a copied tree: v1 trees hold one folder per
// controller mount, as /sys/fs/cgroup does.
func hierarchy(name, dir string) *cgroup.Hierarchy {
	if strings.HasPrefix(name, "v1") {
		return cgroup.NewV1(map[string]string{
			"cpu": filepath.Join(dir, "cpu,cpuacct"), "cpuacct": filepath.Join(dir, "cpu,cpuacct"),
			"memory": filepath.Join(dir, "memory"), "blkio": filepath.Join(dir, "blkio"), "pids": filepath.Join(dir, "pids"),
		})
	}
	return cgroup.NewV2(dir)
}

// start runs a pod monitor of c's node over the cgroups h until the test
// ends, and waits for its first list; prepare, if given, adjusts it
// before it runs.
func (c *cluster) start(t *testing.T, kube kubernetes.Interface, h *cgroup.Hierarchy, prepare ...func(*Pods)) (*Pods, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := New(Config{Node: c.node, Interval: time.Hour, ProcRoot: filepath.Join("testdata", "proc"), Cgroups: h},
		kube, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range prepare {
		f(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.watch.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch: %v", err)
		}
	})
	select {
	case <-p.watch.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("the watch did not list the pods within 30s")
	}
	return p, reg
}

// render is the pods' series as /metrics/monitor serves them, with the
// test's uids and names put back to the fixture's keys.
func (c *cluster) render(t *testing.T, p *Pods) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(p.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	s := b.String()
	for key, uid := range c.uids {
		s = strings.ReplaceAll(s, uid, "UID-"+key)
	}
	return strings.ReplaceAll(s, c.ns, "NS")
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Fatalf("%s differs (go test -update rewrites it):\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// Every tree, v1 and v2, systemd and cgroupfs drivers, yields the same
// series for the same pods: CPU, memory and I/O per pod and container,
// network for the pods with a namespace of their own, named through the
// API (a ReplicaSet's pod under its Deployment, the guid from the
// namespace's label).
func TestPodsFromCgroupTrees(t *testing.T) {
	api := kubetest.Shared(t)
	kube := api.Client(t)
	for _, name := range []string{"v1-cgroupfs", "v1-systemd", "v2-cgroupfs", "v2-systemd"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := makeCluster(t, ctx, kube)
			p, reg := c.start(t, kube, hierarchy(name, c.tree(t, name)))
			// The status updates follow the creates: wait until the watch
			// has the containers named.
			kubetest.Eventually(t, 30*time.Second, func(context.Context) bool {
				s := p.Refresh()
				n := 0
				for _, ps := range s.Pods {
					n += len(ps.Containers)
				}
				return len(s.Pods) == 3 && n == 4
			}, "3 pods and 4 named containers; last: %+v", poll.Latest(func() any { return p.Snapshot().Pods }))
			golden(t, "pods.golden", c.render(t, p))
			if got := testutil.ToFloat64(p.metrics.skipped.WithLabelValues("pod")); got != 1 {
				t.Errorf("pods skipped (a cgroup no pod has): %v, want 1", got)
			}
			if got := testutil.ToFloat64(p.metrics.skipped.WithLabelValues("container")); got != 3 {
				t.Errorf("containers skipped (the sandboxes): %v, want 3", got)
			}
			if n, err := testutil.GatherAndCount(reg, "agent_monitor_pods"); err != nil || n != 1 {
				t.Errorf("agent_monitor_pods on the agent's registry: %d, %v", n, err)
			}
			// monitor.max_series: the first pod (agent-7kq2w, one
			// container: 13 + 11 series) fits in 30, the others are
			// left out and counted.
			p.cfg.MaxSeries = 30
			if s := p.Refresh(); len(s.Pods) != 1 || s.Pods[0].Name != "agent-7kq2w" {
				t.Errorf("pods within max_series 30: %+v", s.Pods)
			}
			if got := testutil.ToFloat64(p.metrics.skipped.WithLabelValues("series")); got != 2 {
				t.Errorf("pods left out by max_series: %v, want 2", got)
			}
		})
	}
}

// sharedCluster is makeCluster on the shared kube-apiserver, with a
// context for the test's requests that ends after two minutes or with the
// test.
func sharedCluster(t *testing.T) (*kubetest.API, context.Context, *cluster) {
	t.Helper()
	api := kubetest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return api, ctx, makeCluster(t, ctx, api.Client(t))
}

// clientThrough is the admin's client whose requests go through wrap.
func clientThrough(t *testing.T, api *kubetest.API, wrap func(http.RoundTripper) http.RoundTripper) kubernetes.Interface {
	t.Helper()
	rc := api.RESTConfig(kubetest.Admin)
	rc.WrapTransport = wrap
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return kube
}

// listCounter counts the requests that list pods (not those that watch).
type listCounter struct {
	next  http.RoundTripper
	lists atomic.Int64
}

func (l *listCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/pods") && r.URL.Query().Get("watch") != "true" && r.Method == http.MethodGet {
		l.lists.Add(1)
	}
	return l.next.RoundTrip(r)
}

// The watch follows pods as they come and go on the node, without a list
// per change or per reading; another node's pods never enter it.
func TestWatchFollowsPodsWithoutRelist(t *testing.T) {
	api, ctx, c := sharedCluster(t)
	admin := c.kube

	counter := &listCounter{}
	kube := clientThrough(t, api, func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter })
	p, _ := c.start(t, kube, hierarchy("v2-systemd", c.tree(t, "v2-systemd")))
	// One list at start (none when client-go streams the first list
	// through the watch), then nothing but the watch.
	listed := counter.lists.Load()
	if listed > 1 {
		t.Fatalf("pod lists at start: %d, want at most 1", listed)
	}
	if n := p.watch.Len(); n != 3 {
		t.Fatalf("pods of the node after the list: %d, want 3", n)
	}
	for range 3 {
		p.Refresh()
	}
	pod, err := admin.CoreV1().Pods(c.ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "late"},
		Spec:       corev1.PodSpec{NodeName: c.node, Containers: []corev1.Container{{Name: "x", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 30*time.Second, func(context.Context) bool {
		got, ok := p.watch.Lookup(string(pod.UID))
		return ok && got.Name == "late" && got.Namespace == c.ns && got.GUID == c.ns && got.QoS == "BestEffort"
	}, "the watch sees the new pod")
	if err := admin.CoreV1().Pods(c.ns).Delete(ctx, "db-0", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 30*time.Second, func(context.Context) bool {
		_, ok := p.watch.Lookup(c.uids["db-0"])
		return !ok
	}, "the watch sees the pod deleted")
	// Its cgroup is still there (no kubelet removes it): the reading
	// skips it as unknown rather than guessing.
	s := p.Refresh()
	for _, ps := range s.Pods {
		if ps.Name == "db-0" {
			t.Fatalf("a deleted pod is still served: %+v", ps)
		}
	}
	if got := testutil.ToFloat64(p.metrics.skipped.WithLabelValues("pod")); got != 2 {
		t.Errorf("pods skipped: %v, want 2 (the stray cgroup and db-0's)", got)
	}
	if n := counter.lists.Load(); n != listed {
		t.Fatalf("pod lists: %d after the start's %d: the pods were listed again", n, listed)
	}
	if _, ok := p.watch.Lookup("elsewhere"); ok || p.watch.Len() != 3 {
		t.Fatalf("pods held: %d, want 3 (web, agent, late)", p.watch.Len())
	}
}

// A static pod's cgroup is named after its manifest's hash, not a uid:
// the pod monitor finds its mirror pod through the annotation that holds
// the hash.
func TestStaticPodNamedByItsMirrorPod(t *testing.T) {
	_, ctx, c := sharedCluster(t)
	kube := c.kube
	const hash = "6d5e1c0b3a2f4e8d9c7b6a5f4e3d2c1b"
	// A mirror pod may not name a service account (admission refuses it),
	// and this one names none.
	mirror, err := kube.CoreV1().Pods(c.ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "etcd-" + c.node, Annotations: map[string]string{mirrorAnnotation: hash}},
		Spec: corev1.PodSpec{NodeName: c.node, AutomountServiceAccountToken: ptr(false),
			Containers: []corev1.Container{{Name: "etcd", Image: "etcd"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := c.tree(t, "v2-systemd")
	static := filepath.Join(dir, "kubepods.slice", "kubepods-burstable.slice", "kubepods-burstable-pod"+hash+".slice")
	if err := os.MkdirAll(static, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(static, "memory.current"), []byte("4096\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _ := c.start(t, kube, hierarchy("v2-systemd", dir))
	kubetest.Eventually(t, 30*time.Second, func(context.Context) bool {
		for _, ps := range p.Refresh().Pods {
			if ps.UID == string(mirror.UID) && ps.Name == mirror.Name && ps.Namespace == c.ns && ps.MemoryUsage == 4096 {
				return true
			}
		}
		return false
	}, "the static pod's cgroup is not served as its mirror pod; last: %+v", poll.Latest(func() any { return p.Snapshot().Pods }))
}

// pod_up is 1 for a pod of the node that runs, 0 for one that should and
// does not (pending, without a cgroup yet; a container waiting after a
// crash), and absent for a finished one, so that guid:up:min counts the
// pods of a guid's namespace.
func TestPodUp(t *testing.T) {
	_, ctx, c := sharedCluster(t)
	kube := c.kube
	pod := func(name string, phase corev1.PodPhase, state corev1.ContainerState) {
		t.Helper()
		p, err := kube.CoreV1().Pods(c.ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PodSpec{NodeName: c.node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c.uids[name] = string(p.UID)
		if phase == corev1.PodPending {
			return // as created: no status
		}
		p.Status.Phase = phase
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "busybox", State: state}}
		if _, err := kube.CoreV1().Pods(c.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod("pending", corev1.PodPending, corev1.ContainerState{})
	pod("crashing", corev1.PodRunning, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}})
	pod("done", corev1.PodSucceeded, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}})
	p, _ := c.start(t, kube, hierarchy("v2-systemd", c.tree(t, "v2-systemd")))
	ups := func() map[string]bool {
		out := map[string]bool{}
		for _, s := range p.Refresh().States {
			out[s.Name] = s.Running
		}
		return out
	}
	want := map[string]bool{"web-5d8f7c-x2x9q": true, "db-0": true, "agent-7kq2w": true, "pending": false, "crashing": false}
	kubetest.Eventually(t, 30*time.Second, func(context.Context) bool { return maps.Equal(ups(), want) },
		"pods meant to run and whether they do: want %v; last: %v", want, poll.Latest(func() any { return ups() }))
	got := c.render(t, p)
	for _, line := range []string{
		`pod_up{guid="NS",namespace="NS",owner_kind="",owner_name="",pod="crashing",qos="BestEffort",uid="UID-crashing"} 0`,
		`pod_up{guid="NS",namespace="NS",owner_kind="",owner_name="",pod="pending",qos="BestEffort",uid="UID-pending"} 0`,
		`pod_up{guid="NS",namespace="NS",owner_kind="Deployment",owner_name="web",pod="web-5d8f7c-x2x9q",qos="Burstable",uid="UID-web"} 1`,
	} {
		if !strings.Contains(got, line+"\n") {
			t.Errorf("no line %s in:\n%s", line, got)
		}
	}
	if strings.Contains(got, `pod="done"`) {
		t.Errorf("a finished pod is served:\n%s", got)
	}
}

// holdReplicaSets holds every GET of a ReplicaSet, once on, until
// release is closed: an API server that answers it slowly.
type holdReplicaSets struct {
	next    http.RoundTripper
	on      atomic.Bool
	release chan struct{}
	held    atomic.Int64
}

func (h *holdReplicaSets) RoundTrip(r *http.Request) (*http.Response, error) {
	if h.on.Load() && strings.Contains(r.URL.Path, "/replicasets/") && r.Method == http.MethodGet {
		h.held.Add(1)
		select {
		case <-h.release:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return h.next.RoundTrip(r)
}

// A slow answer about a ReplicaSet does not hold the pod events: a pod
// that comes meanwhile is seen at once, and the ReplicaSet's pod is
// served under its ReplicaSet until its Deployment is known, then under
// the Deployment.
func TestSlowReplicaSetDoesNotHoldPods(t *testing.T) {
	api, ctx, c := sharedCluster(t)
	admin := c.kube
	hold := &holdReplicaSets{release: make(chan struct{})}
	kube := clientThrough(t, api, func(rt http.RoundTripper) http.RoundTripper { hold.next = rt; return hold })
	released := sync.OnceFunc(func() { close(hold.release) })
	t.Cleanup(released)
	p, _ := c.start(t, kube, hierarchy("v2-systemd", c.tree(t, "v2-systemd")), func(p *Pods) {
		p.watch.getTimeout = time.Hour // a held read ends when released, however slow the machine
	})
	if web, ok := p.watch.Lookup(c.uids["web"]); !ok || web.OwnerKind != "Deployment" || web.OwnerName != "web" {
		t.Fatalf("web's pod once listed: %+v, %v; want it under its Deployment", web, ok)
	}
	hold.on.Store(true)
	rs, err := admin.AppsV1().ReplicaSets(c.ns).Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "api-6c9d", OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "api", UID: "u-api", Controller: ptr(true)}}},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "api"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: "busybox"}}},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	newPod := func(name string, owners []metav1.OwnerReference) string {
		t.Helper()
		pod, err := admin.CoreV1().Pods(c.ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: owners},
			Spec:       corev1.PodSpec{NodeName: c.node, Containers: []corev1.Container{{Name: "x", Image: "busybox"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return string(pod.UID)
	}
	apiPod := newPod("api-6c9d-q1", []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr(true)}})
	bare := newPod("bare", nil)
	kubetest.Eventually(t, 30*time.Second, func(context.Context) bool {
		_, okAPI := p.watch.Lookup(apiPod)
		_, okBare := p.watch.Lookup(bare)
		return okAPI && okBare
	}, "the new pods are seen while a ReplicaSet's answer is held (%d held)", poll.Latest(func() any { return hold.held.Load() }))
	if got, _ := p.watch.Lookup(apiPod); got.OwnerKind != "ReplicaSet" || got.OwnerName != rs.Name {
		t.Fatalf("a pod whose ReplicaSet is not read yet: owner %s/%s, want ReplicaSet/%s", got.OwnerKind, got.OwnerName, rs.Name)
	}
	released()
	kubetest.Eventually(t, 30*time.Second, func(context.Context) bool {
		got, _ := p.watch.Lookup(apiPod)
		return got.OwnerKind == "Deployment" && got.OwnerName == "api"
	}, "the pod named after its Deployment once the ReplicaSet is read")
}
