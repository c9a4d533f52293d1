package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/helm/kubetest"
	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/master/releases"
)

// Outside a cluster, `--driver helm` without a kubeconfig stops at once
// with a message that says what is missing, as a configuration error.
func TestHelmDriverOutsideAClusterFailsAtStart(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	a := startKubeAgent(t, startEtcd(t), "n1", "2s", "--driver", "helm")
	code, err := a.wait(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(a.log)
	if code != 2 || !bytes.Contains(log, []byte("no Kubernetes API to install into: the agent is not in a pod")) ||
		!bytes.Contains(log, []byte("set stack.helm.kubeconfig, AGENT_STACK_HELM_KUBECONFIG or KUBECONFIG")) {
		t.Fatalf("exit code %d, log:\n%s", code, log)
	}
}

// The host build (`make build`) has no Kubernetes mode: asked for it, it
// stops at once and says which build has it, as a configuration error.
func TestHostBuildRefusesKubernetesMode(t *testing.T) {
	a := startAgent(t, startEtcd(t), "n1", "2s", "--driver", "helm")
	code, err := a.wait(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(a.log)
	if code != 2 || !bytes.Contains(log, []byte("this agent is the host build, without Kubernetes support")) {
		t.Fatalf("exit code %d, log:\n%s", code, log)
	}
}

// Two agent processes in Kubernetes mode on a real kube-apiserver (no
// kubelet: pods never run, the API stores what they would be), each with
// its own kubeconfig and its own Pod object: the master installs the
// stack and an app, labels its pod for the Service, reports its releases
// in `agent status`; after a kill -9 the other agent takes over, adopts
// every release (same revisions) and its pod gets the label; the killed
// agent, started again, clears the label its crash left.
func TestKubernetesModeFailover(t *testing.T) {
	api := kubetest.Start(t)
	k := api.Client(t)
	ctx := context.Background()
	const ns = "agents"
	if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		if _, err := k.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "agent-" + n, Labels: map[string]string{"app.kubernetes.io/name": "agent"}},
			Spec:       corev1.PodSpec{NodeName: n, Containers: []corev1.Container{{Name: "agent", Image: "agent:dev"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(t.TempDir(), "agent.toml")
	// The project's small charts stand in for the upstream ones (no
	// registry is reachable here).
	toml := `
[stack.helm]
namespace = "` + ns + `"
timeout = "1m"
[stack.helm.metrics]
path = "` + kubetest.Chart("hello") + `"
repository = ""
name = ""
version = ""
[stack.helm.logs]
enabled = false
[stack.helm.traces]
enabled = false
[stack.helm.app_charts.guidapp]
path = "` + kubetest.Chart("guidapp") + `"
[api]
allowed_images = ["busybox:*"]
`
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	endpoint := startEtcd(t)
	start := func(node, user string) *agentProc {
		t.Setenv("KUBECONFIG", api.Kubeconfig(t, user, ""))
		t.Setenv("POD_NAME", "agent-"+node)
		t.Setenv("KUBERNETES_SERVICE_HOST", "")
		return startKubeAgent(t, endpoint, node, "2s", "--driver", "helm", "--config", cfg)
	}
	a1 := start("n1", kubetest.AgentA)
	etcdtest.Eventually(t, 30*time.Second, a1.ready, "n1 not ready")
	a2 := start("n2", kubetest.AgentB)
	etcdtest.Eventually(t, 30*time.Second, a2.ready, "n2 not ready")

	labelled := func() []string {
		pods, err := k.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: releases.LabelMaster + "=true"})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range pods.Items {
			out = append(out, p.Name)
		}
		return out
	}
	kube := func(a *agentProc) (master string, ks *state.Report) {
		var v etcd.ClusterView
		resp, err := http.Get("http://" + a.api + "/api/v1/status")
		if err != nil {
			return "", nil
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&v) != nil || v.Master == nil {
			return "", nil
		}
		for _, m := range v.Members {
			if m.Node == v.Master.Node && m.Status != nil && len(m.Status.Kubernetes) > 0 {
				var s state.Report
				if json.Unmarshal(m.Status.Kubernetes, &s) == nil {
					ks = &s
				}
			}
		}
		return v.Master.Node, ks
	}
	revisions := func(ks *state.Report) map[string]int {
		out := map[string]int{}
		for _, r := range ks.Releases {
			if r.Status == "deployed" {
				out[r.Namespace+"/"+r.Name] = r.Revision
			}
		}
		return out
	}
	var first string
	etcdtest.Eventually(t, 30*time.Second, func() bool { first, _ = kube(a2); return first != "" }, "no master")
	master, other := a1, a2
	if first == "n2" {
		master, other = a2, a1
	}

	// An app by image and an app by chart, through the API.
	for _, body := range []string{`{"guid":"e2e-img","image":"busybox:1"}`, `{"guid":"e2e-chart","chart":"guidapp"}`} {
		resp, err := http.Post("http://"+other.api+"/api/v1/apps", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s = %d", body, resp.StatusCode)
		}
	}
	want := map[string]int{ns + "/agent-metrics": 1, "e2e-img/agent-app": 1, "e2e-chart/agent-app": 1}
	var got map[string]int
	etcdtest.Eventually(t, 2*time.Minute, func() bool {
		_, ks := kube(other)
		if ks == nil {
			return false
		}
		got = revisions(ks)
		return len(got) == 3 && len(ks.Namespaces) == 2 && maps.Equal(got, want)
	}, "releases in the master's status: %v", lazy(func() any { return got }))
	etcdtest.Eventually(t, 10*time.Second, func() bool { return slices.Equal(labelled(), []string{"agent-" + master.node}) }, "master's pod not labelled")
	if _, err := k.AppsV1().Deployments("e2e-img").Get(ctx, "e2e-img", metav1.GetOptions{}); err != nil {
		t.Fatalf("the app's Deployment: %v", err)
	}

	// kill -9 the master: the other agent takes over and adopts.
	master.kill()
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		m, ks := kube(other)
		return m == other.node && ks != nil && maps.Equal(revisions(ks), want)
	}, "%s did not take over with the same revisions", other.node)
	etcdtest.Eventually(t, 10*time.Second, func() bool { return slices.Contains(labelled(), "agent-"+other.node) }, "new master's pod not labelled")

	// What an operator runs: `agent status` lists each release (chart,
	// version, revision, status) and each guid namespace; the host build
	// reads them as well as the Kubernetes one.
	var out []byte
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		out, _ = exec.Command(agentBinary(t), "status", "--api", "http://"+other.api).CombinedOutput()
		flat := strings.Join(strings.Fields(string(out)), " ")
		return strings.Contains(flat, "agent-metrics "+ns+" hello 0.1.0 1 deployed") &&
			strings.Contains(flat, "agent-app e2e-img agent-app") && strings.Contains(flat, "agent-app e2e-chart guidapp") &&
			strings.Contains(flat, "e2e-img Active") && strings.Contains(flat, "e2e-chart Active")
	}, "agent status lacks the releases or namespaces:\n%s", lazy(func() any { return string(out) }))

	// The killed agent comes back and clears the label it left.
	user := kubetest.AgentA
	if master == a2 {
		user = kubetest.AgentB
	}
	back := start(master.node, user)
	etcdtest.Eventually(t, 30*time.Second, back.ready, "restarted agent not ready")
	etcdtest.Eventually(t, 10*time.Second, func() bool { return slices.Equal(labelled(), []string{"agent-" + other.node}) }, "labels after the restart: %v", labelled())
}

// lazy formats what f returns when the message is printed: Eventually's
// arguments are evaluated when it is called, before the last attempt.
type lazy func() any

func (f lazy) String() string { return fmt.Sprint(f()) }
