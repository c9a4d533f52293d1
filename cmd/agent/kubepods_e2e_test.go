package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/helm/kubetest"
	"github.com/agentproj/agent/drivers/workload"
)

// cgroupMounts are where this host mounts the cgroup controllers the pod
// monitor reads: the v1 mounts of memory, cpuacct, blkio and pids, or the
// unified v2 root alone.
func cgroupMounts(t *testing.T) (dirs []string, v2 bool) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	unified := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+3 > len(fields) || !strings.HasPrefix(fields[4], "/sys/fs/cgroup") {
			continue
		}
		switch fields[sep+1] {
		case "cgroup2":
			if fields[4] == "/sys/fs/cgroup" {
				unified = fields[4]
			}
		case "cgroup":
			for _, opt := range strings.Split(fields[sep+3], ",") {
				switch opt {
				case "memory", "cpuacct", "blkio", "pids":
					if !seen[fields[4]] {
						seen[fields[4]] = true
						dirs = append(dirs, fields[4])
					}
				}
			}
		}
	}
	if len(dirs) == 0 && unified != "" {
		return []string{unified}, true
	}
	return dirs, false
}

// kubeletStandIn makes what a kubelet would make for one pod with one
// container: the kubepods cgroups (cgroupfs driver, BestEffort) below a
// parent of the test's own, with a real process moved into the
// container's cgroup. It is the test, not a kubelet: no pod runs. The
// cgroups are removed when the test ends, after the process.
func kubeletStandIn(t *testing.T, uid, containerID string, proc *proc) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test makes cgroups: it runs as root under CI")
		}
		t.Skip("this test makes cgroups: run it as root")
	}
	mounts, v2 := cgroupMounts(t)
	if len(mounts) == 0 {
		t.Fatal("no cgroup controllers are mounted under /sys/fs/cgroup")
	}
	parent := fmt.Sprintf("agent-e2e-%d", os.Getpid())
	rel := []string{parent, "kubepods", "besteffort", "pod" + uid, containerID}
	var made []string
	t.Cleanup(func() {
		proc.kill()
		// A cgroup can be removed once its last process is reaped, which
		// the kernel may finish a moment after the wait.
		for i := len(made) - 1; i >= 0; i-- {
			deadline := time.Now().Add(10 * time.Second)
			for {
				err := os.Remove(made[i])
				if err == nil || errors.Is(err, os.ErrNotExist) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("remove cgroup %s: %v", made[i], err)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	})
	for _, m := range mounts {
		dir := m
		for i, seg := range rel {
			dir = filepath.Join(dir, seg)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("make cgroup: %v", err)
			}
			made = append(made, dir)
			if v2 && i < len(rel)-1 {
				// Children only get the controllers' files when the parent
				// hands them down; one the host lacks leaves its figures 0
				// (memory and cpu, which the test asserts, are everywhere).
				for _, c := range []string{"+cpu", "+memory", "+io", "+pids"} {
					if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(c), 0o644); err != nil {
						t.Logf("enable %s in %s: %v", c, dir, err)
					}
				}
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(proc.cmd.Process.Pid)), 0o644); err != nil {
			t.Fatalf("move the process into %s: %v", dir, err)
		}
	}
}

// An agent in Kubernetes mode on a real kube-apiserver serves the pods of
// its node: the pod's cgroups are real ones (made by the test in the
// kubelet's cgroupfs layout, with a real process in them) named by the
// uid the API gave a Pod object, whose ReplicaSet belongs to a Deployment
// in a guid namespace. No kubelet runs: the Pod never starts; the test
// writes its container id into its status as the kubelet would.
func TestKubernetesPodMetricsFromRealCgroups(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	api := kubetest.Start(t)
	k := api.Client(t)
	ctx := context.Background()
	const (
		ns   = "agents"
		guid = "shop-e2e"
		node = "n1"
		cid  = "e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0"
	)
	for name, labels := range map[string]map[string]string{ns: nil, guid: {workload.LabelGUID: guid}} {
		if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := k.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}}
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "shop"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "shop", Image: "busybox"}}},
	}
	dep, err := k.AppsV1().Deployments(guid).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "shop"}, Spec: appsv1.DeploymentSpec{Selector: sel, Template: tmpl},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	// The ReplicaSet the controller manager would make (none runs here).
	rs, err := k.AppsV1().ReplicaSets(guid).Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-7f9c", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: &yes,
		}}},
		Spec: appsv1.ReplicaSetSpec{Selector: sel, Template: tmpl},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := k.CoreV1().Pods(guid).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-7f9c-x2x9q", Labels: map[string]string{"app": "shop"}, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &yes,
		}}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "shop", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "shop", Image: "busybox", ContainerID: "containerd://" + cid, Ready: true,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	if _, err := k.CoreV1().Pods(guid).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The pod's "container": a shell that works a little now and then.
	work := startProc(t, "pod-work", "/bin/sh", "-c", "while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.5; done")
	kubeletStandIn(t, string(pod.UID), cid, work)

	cfg := filepath.Join(t.TempDir(), "agent.toml")
	toml := `
[stack.helm]
namespace = "` + ns + `"
[stack.helm.metrics]
enabled = false
[stack.helm.logs]
enabled = false
[stack.helm.traces]
enabled = false
[monitor]
interval = "1s"
containers = false
`
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", api.Kubeconfig(t, kubetest.AgentA, ""))
	t.Setenv("POD_NAME", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	a := startKubeAgent(t, startEtcd(t), node, "2s", "--driver", "helm", "--config", cfg)
	etcdtest.Eventually(t, 30*time.Second, a.ready, "agent not ready")

	want := model.LabelSet{
		"namespace": guid, "pod": model.LabelValue(pod.Name), "uid": model.LabelValue(pod.UID), "qos": "BestEffort",
		"owner_kind": "Deployment", "owner_name": "shop", "guid": guid,
	}
	var last map[string]*dto.MetricFamily
	value := func(name string, labels model.LabelSet) (float64, bool) {
		mf := last[name]
		if mf == nil {
			return 0, false
		}
	next:
		for _, m := range mf.GetMetric() {
			got := model.LabelSet{}
			for _, l := range m.GetLabel() {
				got[model.LabelName(l.GetName())] = model.LabelValue(l.GetValue())
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			if len(got) != len(labels) {
				continue
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			}
		}
		return 0, false
	}
	scrape := func() bool {
		resp, err := http.Get("http://" + a.api + "/metrics/monitor")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		p := expfmt.NewTextParser(model.UTF8Validation)
		last, err = p.TextToMetricFamilies(resp.Body)
		return err == nil
	}
	containerLabels := model.LabelSet{"namespace": guid, "pod": model.LabelValue(pod.Name), "container": "shop", "id": cid}
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		if !scrape() {
			return false
		}
		cpu, ok1 := value("pod_cpu_usage_seconds_total", want)
		mem, ok2 := value("pod_memory_usage_bytes", want)
		procs, ok3 := value("pod_container_processes", containerLabels)
		ccpu, ok4 := value("pod_container_cpu_usage_seconds_total", containerLabels)
		up, ok5 := value("pod_up", want)
		return ok1 && ok2 && ok3 && ok4 && ok5 && cpu > 0 && mem > 0 && procs >= 1 && ccpu > 0 && up == 1
	}, "GET /metrics/monitor does not serve the pod up, with CPU, memory and its container; families: %d", len(last))
	// The process shares the host's network namespace: no pod network
	// series, as for a hostNetwork pod.
	if _, ok := value("pod_network_receive_bytes_total", want); ok {
		t.Error("a pod on the host's network namespace has network series")
	}
}
