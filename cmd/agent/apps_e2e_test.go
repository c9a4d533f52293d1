package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/agentproj/agent/drivers/docker/dockertest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/workload"
)

// testAppScript is a test application in shell: it logs a line and serves
// a static /metrics with busybox httpd on $PORT.
const testAppScript = `#!/bin/sh
echo "test app $(hostname) started, guid in OTEL_RESOURCE_ATTRIBUTES=$OTEL_RESOURCE_ATTRIBUTES"
exec httpd -f -p "127.0.0.1:$PORT" -h /www
`

// An application from the manager, end to end on a real Docker engine:
// created through the API, run on a node with guid as container name,
// hostname and label, scraped by the master's Prometheus and relayed to the
// manager with its guid; picked up by Vector's docker_logs selector; moved
// when its node dies; gone when deleted.
func TestAppLifecycleOnDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	c := startDockerCluster(t, `
[api]
allowed_images = ["registry.local/*"]
`)
	const guid, image = "shop-7f3a", "registry.local/shop:1.4"
	dockertest.BusyboxImage(t, c.cli, image, testAppScript, map[string]string{
		"/www/metrics": "# TYPE shop_orders_total counter\nshop_orders_total 42\n",
	})
	port := strings.Split(etcdtest.FreeAddr(t), ":")[1]
	master := waitMaster(t, c.endpoint)
	other := map[string]string{"a": "b", "b": "a"}[master]
	api := "http://" + c.agents[master].api

	// An image outside the allow-list is refused and changes nothing.
	if code, body := postApp(t, api, `{"guid":"evil-1","image":"docker.io/evil:1"}`); code != 400 || !strings.Contains(body, "allowed") {
		t.Fatalf("image outside the allow-list: %d %s", code, body)
	}
	// The app goes to the node that is not master, where it must survive the master.
	spec := fmt.Sprintf(`{"guid":%q,"image":%q,"node":%q,"env":{"PORT":%q},"metrics":{"port":%s},"labels":{"team":"a"}}`, guid, image, other, port, port)
	if code, body := postApp(t, api, spec); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	if code, _ := postApp(t, api, spec); code != 200 {
		t.Fatalf("identical create again: %d, want 200", code)
	}

	etcdtest.Eventually(t, 30*time.Second, func() bool {
		info, err := c.cli.ContainerInspect(t.Context(), guid)
		return err == nil && info.State.Running
	}, "app container %s not running", guid)
	info, _ := c.cli.ContainerInspect(t.Context(), guid)
	l := info.Config.Labels
	if info.Config.Hostname != guid || l[workload.LabelGUID] != guid || l[workload.LabelNode] != other || l[workload.LabelManaged] != "true" {
		t.Fatalf("app container: hostname %q labels %v", info.Config.Hostname, l)
	}
	env := strings.Join(info.Config.Env, "\n")
	if !strings.Contains(env, "OTEL_RESOURCE_ATTRIBUTES=") || !strings.Contains(env, "guid="+guid) || !strings.Contains(env, "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:") {
		t.Fatalf("app container env lacks the OTEL settings:\n%s", env)
	}
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		return strings.Contains(dockertest.Logs(t, c.cli, guid), "test app "+guid+" started")
	}, "app log line missing")
	// Vector on the app's node selects managed containers, the app among them.
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		if _, err := c.cli.ContainerInspect(t.Context(), "agent-vector-"+other); err != nil {
			return false
		}
		vector := dockertest.Logs(t, c.cli, "agent-vector-"+other)
		return strings.Contains(vector, `include_labels = ['`+workload.LabelManaged+`=true']`) && strings.Contains(vector, workload.LabelGUID)
	}, "Vector's config does not select managed containers with their guid")

	series := fmt.Sprintf(`shop_orders_total{guid=%q,cluster="e2e",team="a"}`, guid)
	etcdtest.Eventually(t, 60*time.Second, func() bool { return query(c.prom[master], series) == 1 }, "master's Prometheus does not scrape the app")
	etcdtest.Eventually(t, 30*time.Second, func() bool { return query(c.manager, series) == 1 }, "app series with its guid did not reach the manager")
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		out, err := exec.Command(agentBinary(t), "apps", "get", guid, "--api", api, "-o", "json").Output()
		return err == nil && strings.Contains(string(out), `"running"`)
	}, "agent apps get does not say the app is running")
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		apps := agentStatus(t, c.endpoint).Apps
		return len(apps) == 1 && apps[0].GUID == guid && apps[0].Node == other && apps[0].Status == "running"
	}, "agent status does not list the app as running on %s", other)

	// A node dies: the master (a new one, if it was the master) re-places
	// its unpinned apps once the grace period has passed.
	free := "shop-free"
	freePort := strings.Split(etcdtest.FreeAddr(t), ":")[1]
	freeSpec := fmt.Sprintf(`{"guid":%q,"image":%q,"env":{"PORT":%q},"metrics":{"port":%s}}`, free, image, freePort, freePort)
	if code, body := postApp(t, api, freeSpec); code != 201 {
		t.Fatalf("create %s: %d %s", free, code, body)
	}
	var placed string
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		info, err := c.cli.ContainerInspect(t.Context(), free)
		if err != nil || !info.State.Running {
			return false
		}
		placed = info.Config.Labels[workload.LabelNode]
		return true
	}, "unpinned app not running")
	c.agents[placed].kill()
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		info, err := c.cli.ContainerInspect(t.Context(), free)
		return err == nil && info.State.Running && info.Config.Labels[workload.LabelNode] != placed
	}, "app %s not re-placed away from dead node %s", free, placed)

	// Deleting an app removes its container and its target.
	survivor := map[string]string{"a": "b", "b": "a"}[placed]
	api = "http://" + c.agents[survivor].api
	req, _ := http.NewRequest(http.MethodDelete, api+"/api/v1/apps/"+free, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("delete: %v %v", resp, err)
	}
	resp.Body.Close()
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		_, err := c.cli.ContainerInspect(t.Context(), free)
		return cerrdefs.IsNotFound(err)
	}, "deleted app's container still there")
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		b, _ := exec.Command(agentBinary(t), "targets", "--api", api, "-o", "json").Output()
		return len(b) > 0 && !strings.Contains(string(b), free)
	}, "deleted app's target still published")
}

func postApp(t *testing.T, api, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(api+"/api/v1/apps", "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatalf("POST /api/v1/apps: %v", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}
