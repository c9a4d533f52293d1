package monitor

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/strslice"

	"github.com/agentproj/agent/drivers/docker/dockertest"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/slave/monitor/cgroup"
)

// fakeLister stands in for the Docker engine in front of the cgroup v2
// fixture trees: no engine on this machine runs containers in cgroup v2.
type fakeLister struct{ list []container.Summary }

func (f fakeLister) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return f.list, nil
}

const (
	fixtureSystemd  = "35f95d053f6256a15931ba759eaadd3d9b59d74aa47e730a1cd95832a717472e"
	fixtureCgroupfs = "d41254dfe5bf4ecd4b67439e8a881f95b3d7689ab8f188f6aa8bd4d02ecc5f6a"
)

// Containers read from a cgroup v2 tree (fixtures of the systemd and
// cgroupfs drivers), named by the engine's list.
func TestContainersCgroupV2Fixtures(t *testing.T) {
	lister := fakeLister{list: []container.Summary{
		{ID: fixtureSystemd, Names: []string{"/shop"}, Image: "shop:1", State: container.StateRunning,
			Labels: map[string]string{workload.LabelGUID: "shop-1", workload.LabelManaged: "true"}},
		{ID: fixtureCgroupfs, Names: []string{"/plain"}, Image: "plain:2", State: container.StateRunning},
		{ID: "0000000000000000000000000000000000000000000000000000000000000001", Names: []string{"/old"}, State: container.StateExited},
		{ID: "0000000000000000000000000000000000000000000000000000000000000002", Names: []string{"/old-app"}, State: container.StateExited,
			Labels: map[string]string{workload.LabelGUID: "shop-2", workload.LabelManaged: "true"}},
	}}
	m, _ := newMonitor(t, func(c *Config) {
		c.Containers, c.Docker = true, lister
		c.Cgroups = cgroup.NewV2(filepath.Join("..", "..", "testdata", "cgroup", "v2"))
	})
	s := eventually(t, m, 5*time.Second, "containers read", func(s map[string]float64) bool {
		return s[series("container_up", "id", fixtureSystemd, "name", "shop", "image", "shop:1", "guid", "shop-1")] == 1
	})
	shop := func(name string, kv ...string) float64 {
		v, ok := s[series(name, append([]string{"id", fixtureSystemd, "name", "shop", "image", "shop:1", "guid", "shop-1"}, kv...)...)]
		if !ok {
			t.Fatalf("%s of shop is not served", name)
		}
		return v
	}
	for name, want := range map[string]float64{
		"container_cpu_usage_seconds_total":  2.5,
		"container_cpu_user_seconds_total":   1.5,
		"container_cpu_system_seconds_total": 1,
		"container_memory_usage_bytes":       50 << 20,
		"container_memory_working_set_bytes": 42 << 20,
		"container_memory_rss":               30 << 20,
		"container_memory_cache":             20 << 20,
		"container_spec_memory_limit_bytes":  256 << 20,
		"container_fs_reads_bytes_total":     5096,
		"container_fs_writes_bytes_total":    10192,
		"container_processes":                0, // the fixture's pids do not run here
	} {
		if got := shop(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	plain := series("container_spec_memory_limit_bytes", "id", fixtureCgroupfs, "name", "plain", "image", "plain:2")
	if _, ok := s[plain]; ok {
		t.Error("a container without a memory limit has container_spec_memory_limit_bytes")
	}
	if v := s[series("container_memory_usage_bytes", "id", fixtureCgroupfs, "name", "plain", "image", "plain:2")]; v != 10<<20 {
		t.Errorf("cgroupfs driver container: memory %v", v)
	}
	// A stopped container is left out, unless the agent runs it: then it
	// is down.
	if v, ok := s[series("container_up", "id", "0000000000000000000000000000000000000000000000000000000000000002", "name", "old-app", "guid", "shop-2")]; !ok || v != 0 {
		t.Errorf("stopped app: container_up %v (served %v), want 0", v, ok)
	}
	for k := range s {
		if strings.Contains(k, `name="old"`) {
			t.Errorf("a stopped container that is not the agent's is served: %s", k)
		}
	}
}

const appScript = `#!/bin/sh
eval "$SCRIPT"
`

// Real containers on this machine's Docker engine (cgroup v1): an app
// with a guid that burns some CPU and writes to disk, and one in a network
// namespace of its own that talks to itself.
func TestContainersWithDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs dockerd")
	}
	e := dockertest.Start(t)
	image := "agent-test/monitor:1"
	dockertest.BusyboxImage(t, e.Client, image, appScript, nil)
	ctx := context.Background()
	run := func(name, netMode, script string, labels map[string]string) string {
		t.Helper()
		init := true
		resp, err := e.Client.ContainerCreate(ctx,
			&container.Config{Image: image, Env: []string{"SCRIPT=" + script}, Labels: labels, Entrypoint: strslice.StrSlice{"/entrypoint"}},
			&container.HostConfig{NetworkMode: container.NetworkMode(netMode), Init: &init}, &network.NetworkingConfig{}, nil, name)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		if err := e.Client.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		return resp.ID
	}
	appID := run("mon-app", "host",
		`i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done
		 i=0; while [ $i -lt 64 ]; do /bin/busybox head -c 65536 /dev/zero; sleep 0.05; i=$((i+1)); done | /bin/busybox dd of=/tmp/f bs=64k iflag=fullblock oflag=direct 2>/dev/null
		 exec sleep 300`,
		map[string]string{workload.LabelGUID: "shop-1", workload.LabelManaged: workload.ManagedValue})
	netID := run("mon-net", "none",
		`mkdir -p /tmp/www; echo hello > /tmp/www/index.html; /bin/busybox httpd -p 127.0.0.1:8080 -h /tmp/www; while :; do /bin/busybox wget -q -O /dev/null http://127.0.0.1:8080/index.html; sleep 1; done`, nil)

	m, _ := newMonitor(t, func(c *Config) { c.Containers, c.Docker = true, e.Client })
	t.Logf("cgroups: %s", m.cg)
	app := func(name string, kv ...string) string {
		return series(name, append([]string{"id", appID, "name", "mon-app", "image", image, "guid", "shop-1"}, kv...)...)
	}
	netc := func(name string) string { return series(name, "id", netID, "name", "mon-net", "image", image) }
	s := eventually(t, m, 60*time.Second, "both containers measured", func(s map[string]float64) bool {
		return s[app("container_up")] == 1 && s[app("container_cpu_usage_seconds_total")] > 0.1 &&
			s[app("container_fs_writes_bytes_total")] >= 4<<20 &&
			s[netc("container_up")] == 1 && s[netc("container_network_receive_bytes_total")] > 0
	})
	for _, name := range []string{"container_memory_usage_bytes", "container_memory_working_set_bytes", "container_memory_rss",
		"container_memory_virtual_bytes", "container_cpu_user_seconds_total", "container_threads", "container_file_descriptors"} {
		if s[app(name)] <= 0 {
			t.Errorf("%s of mon-app = %v, want > 0", name, s[app(name)])
		}
	}
	if v := s[app("container_processes")]; v < 2 {
		t.Errorf("container_processes of mon-app = %v, want its init and its sleep", v)
	}
	if v := s[app("container_ulimits_soft", "ulimit", "max_open_files")]; v <= 0 {
		t.Errorf("container_ulimits_soft = %v", v)
	}
	if st := s[app("container_start_time_seconds")]; st < float64(time.Now().Add(-2*time.Minute).Unix()) {
		t.Errorf("container_start_time_seconds = %v, want about now", st)
	}
	if _, ok := s[app("container_network_receive_bytes_total")]; ok {
		t.Error("a container on the host network has network series (they would repeat the host's)")
	}
	if s[netc("container_network_transmit_bytes_total")] <= 0 {
		t.Error("no transmitted bytes in the container's own namespace")
	}

	// Stopped: the agent's app is down, not gone.
	timeout := 1
	if err := e.Client.ContainerStop(ctx, appID, container.StopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	s = eventually(t, m, 30*time.Second, "stopped app is down", func(s map[string]float64) bool {
		v, ok := s[app("container_up")]
		return ok && v == 0
	})
	if _, ok := s[app("container_cpu_usage_seconds_total")]; ok {
		t.Error("a stopped container still has figures")
	}
}
