// Package chart_test checks the agent's own chart (deploy/helm/agent): it
// lints clean, renders with the Helm SDK, every object it renders is
// accepted by a real kube-apiserver (server-side dry run), the agent.toml
// it renders loads, and its RBAC is enough for the helm driver.
package chart_test

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
	"github.com/agentproj/agent/drivers/helm"
	"github.com/agentproj/agent/drivers/helm/kubetest"
	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/master/releases"
	"github.com/agentproj/agent/slave/monitor/cgroup"
	"github.com/agentproj/agent/slave/monitor/kubepods"
	"github.com/agentproj/agent/stackconfig"
)

const chartDir = "agent"

// variants are value sets the chart must handle.
var variants = map[string]map[string]any{
	"defaults": {},
	"external etcd, relay, manager, stack charts": {
		"cluster": "prod",
		"etcd":    map[string]any{"endpoints": []any{"http://etcd-0.etcd:2379", "http://etcd-1.etcd:2379"}},
		"relay":   map[string]any{"upstreams": []any{"https://manager.example/api/v1/write"}},
		"manager": map[string]any{"logsURL": "https://manager.example/logs", "tracesOTLPEndpoint": "https://manager.example:4317"},
		"api":     map[string]any{"allowedImages": []any{"registry.example/*/*"}},
		"stack": map[string]any{
			"metrics":   map[string]any{"values": "grafana:\n  enabled: true\n"},
			"traces":    map[string]any{"enabled": false},
			"appCharts": map[string]any{"web": map[string]any{"repository": "oci://registry.example/charts", "name": "web", "version": "1.2.3"}},
		},
		"rbac":    map[string]any{"stackCharts": false},
		"monitor": map[string]any{"enabled": false},
	},
	"API over TLS": {
		"api": map[string]any{"tls": map[string]any{"secretName": "agent-api-tls", "caSecretName": "agent-api-ca"}},
	},
	"three etcd members without persistence": {
		"etcd": map[string]any{"deploy": map[string]any{"replicas": 3, "persistence": map[string]any{"enabled": false}}},
	},
}

func TestAgentChartLintsClean(t *testing.T) {
	for name, vals := range variants {
		lint := action.NewLint()
		lint.Strict = true
		lint.Namespace = "agent-system"
		res := lint.Run([]string{chartDir}, vals)
		for _, m := range res.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("%s: helm lint: %s", name, m)
			}
		}
		for _, e := range res.Errors {
			t.Errorf("%s: helm lint: %v", name, e)
		}
	}
}

// render renders the chart as `helm template` does, offline.
func render(t *testing.T, ns string, vals map[string]any) []*unstructured.Unstructured {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	in := action.NewInstall(action.NewConfiguration())
	in.DryRunStrategy = action.DryRunClient
	in.ReleaseName, in.Namespace, in.Replace = "agent", ns, true
	// Offline, Helm assumes Kubernetes 1.20; the chart wants 1.28 or later,
	// and the tests' API is 1.34.
	if in.KubeVersion, err = common.ParseKubeVersion("v1.34.4"); err != nil {
		t.Fatal(err)
	}
	ri, err := in.Run(ch, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	rel := ri.(*release.Release)
	var objs []*unstructured.Unstructured
	for _, doc := range releaseutil.SplitManifests(rel.Manifest) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, doc)
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs
}

// resource maps the chart's kinds to API resources (the chart uses these
// only; an unknown kind fails the test).
var resource = map[string]schema.GroupVersionResource{
	"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
	"Secret":             {Version: "v1", Resource: "secrets"},
	"ConfigMap":          {Version: "v1", Resource: "configmaps"},
	"Service":            {Version: "v1", Resource: "services"},
	"DaemonSet":          {Group: "apps", Version: "v1", Resource: "daemonsets"},
	"StatefulSet":        {Group: "apps", Version: "v1", Resource: "statefulsets"},
	"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	"Role":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"RoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
}

// apply server-side applies obj, for real or as a dry run.
func apply(t *testing.T, dc dynamic.Interface, obj *unstructured.Unstructured, dryRun bool) error {
	t.Helper()
	gvr, ok := resource[obj.GetKind()]
	if !ok {
		t.Fatalf("the chart renders a %s, which this test does not know", obj.GetKind())
	}
	b, err := obj.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	opts := metav1.PatchOptions{FieldManager: "chart-test", Force: ptr(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var ri dynamic.ResourceInterface = dc.Resource(gvr)
	if ns := obj.GetNamespace(); ns != "" {
		ri = dc.Resource(gvr).Namespace(ns)
	}
	_, err = ri.Patch(context.Background(), obj.GetName(), types.ApplyPatchType, b, opts)
	return err
}

func ptr[T any](v T) *T { return &v }

// Every object of every variant is accepted by the API (server-side dry
// run: validated and admitted, RBAC objects included, nothing stored), and
// the agent.toml the chart renders loads as the agent would load it.
func TestAgentChartAppliesToARealAPI(t *testing.T) {
	api := kubetest.Start(t)
	k := api.Client(t)
	dc, err := dynamic.NewForConfig(api.RESTConfig(kubetest.Admin))
	if err != nil {
		t.Fatal(err)
	}
	const ns = "agent-system"
	if _, err := k.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, vals := range variants {
		objs := render(t, ns, vals)
		kinds := map[string]int{}
		for _, obj := range objs {
			kinds[obj.GetKind()]++
			if err := apply(t, dc, obj, true); err != nil {
				t.Errorf("%s: %s %s refused: %v", name, obj.GetKind(), obj.GetName(), err)
			}
			switch obj.GetKind() {
			case "ConfigMap":
				loadsAsTheAgent(t, name, obj)
			case "DaemonSet":
				checkDaemonSet(t, name, obj, vals)
			case "Service":
				checkService(t, name, obj)
			}
		}
		etcdDeployed := name != "external etcd, relay, manager, stack charts"
		if kinds["DaemonSet"] != 1 || kinds["Service"] != map[bool]int{true: 2, false: 1}[etcdDeployed] ||
			kinds["StatefulSet"] != map[bool]int{true: 1, false: 0}[etcdDeployed] || kinds["ClusterRole"] != 1 || kinds["Role"] != 1 {
			t.Errorf("%s: rendered kinds %v", name, kinds)
		}
	}
}

// loadsAsTheAgent writes the ConfigMap's agent.toml and loads it with the
// environment the DaemonSet gives the agent.
func loadsAsTheAgent(t *testing.T, variant string, cm *unstructured.Unstructured) {
	t.Helper()
	toml, _, _ := unstructured.NestedString(cm.Object, "data", "agent.toml")
	// The token file is the Secret's mount in the pod: a file here.
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cret-token-of-the-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(toml, `token_file = '/etc/agent/token/token'`) && !strings.Contains(toml, `token_file = "/etc/agent/token/token"`) {
		t.Errorf("%s: agent.toml does not point api.token_file at the Secret's mount:\n%s", variant, toml)
	}
	toml = strings.ReplaceAll(toml, "/etc/agent/token/token", token)
	// The TLS Secrets' mounts: a certificate for the Service's name.
	tlsOn := strings.Contains(toml, "/etc/agent/tls/")
	const serverName = "agent.agent-system.svc"
	if tlsOn {
		ca := testca.New(t)
		cert, key := ca.Issue(t, "agent", serverName)
		toml = strings.NewReplacer("/etc/agent/tls/tls.crt", cert, "/etc/agent/tls/tls.key", key, "/etc/agent/tls-ca/ca.crt", ca.CertFile).Replace(toml)
	}
	t.Log(toml)
	path := filepath.Join(t.TempDir(), "agent.toml")
	if err := os.WriteFile(path, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AGENT_NODE", "node-1")
	t.Setenv("AGENT_LISTEN", "0.0.0.0:9464")
	t.Setenv("AGENT_ADVERTISE", "10.0.0.7:9464")
	t.Setenv("AGENT_ETCD", "http://etcd:2379")
	cfg, err := stackconfig.Load(path, nil, stackconfig.JoinOptions)
	if err != nil {
		t.Errorf("%s: the rendered agent.toml does not load: %v\n%s", variant, err, toml)
		return
	}
	if cfg.Stack.Driver != "helm" || cfg.Stack.Helm.Namespace != "agent-system" || cfg.Stack.Helm.Service != "agent" || cfg.Stack.Helm.TokenSecret != "agent-token" {
		t.Errorf("%s: loaded %+v", variant, cfg.Stack.Helm)
	}
	switch {
	case tlsOn && (!cfg.API.TLS() || cfg.API.Insecure || cfg.Stack.Helm.CASecret != "agent-api-ca"):
		t.Errorf("%s: api %+v, stack.helm.ca_secret %q: want HTTPS only and the CA Secret agent-api-ca", variant, cfg.API, cfg.Stack.Helm.CASecret)
	case tlsOn:
		if err := cfg.API.VerifyServerName(serverName); err != nil {
			t.Errorf("%s: %v", variant, err)
		}
	case cfg.API.TLS() || !cfg.API.Insecure || cfg.Stack.Helm.CASecret != "":
		t.Errorf("%s: api %+v, stack.helm.ca_secret %q: want plain HTTP", variant, cfg.API, cfg.Stack.Helm.CASecret)
	}
}

// The chart's RBAC, applied for real, is enough for the helm driver
// acting as the chart's ServiceAccount: a guid namespace, a release in it,
// the master label on a pod of its namespace; and it is refused what the
// RBAC does not grant (a pod label in another namespace).
func TestAgentChartRBACIsEnoughForTheDriver(t *testing.T) {
	api := kubetest.Start(t)
	k := api.Client(t)
	ctx := context.Background()
	dc, err := dynamic.NewForConfig(api.RESTConfig(kubetest.Admin))
	if err != nil {
		t.Fatal(err)
	}
	const ns = "agent-system"
	for _, name := range []string{ns, "elsewhere"} {
		if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := k.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := k.CoreV1().Pods(name).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "agent-x"},
			Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "agent", Image: "agent:dev"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, obj := range render(t, ns, map[string]any{}) {
		switch obj.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := apply(t, dc, obj, false); err != nil {
				t.Fatalf("apply %s: %v", obj.GetKind(), err)
			}
		}
	}
	sa := "system:serviceaccount:" + ns + ":agent"
	c, err := helm.New(ctx, helm.Config{
		Kubeconfig: api.Kubeconfig(t, kubetest.Admin, sa), Namespace: ns,
		ChartCache: filepath.Join(t.TempDir(), "charts"),
	}, helm.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	allow := func(context.Context, state.Release) error { return nil }
	if _, err := c.EnsureNamespace(ctx, "rbac-guid", map[string]string{workload.LabelGUID: "rbac-guid"}); err != nil {
		t.Fatalf("EnsureNamespace as %s: %v", sa, err)
	}
	hello, err := c.LoadChart(ctx, helm.ChartRef{Path: kubetest.Chart("hello")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Ensure(ctx, helm.Release{Name: "agent-app", Namespace: "rbac-guid", Chart: hello, Values: map[string]any{}}, allow)
	if err != nil || st.Status != "deployed" {
		t.Fatalf("install as %s: %+v, %v", sa, st, err)
	}
	if list, err := c.List(ctx, nil); err != nil || len(list) != 1 {
		t.Fatalf("list as %s: %+v, %v", sa, list, err)
	}
	if err := c.LabelPod(ctx, ns, "agent-x", "io.agentproj.master", "true"); err != nil {
		t.Fatalf("label a pod of the agent's namespace as %s: %v", sa, err)
	}
	if err := c.LabelPod(ctx, "elsewhere", "agent-x", "io.agentproj.master", "true"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("label a pod of another namespace as %s = %v, want forbidden", sa, err)
	}
	// The node monitor, as the same ServiceAccount: its watch of the
	// node's pods and the namespaces lists and follows, and it reads a
	// ReplicaSet to name a pod's Deployment.
	rs, err := k.AppsV1().ReplicaSets("rbac-guid").Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "0badc0de-0000-4000-8000-000000000002", Controller: ptr(true),
		}}},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "busybox"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.CoreV1().ServiceAccounts("rbac-guid").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	web, err := k.CoreV1().Pods("rbac-guid").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1-abcde", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr(true),
		}}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "web", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podReg := prometheus.NewRegistry()
	pods, err := kubepods.New(kubepods.Config{Node: "n1", Interval: time.Hour, ProcRoot: "/proc", Cgroups: cgroup.NewV2(t.TempDir())},
		c.Kubernetes(), slog.New(slog.NewTextHandler(io.Discard, nil)), podReg)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- pods.Watch().Run(wctx) }()
	t.Cleanup(func() { stop(); <-done })
	kubetest.Eventually(t, 30*time.Second, func(context.Context) bool {
		p, ok := pods.Watch().Lookup(string(web.UID))
		return ok && p.OwnerKind == "Deployment" && p.OwnerName == "web" && p.GUID == "rbac-guid"
	}, "the pod monitor as %s does not name the pod after its Deployment and guid", sa)
	for _, what := range []string{"watch", "replicaset"} {
		if v := podErrors(t, podReg, what); v != 0 {
			t.Errorf("pod monitor errors{what=%q} = %v as %s, want 0", what, v, sa)
		}
	}
	if err := c.Uninstall(ctx, "rbac-guid", "agent-app", allow); err != nil {
		t.Fatalf("uninstall as %s: %v", sa, err)
	}
	if err := c.DeleteNamespace(ctx, "rbac-guid"); err != nil {
		t.Fatalf("delete namespace as %s: %v", sa, err)
	}
}

// podErrors is agent_monitor_pods_errors_total{what} in reg.
func podErrors(t *testing.T, reg *prometheus.Registry, what string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "agent_monitor_pods_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "what" && l.GetValue() == what {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("agent_monitor_pods_errors_total{what=%q} is not served", what)
	return 0
}

// checkDaemonSet asserts what the issue asks of the agent's pods: the node
// name from the downward API, and with the monitor hostPID and the host's
// /proc and /sys/fs/cgroup read-only, where the monitor is told to look.
func checkDaemonSet(t *testing.T, variant string, obj *unstructured.Unstructured, vals map[string]any) {
	t.Helper()
	var ds appsv1.DaemonSet
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &ds); err != nil {
		t.Fatal(err)
	}
	pod := ds.Spec.Template.Spec
	ctr := pod.Containers[0]
	env := map[string]corev1.EnvVar{}
	for _, e := range ctr.Env {
		env[e.Name] = e
	}
	for name, field := range map[string]string{"AGENT_NODE": "spec.nodeName", "POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
		if e := env[name]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
			t.Errorf("%s: %s is not %s from the downward API: %+v", variant, name, field, e)
		}
	}
	if pod.ServiceAccountName != "agent" {
		t.Errorf("%s: service account %q", variant, pod.ServiceAccountName)
	}
	monitor := true
	if m, ok := vals["monitor"].(map[string]any); ok {
		monitor = m["enabled"].(bool)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range ctr.VolumeMounts {
		mounts[m.MountPath] = m
	}
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, c := range []struct{ host, in, env string }{{"/proc", "/host/proc", "AGENT_MONITOR_PROC_ROOT"}, {"/sys/fs/cgroup", "/host/sys/fs/cgroup", "AGENT_MONITOR_CGROUP_ROOT"}} {
		m, mounted := mounts[c.in]
		switch {
		case monitor && (!mounted || !m.ReadOnly || hostPaths[m.Name] != c.host || env[c.env].Value != c.in):
			t.Errorf("%s: the host's %s is not mounted read-only at %s for the monitor: mount %+v, env %+v", variant, c.host, c.in, m, env[c.env])
		case !monitor && mounted:
			t.Errorf("%s: monitor off, yet %s is mounted", variant, c.in)
		}
	}
	// With api.tls the certificate's Secrets are mounted where agent.toml
	// says and the probes speak HTTPS.
	tlsSecrets := map[string]string{}
	if a, ok := vals["api"].(map[string]any); ok {
		if tv, ok := a["tls"].(map[string]any); ok && tv["secretName"] != "" { // vals has the chart's defaults by now
			tlsSecrets["/etc/agent/tls"], tlsSecrets["/etc/agent/tls-ca"] = tv["secretName"].(string), tv["caSecretName"].(string)
		}
	}
	secrets := map[string]string{}
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			secrets[v.Name] = v.Secret.SecretName
		}
	}
	for at, secret := range tlsSecrets {
		if m, ok := mounts[at]; !ok || !m.ReadOnly || secrets[m.Name] != secret {
			t.Errorf("%s: Secret %s is not mounted read-only at %s: %+v", variant, secret, at, m)
		}
	}
	wantScheme := map[bool]corev1.URIScheme{true: corev1.URISchemeHTTPS, false: ""}[len(tlsSecrets) > 0]
	for _, p := range []*corev1.Probe{ctr.ReadinessProbe, ctr.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != wantScheme {
			t.Errorf("%s: probe %+v, want scheme %q", variant, p, wantScheme)
		}
	}
	if pod.HostPID != monitor || env["AGENT_MONITOR_ENABLED"].Value != strconv.FormatBool(monitor) {
		t.Errorf("%s: monitor %v, hostPID %v, AGENT_MONITOR_ENABLED %q", variant, monitor, pod.HostPID, env["AGENT_MONITOR_ENABLED"].Value)
	}
}

// checkService asserts that the agent's Service routes to the master's pod
// only: it selects the label the master puts on its own pod.
func checkService(t *testing.T, variant string, obj *unstructured.Unstructured) {
	t.Helper()
	if obj.GetName() != "agent" {
		return // the etcd peers' headless Service
	}
	sel, _, _ := unstructured.NestedStringMap(obj.Object, "spec", "selector")
	if sel[releases.LabelMaster] != "true" || sel["app.kubernetes.io/name"] != "agent" {
		t.Errorf("%s: the agent Service selects %v, want the master's label %s=true and the agent pods", variant, sel, releases.LabelMaster)
	}
}

// Every value in values.yaml has a row in the chart's README, and every
// row names a value that exists.
func TestAgentChartValuesAreDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(b, &vals); err != nil {
		t.Fatal(err)
	}
	// Free-form maps are documented as a whole.
	freeForm := map[string]bool{"resources": true, "config": true, "securityContext": true}
	keys := map[string]bool{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			path := prefix + k
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 && !freeForm[path] {
				walk(path+".", sub)
				continue
			}
			keys[path] = true
		}
	}
	walk("", vals)
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, line := range strings.Split(string(readme), "\n") {
		if k, ok := strings.CutPrefix(line, "| `"); ok {
			if k, _, ok := strings.Cut(k, "` |"); ok {
				rows[k] = true
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if !rows[k] {
			t.Errorf("value %s has no row in README.md", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rows)) {
		if !keys[k] {
			t.Errorf("README.md documents %s, which values.yaml does not have", k)
		}
	}
}
