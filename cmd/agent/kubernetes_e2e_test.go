package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
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
	k8sclient "k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
	"github.com/agentproj/agent/drivers/helm/kubetest"
	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/master/releases"
	"github.com/agentproj/agent/stackconfig"
)

// kubeWithNamespace starts a kube-apiserver (stopped when the test ends)
// holding namespace ns.
func kubeWithNamespace(t *testing.T, ns string) (*kubetest.API, k8sclient.Interface) {
	t.Helper()
	api := kubetest.Start(t)
	k := api.Client(t)
	if _, err := k.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return api, k
}

// kubeConfigFile writes an agent.toml for Kubernetes mode in namespace ns:
// the project's small chart metricsChart stands in for the metrics stack
// (no registry is reachable here), no logs or traces releases; helmKeys
// go into [stack.helm], rest after it.
func kubeConfigFile(t *testing.T, ns, metricsChart, helmKeys, rest string) string {
	t.Helper()
	toml := fmt.Sprintf(`
[stack.helm]
namespace = %q
timeout = "1m"
%s[stack.helm.metrics]
path = %q
repository = ""
name = ""
version = ""
[stack.helm.logs]
enabled = false
[stack.helm.traces]
enabled = false
%s`, ns, helmKeys, kubetest.Chart(metricsChart), rest)
	cfg := filepath.Join(t.TempDir(), "agent.toml")
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

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
	const ns = "agents"
	api, k := kubeWithNamespace(t, ns)
	ctx := context.Background()
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
	cfg := kubeConfigFile(t, ns, "hello", "", `
[stack.helm.app_charts.guidapp]
path = "`+kubetest.Chart("guidapp")+`"
[api]
allowed_images = ["busybox:*"]
`)
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

// In Kubernetes mode the API serves TLS with one certificate for the
// Service's name (a real kube-apiserver, no kubelet): the agent answers
// over https only, and the metrics release it installs is given https
// URLs, the CA Secret to mount and trust, and the Service's name to check
// every pod's certificate against. A certificate without that name, or no
// stack.helm.ca_secret, stops the agent at start as a configuration error;
// agent check says so too, and renders those values without starting.
func TestKubernetesModeAPIOverTLS(t *testing.T) {
	const ns = "agents"
	api, k := kubeWithNamespace(t, ns)
	ctx := context.Background()
	ca := testca.New(t)
	cert, key := ca.Issue(t, "agent-api", "agent."+ns+".svc")
	wrong, wrongKey := ca.Issue(t, "elsewhere", "agent.other.svc")
	config := func(certFile, keyFile, caSecret string) string {
		return kubeConfigFile(t, ns, "values", fmt.Sprintf("ca_secret = %q\n", caSecret), fmt.Sprintf(`
[relay]
upstream = ["http://127.0.0.1:9/api/v1/write"]
[api]
cert_file = %q
key_file = %q
ca_file = %q
`, certFile, keyFile, ca.CertFile))
	}
	t.Setenv("KUBECONFIG", api.Kubeconfig(t, kubetest.Admin, ""))
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	start := func(cfg string) *agentProc {
		return startKubeAgent(t, startEtcd(t), "n1", "2s", "--driver", "helm", "--config", cfg)
	}

	// agent check says the same without starting, and renders the
	// metrics release's values.
	check := func(cfg, render string) (string, error) {
		out, err := exec.Command(kubeAgentBinary(t), "check", "--config", cfg, "--node", "n1", "--driver", "helm",
			"--data-dir", t.TempDir(), "--render", render).CombinedOutput()
		return string(out), err
	}
	render := t.TempDir()
	if out, err := check(config(cert, key, "agent-api-ca"), render); err != nil || !strings.Contains(out, filepath.Join(render, "metrics-values.yaml")) {
		t.Fatalf("agent check: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(render, "metrics-values.yaml")); err != nil || !bytes.Contains(b, []byte("url: https://agent.agents.svc:9464/api/v1/write")) {
		t.Fatalf("agent check rendered no https remote-write (%v):\n%s", err, b)
	}
	for _, bad := range []struct{ name, cfg, want string }{
		{"certificate for another Service", config(wrong, wrongKey, "agent-api-ca"), `is not valid for agent.agents.svc`},
		{"no CA Secret", config(cert, key, ""), "stack.helm.ca_secret: required when the API serves TLS"},
	} {
		var ee *exec.ExitError
		if out, err := check(bad.cfg, t.TempDir()); !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(out, bad.want) {
			t.Fatalf("agent check, %s: %v, want exit code 2 and %q:\n%s", bad.name, err, bad.want, out)
		}
		a := start(bad.cfg)
		code, err := a.wait(30 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if log, _ := os.ReadFile(a.log); code != 2 || !bytes.Contains(log, []byte(bad.want)) {
			t.Fatalf("%s: exit code %d, want 2 and %q in the log:\n%s", bad.name, code, bad.want, log)
		}
	}

	a := start(config(cert, key, "agent-api-ca"))
	pool, err := stackconfig.CAPool(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		resp, err := client.Get("https://" + a.api + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "agent not ready over https")
	if code := httpCode("http://" + a.api + "/-/healthy"); code != http.StatusBadRequest {
		t.Fatalf("plain HTTP to the TLS API: %d, want 400", code)
	}

	// The values the master gave the metrics release, as the chart saw them.
	var vals map[string]any
	etcdtest.Eventually(t, 2*time.Minute, func() bool {
		cm, err := k.CoreV1().ConfigMaps(ns).Get(ctx, "agent-metrics-values", metav1.GetOptions{})
		return err == nil && yaml.Unmarshal([]byte(cm.Data["values.yaml"]), &vals) == nil
	}, "the metrics release not installed")
	b, err := json.Marshal(vals["prometheus"])
	if err != nil {
		t.Fatal(err)
	}
	var prom struct {
		Spec struct {
			Secrets     []string `json:"secrets"`
			RemoteWrite []struct {
				URL       string `json:"url"`
				TLSConfig struct {
					CA struct {
						Secret struct{ Name, Key string } `json:"secret"`
					} `json:"ca"`
				} `json:"tlsConfig"`
			} `json:"remoteWrite"`
			Scrape []struct {
				Job    string `json:"job_name"`
				HTTPSD []struct {
					URL string `json:"url"`
					TLS struct {
						CAFile string `json:"ca_file"`
					} `json:"tls_config"`
				} `json:"http_sd_configs"`
				TLS struct {
					CAFile     string `json:"ca_file"`
					ServerName string `json:"server_name"`
				} `json:"tls_config"`
			} `json:"additionalScrapeConfigs"`
		} `json:"prometheusSpec"`
	}
	if err := json.Unmarshal(b, &prom); err != nil {
		t.Fatal(err)
	}
	spec := prom.Spec
	const caFile = "/etc/prometheus/secrets/agent-api-ca/ca.crt"
	if !slices.Equal(spec.Secrets, []string{"agent-api-ca"}) || len(spec.RemoteWrite) != 1 ||
		spec.RemoteWrite[0].URL != "https://agent.agents.svc:9464/api/v1/write" ||
		spec.RemoteWrite[0].TLSConfig.CA.Secret.Name != "agent-api-ca" || spec.RemoteWrite[0].TLSConfig.CA.Secret.Key != "ca.crt" {
		t.Fatalf("the metrics release's Prometheus does not write to the relay over https with the CA Secret: %s", b)
	}
	jobs := map[string]bool{}
	for _, sc := range spec.Scrape {
		jobs[sc.Job] = true
		if len(sc.HTTPSD) != 1 || sc.HTTPSD[0].URL != "https://agent.agents.svc:9464/sd/http" || sc.HTTPSD[0].TLS.CAFile != caFile {
			t.Fatalf("job %s does not read http_sd over https with the CA: %s", sc.Job, b)
		}
		if sc.Job == "agent-api" && (sc.TLS.CAFile != caFile || sc.TLS.ServerName != "agent.agents.svc") {
			t.Fatalf("agent-api does not scrape the pods with the CA and the Service's name: %s", b)
		}
	}
	if !jobs["agent-targets"] || !jobs["agent-api"] || len(jobs) != 2 {
		t.Fatalf("scrape configs %v, want agent-targets and agent-api: %s", jobs, b)
	}
}
