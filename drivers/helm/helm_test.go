package helm

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rcommon "helm.sh/helm/v4/pkg/release/common"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/freeaddr"
	"github.com/agentproj/agent/drivers/helm/kubetest"
	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/drivers/workload"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newClient(t testing.TB, api *kubetest.API, user string, cfg Config) *Client {
	t.Helper()
	cfg.Kubeconfig = api.Kubeconfig(t, user, "")
	if cfg.ChartCache == "" {
		cfg.ChartCache = filepath.Join(t.TempDir(), "charts")
	}
	c, err := New(context.Background(), cfg, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func allow(context.Context, state.Release) error { return nil }

func hello(t testing.TB, c *Client, ns, message string) Release {
	t.Helper()
	ref := ChartRef{Path: kubetest.Chart("hello")}
	ch, err := c.LoadChart(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return Release{
		Name: "hello", Namespace: ns, Chart: ch, Ref: ref,
		Values: map[string]any{"message": message},
		Labels: map[string]string{workload.LabelOwner: "test", workload.LabelCluster: ns},
		Stamp:  map[string]string{"io.agentproj.term": "1"},
	}
}

func ensureNS(t testing.TB, c *Client, ns string) {
	t.Helper()
	if _, err := c.EnsureNamespace(context.Background(), ns, map[string]string{workload.LabelCluster: ns}); err != nil {
		t.Fatal(err)
	}
}

func configMap(t testing.TB, k kubernetes.Interface, ns, name string) (*corev1.ConfigMap, error) {
	t.Helper()
	return k.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
}

func TestNewOutsideAClusterWithoutKubeconfigFails(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, err := New(context.Background(), Config{})
	if err == nil || !strings.Contains(err.Error(), "helm driver: no Kubernetes API to install into: the agent is not in a pod") ||
		!strings.Contains(err.Error(), "set stack.helm.kubeconfig, AGENT_STACK_HELM_KUBECONFIG or KUBECONFIG") {
		t.Fatalf("New() = %v", err)
	}
}

func TestNewWhenTheAPIDoesNotAnswerFails(t *testing.T) {
	addr := freeaddr.Reserve(t) // nothing listens, nor will meanwhile
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kc := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://" + addr + "', insecure-skip-tls-verify: true}}]\n" +
		"users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), Config{Kubeconfig: path, PingTimeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "helm driver: the Kubernetes API at https://"+addr+" does not answer") {
		t.Fatalf("New() = %v", err)
	}
	_, err = New(context.Background(), Config{Kubeconfig: filepath.Join(t.TempDir(), "none")})
	if err == nil || !strings.Contains(err.Error(), "helm driver: kubeconfig") || !strings.Contains(err.Error(), "no such file or directory") {
		t.Fatalf("New(missing kubeconfig) = %v", err)
	}
}

// Install, adopt (same revision, also from a new client: an agent
// restart), upgrade on a changed value, uninstall: checked in what the API
// stores.
func TestReleaseLifecycle(t *testing.T) {
	api := kubetest.Shared(t)
	k := api.Client(t)
	ctx := context.Background()
	ns := "lifecycle"
	c := newClient(t, api, kubetest.AgentA, Config{Namespace: ns})
	ensureNS(t, c, ns)

	var guarded []string
	guard := func(_ context.Context, cur state.Release) error { guarded = append(guarded, cur.Status); return nil }
	st, err := c.Ensure(ctx, hello(t, c, ns, "one"), guard)
	if err != nil {
		t.Fatal(err)
	}
	if st.Revision != 1 || st.Status != "deployed" || st.Chart != "hello" || st.Version != "0.1.0" || st.AppVersion != "1.0" {
		t.Fatalf("installed: %+v", st)
	}
	if len(guarded) != 1 || guarded[0] != state.Missing {
		t.Fatalf("guard calls = %v, want one before the install", guarded)
	}
	cm, err := configMap(t, k, ns, "hello-hello")
	if err != nil || cm.Data["message"] != "one" {
		t.Fatalf("ConfigMap = %v, %v", cm, err)
	}
	if st.Labels[workload.LabelManaged] != "true" || st.Labels[workload.LabelOwner] != "test" || st.Labels["io.agentproj.term"] != "1" || st.Labels["owner"] != "" {
		t.Fatalf("release labels = %v", st.Labels)
	}

	// Adoption: nothing changed, nothing is written, also by a new client
	// whose stamp (a new term) differs.
	again := hello(t, c, ns, "one")
	again.Stamp = map[string]string{"io.agentproj.term": "2"}
	st, err = c.Ensure(ctx, again, guard)
	if err != nil || st.Revision != 1 {
		t.Fatalf("ensure unchanged: %+v, %v", st, err)
	}
	c2 := newClient(t, api, kubetest.AgentB, Config{Namespace: ns})
	st, err = c2.Ensure(ctx, hello(t, c2, ns, "one"), guard)
	if err != nil || st.Revision != 1 || len(guarded) != 1 {
		t.Fatalf("ensure from a restarted agent: %+v, %v, guard calls %v", st, err, guarded)
	}

	// A changed value upgrades.
	st, err = c2.Ensure(ctx, hello(t, c2, ns, "two"), guard)
	if err != nil || st.Revision != 2 || st.Status != "deployed" {
		t.Fatalf("upgrade: %+v, %v", st, err)
	}
	if cm, err := configMap(t, k, ns, "hello-hello"); err != nil || cm.Data["message"] != "two" {
		t.Fatalf("ConfigMap after the upgrade = %v, %v", cm, err)
	}
	list, err := c.List(ctx, map[string]string{workload.LabelCluster: ns})
	if err != nil || len(list) != 1 || list[0].Name != "hello" || list[0].Revision != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}

	if err := c.Uninstall(ctx, ns, "hello", guard); err != nil {
		t.Fatal(err)
	}
	if _, err := configMap(t, k, ns, "hello-hello"); !apierrors.IsNotFound(err) {
		t.Fatalf("ConfigMap after uninstall: %v", err)
	}
	if st, err := c.Get(ctx, ns, "hello"); err != nil || st.Status != state.Missing {
		t.Fatalf("Get after uninstall = %+v, %v", st, err)
	}
	if list, err := c.List(ctx, map[string]string{workload.LabelCluster: ns}); err != nil || len(list) != 0 {
		t.Fatalf("List after uninstall = %+v, %v", list, err)
	}
	if err := c.Uninstall(ctx, ns, "hello", guard); err != nil {
		t.Fatalf("uninstall of a missing release: %v", err)
	}
}

// A chart the API refuses: the install fails with the API's own message in
// the error and in the release's description; fixing the value upgrades
// the failed release.
func TestFailedInstallCarriesHelmsMessage(t *testing.T) {
	api := kubetest.Shared(t)
	ctx := context.Background()
	ns := "failing"
	c := newClient(t, api, kubetest.AgentA, Config{Namespace: ns})
	ensureNS(t, c, ns)
	r := hello(t, c, ns, "x")
	r.Values["port"] = 70000
	st, err := c.Ensure(ctx, r, allow)
	const apiMsg = "spec.ports[0].port: Invalid value: 70000"
	if err == nil || !strings.Contains(err.Error(), "install failing/hello") || !strings.Contains(err.Error(), apiMsg) {
		t.Fatalf("Ensure(port 70000) = %v", err)
	}
	if st.Status != "failed" || !strings.Contains(st.Description, apiMsg) || st.Revision != 1 {
		t.Fatalf("failed state = %+v", st)
	}
	r.Values["port"] = 8080
	st, err = c.Ensure(ctx, r, allow)
	if err != nil || st.Status != "deployed" || st.Revision != 2 {
		t.Fatalf("Ensure after the fix = %+v, %v", st, err)
	}
}

// The guard is the fence: when it refuses, nothing reaches the API.
func TestGuardStopsEveryWrite(t *testing.T) {
	api := kubetest.Shared(t)
	k := api.Client(t)
	ctx := context.Background()
	ns := "guarded"
	c := newClient(t, api, kubetest.AgentA, Config{Namespace: ns})
	ensureNS(t, c, ns)
	fenced := errors.New("term is over")
	refuse := func(context.Context, state.Release) error { return fenced }

	if _, err := c.Ensure(ctx, hello(t, c, ns, "one"), refuse); !errors.Is(err, fenced) {
		t.Fatalf("install under a refusing guard: %v", err)
	}
	if st, _ := c.Get(ctx, ns, "hello"); st.Status != state.Missing {
		t.Fatalf("a refused install left %+v", st)
	}
	if _, err := configMap(t, k, ns, "hello-hello"); !apierrors.IsNotFound(err) {
		t.Fatalf("a refused install made the ConfigMap: %v", err)
	}
	if _, err := c.Ensure(ctx, hello(t, c, ns, "one"), allow); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ensure(ctx, hello(t, c, ns, "two"), refuse); !errors.Is(err, fenced) {
		t.Fatalf("upgrade under a refusing guard: %v", err)
	}
	if err := c.Uninstall(ctx, ns, "hello", refuse); !errors.Is(err, fenced) {
		t.Fatalf("uninstall under a refusing guard: %v", err)
	}
	st, _ := c.Get(ctx, ns, "hello")
	cm, _ := configMap(t, k, ns, "hello-hello")
	if st.Revision != 1 || st.Status != "deployed" || cm == nil || cm.Data["message"] != "one" {
		t.Fatalf("after refused writes: %+v, ConfigMap %v", st, cm)
	}
}

// A release someone else installed under the same name is never upgraded
// or uninstalled.
func TestReleaseWithoutManagedLabelIsLeftAlone(t *testing.T) {
	api := kubetest.Shared(t)
	ctx := context.Background()
	ns := "foreign"
	c := newClient(t, api, kubetest.AgentA, Config{Namespace: ns})
	ensureNS(t, c, ns)
	r := hello(t, c, ns, "theirs")
	cfg, err := c.action(ns)
	if err != nil {
		t.Fatal(err)
	}
	// Installed by "someone else": no managed label.
	if _, err := c.install(ctx, cfg, r, map[string]string{"team": "other"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ensure(ctx, hello(t, c, ns, "ours"), allow); !errors.Is(err, ErrNotManaged) {
		t.Fatalf("Ensure over a foreign release: %v", err)
	}
	if err := c.Uninstall(ctx, ns, "hello", allow); !errors.Is(err, ErrNotManaged) {
		t.Fatalf("Uninstall of a foreign release: %v", err)
	}
	if list, err := c.List(ctx, nil); err != nil || len(list) != 0 && hasRelease(list, ns, "hello") {
		t.Fatalf("List shows a foreign release: %+v, %v", list, err)
	}
	if st, _ := c.Get(ctx, ns, "hello"); st.Revision != 1 || st.Status != "deployed" {
		t.Fatalf("foreign release changed: %+v", st)
	}
}

func hasRelease(list []state.Release, ns, name string) bool {
	for _, s := range list {
		if s.Namespace == ns && s.Name == name {
			return true
		}
	}
	return false
}

// A release left pending by an agent that died is taken over once it is
// older than the action timeout; a younger one is reported, not touched.
func TestPendingReleaseIsTakenOverAfterTheTimeout(t *testing.T) {
	api := kubetest.Shared(t)
	ctx := context.Background()
	ns := "pending"
	c := newClient(t, api, kubetest.AgentA, Config{Namespace: ns, Timeout: time.Minute})
	ensureNS(t, c, ns)
	if _, err := c.Ensure(ctx, hello(t, c, ns, "one"), allow); err != nil {
		t.Fatal(err)
	}
	cfg, _ := c.action(ns)
	setPending := func(age time.Duration) {
		t.Helper()
		cur, err := last(cfg, "hello")
		if err != nil {
			t.Fatal(err)
		}
		cur.Info.Status = rcommon.StatusPendingUpgrade
		cur.Info.LastDeployed = time.Now().Add(-age)
		if err := cfg.Releases.Update(cur); err != nil {
			t.Fatal(err)
		}
	}
	setPending(time.Second)
	if _, err := c.Ensure(ctx, hello(t, c, ns, "two"), allow); !errors.Is(err, ErrPending) {
		t.Fatalf("Ensure over a young pending release: %v", err)
	}
	setPending(2 * time.Minute)
	st, err := c.Ensure(ctx, hello(t, c, ns, "two"), allow)
	if err != nil || st.Status != "deployed" || st.Revision != 2 {
		t.Fatalf("Ensure over an abandoned pending release: %+v, %v", st, err)
	}
}

// Namespaces: made with their labels, never one the agent did not make,
// deleted into Terminating (no namespace controller runs here to finish).
func TestNamespaces(t *testing.T) {
	api := kubetest.Shared(t)
	k := api.Client(t)
	ctx := context.Background()
	c := newClient(t, api, kubetest.AgentA, Config{})
	lbl := map[string]string{workload.LabelGUID: "g-1", workload.LabelCluster: "nscluster"}
	got, err := c.EnsureNamespace(ctx, "g-1", lbl)
	if err != nil || got.Labels[workload.LabelGUID] != "g-1" || got.Labels[workload.LabelManaged] != "true" {
		t.Fatalf("EnsureNamespace = %+v, %v", got, err)
	}
	// A label that went missing comes back.
	if _, err := k.CoreV1().Namespaces().Patch(ctx, "g-1", "application/merge-patch+json",
		[]byte(`{"metadata":{"labels":{"io.agentproj.guid":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err = c.EnsureNamespace(ctx, "g-1", lbl); err != nil || got.Labels[workload.LabelGUID] != "g-1" {
		t.Fatalf("EnsureNamespace after the label went = %+v, %v", got, err)
	}
	if _, err := c.EnsureNamespace(ctx, "default", lbl); !errors.Is(err, ErrNotManaged) {
		t.Fatalf("EnsureNamespace(default) = %v", err)
	}
	if err := c.DeleteNamespace(ctx, "default"); !errors.Is(err, ErrNotManaged) {
		t.Fatalf("DeleteNamespace(default) = %v", err)
	}
	list, err := c.Namespaces(ctx, map[string]string{workload.LabelCluster: "nscluster"})
	if err != nil || len(list) != 1 || list[0].Name != "g-1" || list[0].Phase != "Active" {
		t.Fatalf("Namespaces = %+v, %v", list, err)
	}
	if err := c.DeleteNamespace(ctx, "g-1"); err != nil {
		t.Fatal(err)
	}
	ns, err := k.CoreV1().Namespaces().Get(ctx, "g-1", metav1.GetOptions{})
	if err != nil || ns.DeletionTimestamp == nil {
		t.Fatalf("namespace after delete = %v, %v", ns, err)
	}
	if list, _ := c.Namespaces(ctx, map[string]string{workload.LabelCluster: "nscluster"}); len(list) != 1 || list[0].Phase != "Terminating" {
		t.Fatalf("Namespaces after delete = %+v", list)
	}
	if _, err := c.EnsureNamespace(ctx, "g-1", lbl); err == nil || !strings.Contains(err.Error(), "namespace g-1 is being deleted") {
		t.Fatalf("EnsureNamespace of a terminating namespace = %v", err)
	}
	if err := c.DeleteNamespace(ctx, "g-1"); err != nil {
		t.Fatalf("DeleteNamespace twice: %v", err)
	}
}

// The label that makes a Service route to the master: set on the pod,
// matched by the Service's selector, removed again.
func TestLabelPodMatchesAServiceSelector(t *testing.T) {
	api := kubetest.Shared(t)
	k := api.Client(t)
	ctx := context.Background()
	ns := "podlabel"
	c := newClient(t, api, kubetest.AgentA, Config{Namespace: ns})
	ensureNS(t, c, ns)
	// No controller-manager makes a namespace's default ServiceAccount.
	if _, err := k.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-x", Namespace: ns, Labels: map[string]string{"app.kubernetes.io/name": "agent"}},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "agent", Image: "agent:dev"}}},
	}
	if _, err := k.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sel := labels.SelectorFromSet(map[string]string{"app.kubernetes.io/name": "agent", "io.agentproj.master": "true"})
	matches := func() bool {
		p, err := k.CoreV1().Pods(ns).Get(ctx, "agent-x", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sel.Matches(labels.Set(p.Labels))
	}
	if matches() {
		t.Fatal("matches before the label")
	}
	if err := c.LabelPod(ctx, ns, "agent-x", "io.agentproj.master", "true"); err != nil {
		t.Fatal(err)
	}
	if !matches() {
		t.Fatal("no match after the label")
	}
	if err := c.LabelPod(ctx, ns, "agent-x", "io.agentproj.master", ""); err != nil {
		t.Fatal(err)
	}
	if matches() {
		t.Fatal("matches after the label was removed")
	}
	if err := c.LabelPod(ctx, ns, "nope", "io.agentproj.master", "true"); err == nil || !strings.Contains(err.Error(), `label pod podlabel/nope: pods "nope" not found`) {
		t.Fatalf("LabelPod(missing) = %v", err)
	}
}
