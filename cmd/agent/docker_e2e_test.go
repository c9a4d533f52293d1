package main

import (
	"fmt"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/client"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/agentproj/agent/drivers/docker/dockertest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/process/processtest"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/stackconfig"
)

// dockerCluster is two agents on a real dockerd with the stack running.
type dockerCluster struct {
	cli      *client.Client
	endpoint string // etcd
	manager  string // the manager Prometheus (remote-write receiver)
	agents   map[string]*agentProc
	prom     map[string]string   // node -> URL of its Prometheus, when master
	args     map[string][]string // node -> join flags, to restart it as it was
	ports    map[string]dockerPorts
	dataDir  map[string]string
}

// dockerPorts are the listen addresses of a node's stack.
type dockerPorts struct{ prom, nodeExporter, jaegerGRPC, jaegerHTTP, traceGRPC, traceHTTP, h1, t1, h2, t2, vectorAPI string }

// startDockerCluster starts the engine, imports the images, etcd, a manager
// Prometheus and agents a and b with the docker driver; extraTOML is added
// to both agents' config. Logs go through the Vector stand-in (Vector
// cannot run here), traces and logs to closed ports.
func startDockerCluster(t *testing.T, extraTOML string) *dockerCluster {
	t.Helper()
	return startDockerClusterWith(t, extraTOML, "vector", "logs_url = \"http://127.0.0.1:9/logs\"\ntraces_otlp_endpoint = \"http://127.0.0.1:9\"\n")
}

// startDockerClusterWith is startDockerCluster with the log shipper and
// the [manager] section given. Jaeger v2 and the trace agent (otelcol) run
// for real, from images of the testbins under the default image names.
func startDockerClusterWith(t *testing.T, extraTOML, shipper, managerTOML string) *dockerCluster {
	t.Helper()
	engine := dockertest.Start(t)
	c := &dockerCluster{cli: engine.Client, agents: map[string]*agentProc{}, prom: map[string]string{}, args: map[string][]string{},
		ports: map[string]dockerPorts{}, dataDir: map[string]string{}}
	st := stackconfig.DefaultStack
	dockertest.ImportImage(t, c.cli, st.Prometheus.Image, requireBinary(t, "prometheus", "prometheus"))
	dockertest.ImportImage(t, c.cli, st.NodeExporter.Image, requireBinary(t, "prometheus-node-exporter", "prometheus-node-exporter"))
	dockertest.ImportImage(t, c.cli, st.Jaeger.Image, processtest.Testbin(t, "jaeger", "jaeger"))
	dockertest.ImportImage(t, c.cli, st.TraceAgent.Image, processtest.Testbin(t, "otelcol", "otelcol"))
	dockertest.StandInImage(t, c.cli, st.Vector.Image)
	t.Setenv("DOCKER_HOST", engine.Host)

	c.endpoint = startEtcd(t)
	c.manager = startPrometheus(t, "manager", "global: {scrape_interval: 1m}\n", "--web.enable-remote-write-receiver")
	for _, n := range []string{"a", "b"} {
		p := dockerPorts{}
		for _, f := range []*string{&p.prom, &p.nodeExporter, &p.jaegerGRPC, &p.jaegerHTTP, &p.traceGRPC, &p.traceHTTP, &p.h1, &p.t1, &p.h2, &p.t2, &p.vectorAPI} {
			*f = etcdtest.FreeAddr(t)
		}
		c.prom[n] = "http://" + p.prom
		cfg := filepath.Join(t.TempDir(), "agent.toml")
		toml := fmt.Sprintf(`%s
[stack.prometheus]
listen = %q
scrape_interval = "1s"
scrape_timeout = "1s"
file_sd_refresh_interval = "1s"
[stack.node_exporter]
listen = %q
[stack.jaeger]
otlp_grpc_listen = %q
otlp_http_listen = %q
health_listen = %q
telemetry_listen = %q
[stack.trace_agent]
otlp_grpc_listen = %q
otlp_http_listen = %q
health_listen = %q
telemetry_listen = %q
[stack.vector]
api_listen = %q
[stack.logs]
shipper = %q
[manager]
%s
[relay]
upstream = [%q]
flush_deadline = "100ms"
`, extraTOML, p.prom, p.nodeExporter, p.jaegerGRPC, p.jaegerHTTP, p.h1, p.t1, p.traceGRPC, p.traceHTTP, p.h2, p.t2, p.vectorAPI, shipper, managerTOML, c.manager+"/api/v1/write")
		if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
		c.ports[n], c.dataDir[n] = p, t.TempDir()
		c.args[n] = []string{"--config", cfg, "--driver", "docker", "--data-dir", c.dataDir[n]}
		c.agents[n] = startAgent(t, c.endpoint, n, "2s", c.args[n]...)
	}
	for _, a := range c.agents {
		etcdtest.Eventually(t, 30*time.Second, a.ready, "agent %s not ready", a.node)
	}
	return c
}

// The main job on a real Docker engine. Prometheus and node_exporter run
// from local images built from the Debian binaries, the Jaeger collector
// and the trace agent from images of the testbins, under the image names
// the stack config uses; Vector cannot run here and is a STAND-IN image
// (busybox printing its args and config files), which proves its container
// is made with the right name, labels, mounts and config.
func TestStackWithDockerDriver(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	c := startDockerCluster(t, "")
	cli, endpoint, manager, agents, prom, args := c.cli, c.endpoint, c.manager, c.agents, c.prom, c.args
	master := waitMaster(t, endpoint)
	other := map[string]string{"a": "b", "b": "a"}[master]

	etcdtest.Eventually(t, 60*time.Second, func() bool {
		return query(prom[master], `up{job="node",cluster="e2e"} == 1`) == 2
	}, "the master's Prometheus container does not scrape both node_exporter containers")
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		return query(manager, `node_exporter_build_info{cluster="e2e"}`) == 2
	}, "node_exporter series did not reach the manager through the relay")

	// Names, hostnames and labels of every container.
	want := map[string]string{ // container -> role
		"agent-prometheus-" + master: workload.RolePrometheus,
		"agent-jaeger-" + master:     workload.RoleJaeger,
	}
	for _, n := range []string{"a", "b"} {
		want["agent-node-exporter-"+n] = workload.RoleNodeExporter
		want["agent-vector-"+n] = workload.RoleVector
		want["agent-trace-agent-"+n] = workload.RoleTraceAgent
	}
	for name, role := range want {
		var info container.InspectResponse
		etcdtest.Eventually(t, 30*time.Second, func() bool {
			var err error
			info, err = cli.ContainerInspect(t.Context(), name)
			return err == nil && info.State.Running
		}, "container %s not running", name)
		node := strings.TrimPrefix(strings.TrimPrefix(name, "agent-"+role+"-"), "agent-")
		l := info.Config.Labels
		if info.Config.Hostname != name || l[workload.LabelRole] != role || l[workload.LabelNode] != node || l[workload.LabelCluster] != "e2e" || !info.HostConfig.NetworkMode.IsHost() {
			t.Errorf("container %s: hostname %q, network %q, labels %v", name, info.Config.Hostname, info.HostConfig.NetworkMode, l)
		}
	}
	// The stand-in Vector was given its rendered config and the Docker socket.
	logs := dockertest.Logs(t, cli, "agent-vector-"+other)
	if !strings.Contains(logs, `type = 'docker_logs'`) || !strings.Contains(logs, `.node = "`+other+`"`) {
		t.Errorf("Vector stand-in did not get a config with docker_logs and its node:\n%s", logs)
	}
	// Its config turns Vector's API on at the port the agent was given:
	// the stand-in answers /health there, as Vector does once it runs.
	for _, n := range []string{"a", "b"} {
		etcdtest.Eventually(t, 30*time.Second, func() bool {
			return processtest.HTTPGet("http://"+c.ports[n].vectorAPI+"/health") != ""
		}, "the Vector stand-in of %s does not answer /health on stack.vector.api_listen", n)
	}
	// The real trace agents forward to the Jaeger collector the master
	// published, and both are healthy.
	for _, n := range []string{"a", "b"} {
		etcdtest.Eventually(t, 30*time.Second, func() bool {
			return processtest.HTTPGet("http://"+c.ports[n].h2+"/status") != ""
		}, "the trace agent of %s is not healthy", n)
		etcdtest.Eventually(t, 30*time.Second, func() bool {
			b, _ := os.ReadFile(filepath.Join(c.dataDir[n], "stack", "trace-agent", "config.yml"))
			return strings.Contains(string(b), "endpoint: "+c.ports[master].jaegerGRPC)
		}, "the trace agent of %s does not forward to the master's collector %s", n, c.ports[master].jaegerGRPC)
	}
	etcdtest.Eventually(t, 30*time.Second, func() bool { return processtest.HTTPGet("http://"+c.ports[master].h1+"/status") != "" },
		"the master's Jaeger collector is not healthy")
	ids := map[string]string{}
	for name := range want {
		info, _ := cli.ContainerInspect(t.Context(), name)
		ids[name] = info.ID
	}

	// Failover: the Prometheus container moves to the other node.
	agents[master].signal(syscall.SIGTERM)
	if code, err := agents[master].wait(40 * time.Second); err != nil || code != 0 {
		t.Fatalf("master exit %d, %v", code, err)
	}
	if _, err := cli.ContainerInspect(t.Context(), "agent-prometheus-"+master); !cerrdefs.IsNotFound(err) {
		t.Fatalf("the old master's Prometheus container is still there (%v)", err)
	}
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		return query(prom[other], `up{job="node",cluster="e2e"} == 1`) >= 1
	}, "no Prometheus container on the new master %s", other)

	// Restarting the stopped agent adopts its node stack containers.
	again := startAgent(t, endpoint, master, "2s", args[master]...)
	etcdtest.Eventually(t, 30*time.Second, again.ready, "restarted agent not ready")
	for _, name := range []string{"agent-node-exporter-" + master, "agent-vector-" + master} {
		info, err := cli.ContainerInspect(t.Context(), name)
		if err != nil || info.ID != ids[name] {
			t.Errorf("%s was not adopted: id %s before, %s after (%v)", name, ids[name], info.ID, err)
		}
	}
}
