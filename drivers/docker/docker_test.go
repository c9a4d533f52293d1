package docker_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/docker"
	"github.com/agentproj/agent/drivers/docker/dockertest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/freeaddr"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/workload"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// standIn is the Vector stand-in image (Vector cannot run here): busybox
// printing its args and config files.
const standIn = "agentproj/standin:test"

func newDriver(t *testing.T, e *dockertest.Engine) *docker.Driver {
	t.Helper()
	d, err := docker.New(context.Background(), docker.WithHost(e.Host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestNewNamesTheEngineThatDoesNotAnswer(t *testing.T) {
	sock := "unix://" + filepath.Join(t.TempDir(), "docker.sock")
	t.Setenv("DOCKER_HOST", sock)
	_, err := docker.New(context.Background(), docker.WithPingTimeout(2*time.Second))
	if err == nil || !strings.HasPrefix(err.Error(), "docker: no engine answers at "+sock+": ") {
		t.Fatalf("New without an engine = %v; want an error naming %s", err, sock)
	}
}

func vectorStandInSpec(t *testing.T) workload.Spec {
	t.Helper()
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "vector.toml"), []byte("# vector config for the stand-in\n[sources.logs]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return workload.Spec{
		Name:     "vector",
		Image:    standIn,
		Args:     []string{"--config=/etc/vector/vector.toml"},
		Env:      map[string]string{"STANDIN_FOR": "vector", "VECTOR_LOG": "info"},
		Labels:   map[string]string{workload.LabelRole: workload.RoleVector, workload.LabelNode: "n1"},
		Hostname: "n1-vector",
		Mounts: []workload.Mount{
			{Source: conf, Target: "/etc/vector", ReadOnly: true},
			{Source: t.TempDir(), Target: "/var/lib/vector"},
		},
		Restart:     workload.RestartOnFailure,
		Resources:   workload.Resources{NanoCPUs: 500_000_000, MemoryBytes: 64 << 20},
		StopTimeout: 3 * time.Second,
	}
}

func TestEnsureCreatesStandInContainerAsSpecified(t *testing.T) {
	e := dockertest.Start(t)
	dockertest.StandInImage(t, e.Client, standIn)
	d := newDriver(t, e)
	ctx := context.Background()
	spec := vectorStandInSpec(t)

	st, err := d.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != workload.StatusRunning || st.Name != "vector" || st.Driver != "docker" || st.Image != standIn || st.SpecHash != spec.Hash() {
		t.Fatalf("state = %+v", st)
	}
	info, err := e.Client.ContainerInspect(ctx, "vector")
	if err != nil {
		t.Fatal(err)
	}
	hc, cfg := info.HostConfig, info.Config
	if info.Name != "/vector" || cfg.Hostname != "n1-vector" || !hc.NetworkMode.IsHost() || hc.Init == nil || !*hc.Init {
		t.Errorf("name %q hostname %q network %q init %v", info.Name, cfg.Hostname, hc.NetworkMode, hc.Init)
	}
	if hc.RestartPolicy.Name != container.RestartPolicyOnFailure || hc.NanoCPUs != 500_000_000 || hc.Memory != 64<<20 {
		t.Errorf("restart %+v nano_cpus %d memory %d", hc.RestartPolicy, hc.NanoCPUs, hc.Memory)
	}
	if cfg.StopTimeout == nil || *cfg.StopTimeout != 3 {
		t.Errorf("stop timeout = %v, want 3", cfg.StopTimeout)
	}
	for k, v := range map[string]string{
		workload.LabelManaged: "true", workload.LabelSpecHash: spec.Hash(),
		workload.LabelRole: "vector", workload.LabelNode: "n1",
	} {
		if cfg.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cfg.Labels[k], v)
		}
	}
	for _, kv := range []string{"STANDIN_FOR=vector", "VECTOR_LOG=info"} {
		if !slices.Contains(cfg.Env, kv) {
			t.Errorf("env %v lacks %s", cfg.Env, kv)
		}
	}
	mounts := map[string]bool{}
	for _, m := range info.Mounts {
		mounts[m.Source+":"+m.Destination+":"+map[bool]string{true: "rw", false: "ro"}[m.RW]] = true
	}
	for _, m := range spec.Mounts {
		want := m.Source + ":" + m.Target + ":" + map[bool]string{true: "ro", false: "rw"}[m.ReadOnly]
		if !mounts[want] {
			t.Errorf("mount %s missing in %v", want, mounts)
		}
	}
	// The stand-in prints its hostname and the config it was given.
	poll.Until(t, 10*time.Second, func() bool { return strings.Contains(dockertest.Logs(t, e.Client, "vector"), "stand-in ready") },
		"stand-in never ready:\n%s", dockertest.Logs(t, e.Client, "vector"))
	out := dockertest.Logs(t, e.Client, "vector")
	for _, want := range []string{"hostname: n1-vector", "# vector config for the stand-in", "args: --config=/etc/vector/vector.toml"} {
		if !strings.Contains(out, want) {
			t.Errorf("stand-in log lacks %q:\n%s", want, out)
		}
	}

	again, err := d.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != st.ID || !again.Since.Equal(st.Since) {
		t.Fatalf("Ensure twice: %s since %s, then %s since %s; want the same container untouched", st.ID, st.Since, again.ID, again.Since)
	}

	changed := spec.Clone()
	changed.Env["VECTOR_LOG"] = "debug"
	repl, err := d.Ensure(ctx, changed)
	if err != nil {
		t.Fatal(err)
	}
	if repl.ID == st.ID || repl.Status != workload.StatusRunning || repl.SpecHash != changed.Hash() {
		t.Fatalf("after a spec change: %+v; want a new running container", repl)
	}
	if _, err := e.Client.ContainerInspect(ctx, st.ID); err == nil {
		t.Fatalf("old container %s still exists after the replacement", st.ID)
	}

	if err := d.Remove(ctx, "vector"); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Inspect(ctx, "vector"); err != nil || got.Status != workload.StatusMissing {
		t.Fatalf("Inspect after Remove = %+v, %v; want missing", got, err)
	}
	if err := d.Remove(ctx, "vector"); err != nil {
		t.Fatalf("Remove of a missing container: %v", err)
	}

	// An absent image is pulled; the only registry named here is a closed
	// loopback port, so the error must say the image is absent.
	_, err = d.Ensure(ctx, workload.Spec{Name: "absent", Image: "127.0.0.1:1/absent/image:v1"})
	if err == nil || !strings.Contains(err.Error(), `image "127.0.0.1:1/absent/image:v1" is not present and pulling it failed`) {
		t.Fatalf("Ensure with an absent image = %v", err)
	}
}

func TestSupervisorRestartsAdoptsAndRemovesOrphansWithStandIns(t *testing.T) {
	e := dockertest.Start(t)
	dockertest.StandInImage(t, e.Client, standIn)
	ctx := context.Background()
	opts := func(reg prometheus.Registerer, stop bool) workload.SupervisorOptions {
		return workload.SupervisorOptions{
			Owner: "node-stack", Selector: map[string]string{workload.LabelNode: "n1"},
			Interval: 50 * time.Millisecond, BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second,
			StopOnExit: stop, Registerer: reg,
		}
	}
	spec := vectorStandInSpec(t)
	spec.Restart = workload.RestartNo // the engine must not restart it: the supervisor does

	// The first agent.
	d1 := newDriver(t, e)
	reg := prometheus.NewRegistry()
	s1, err := workload.NewSupervisor(d1, opts(reg, false))
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Set([]workload.Spec{spec}); err != nil {
		t.Fatal(err)
	}
	run1, stop1 := context.WithCancel(ctx)
	done1 := make(chan error, 1)
	go func() { done1 <- s1.Run(run1) }()
	t.Cleanup(func() { stop1(); <-done1 })

	running := func(s *workload.Supervisor) (workload.State, bool) {
		states := s.States()
		if len(states) == 1 && states[0].Status == workload.StatusRunning {
			return states[0], true
		}
		return workload.State{}, false
	}
	var first workload.State
	poll.Until(t, 20*time.Second, func() (ok bool) { first, ok = running(s1); return ok }, "vector stand-in never running: %+v", poll.Latest(func() any { return s1.States() }))

	// Killed through the engine: Docker does not restart a container it
	// was told to kill, whatever its policy.
	if err := d1.Signal(ctx, "vector", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var second workload.State
	poll.Until(t, 20*time.Second, func() bool {
		var ok bool
		second, ok = running(s1)
		return ok && second.Since.After(first.Since)
	}, "killed container not restarted: %+v", poll.Latest(func() any { return s1.States() }))
	if second.ID != first.ID || second.Restarts != 1 {
		t.Fatalf("restart: id %s -> %s, restarts %d; want the same container started again, 1 restart", first.ID, second.ID, second.Restarts)
	}
	if n := testutil.ToFloat64(restartsMetric(reg)); n != 1 {
		t.Fatalf("agent_workload_restarts_total{role=vector} = %v, want 1", n)
	}
	stop1()
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	done1 <- nil

	// Left by the first agent, or by others: an orphan of this owner, a
	// workload of another owner, a container the agent never made.
	orphan := spec.Clone()
	orphan.Name, orphan.Labels[workload.LabelOwner], orphan.Labels[workload.LabelRole] = "old-jaeger", "node-stack", workload.RoleJaeger
	if _, err := d1.Ensure(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	foreign := spec.Clone()
	foreign.Name, foreign.Labels[workload.LabelOwner] = "app-1", "apps"
	if _, err := d1.Ensure(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.ContainerCreate(ctx, &container.Config{Image: standIn}, &container.HostConfig{NetworkMode: "host"}, nil, nil, "operators-own"); err != nil {
		t.Fatal(err)
	}
	if _, err := d1.Ensure(ctx, workload.Spec{Name: "operators-own", Image: standIn}); !errors.Is(err, workload.ErrNotManaged) {
		t.Fatalf("Ensure over a container the agent did not make = %v; want ErrNotManaged", err)
	}
	if err := d1.Remove(ctx, "operators-own"); !errors.Is(err, workload.ErrNotManaged) {
		t.Fatalf("Remove of a container the agent did not make = %v; want ErrNotManaged", err)
	}

	byRole, err := d1.List(ctx, map[string]string{workload.LabelRole: workload.RoleVector})
	if err != nil {
		t.Fatal(err)
	}
	if len(byRole) != 2 || byRole[0].Name != "app-1" || byRole[1].Name != "vector" {
		t.Fatalf("List(role=vector) = %v; want app-1 and vector", names(byRole))
	}

	// The next agent: a new driver and supervisor adopt vector and remove
	// the orphan, and nothing else.
	d2 := newDriver(t, e)
	s2, err := workload.NewSupervisor(d2, opts(prometheus.NewRegistry(), true))
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Set([]workload.Spec{spec}); err != nil {
		t.Fatal(err)
	}
	run2, stop2 := context.WithCancel(ctx)
	done2 := make(chan error, 1)
	go func() { done2 <- s2.Run(run2) }()
	t.Cleanup(func() { stop2(); <-done2 })
	var adopted workload.State
	poll.Until(t, 20*time.Second, func() bool {
		st, err := d2.Inspect(ctx, "old-jaeger")
		var ok bool
		adopted, ok = running(s2)
		return err == nil && st.Status == workload.StatusMissing && ok
	}, "the orphan old-jaeger was not removed, or vector not seen running: %+v", poll.Latest(func() any { return s2.States() }))
	if adopted.ID != first.ID || adopted.Restarts != 0 {
		t.Fatalf("the new supervisor reports %+v; want container %s adopted as it runs", s2.States(), first.ID)
	}
	mine, err := d2.List(ctx, s2.Selector())
	if err != nil {
		t.Fatal(err)
	}
	if len(mine) != 1 || mine[0].ID != first.ID {
		t.Fatalf("List(selector) = %v; want only the adopted vector", names(mine))
	}

	// StopOnExit: stepping down removes this supervisor's workloads only.
	stop2()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	done2 <- nil
	if st, _ := d2.Inspect(ctx, "vector"); st.Status != workload.StatusMissing {
		t.Fatalf("vector after Run ended with StopOnExit: %+v", st)
	}
	for _, name := range []string{"app-1", "operators-own"} {
		if st, err := d2.Inspect(ctx, name); err != nil || st.Status == workload.StatusMissing {
			t.Fatalf("%s was touched: %+v, %v", name, st, err)
		}
	}
	if err := d2.Remove(ctx, "app-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.ContainerRemove(ctx, "operators-own", container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}

func names(states []workload.State) []string {
	var out []string
	for _, s := range states {
		out = append(out, s.Name+"("+s.Labels[workload.LabelOwner]+")")
	}
	return out
}

// restartsMetric reads agent_workload_restarts_total{role="vector"} from reg.
func restartsMetric(reg *prometheus.Registry) prometheus.Collector {
	return gathered{reg, "agent_workload_restarts_total"}
}

type gathered struct {
	reg  *prometheus.Registry
	name string
}

func (g gathered) Describe(chan<- *prometheus.Desc) {}
func (g gathered) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.CounterValue, m.GetCounter().GetValue())
		}
	}
}

func TestPrometheusFromLocalBinaryServesOnHostNetwork(t *testing.T) {
	e := dockertest.Start(t)
	start := time.Now()
	dockertest.ImportImage(t, e.Client, "prom/prometheus:v2.42.0", "/usr/bin/prometheus")
	t.Logf("imported prom/prometheus:v2.42.0 from /usr/bin/prometheus in %s", time.Since(start).Round(time.Millisecond))
	d := newDriver(t, e)
	ctx := context.Background()

	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "prometheus.yml"), []byte("global:\n  scrape_interval: 15s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeaddr.Reserve(t)
	spec := workload.Spec{
		Name:  "prometheus",
		Image: "prom/prometheus:v2.42.0",
		Args: []string{"--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
			"--web.listen-address=" + addr, "--web.enable-lifecycle"},
		Labels: map[string]string{workload.LabelRole: workload.RolePrometheus, workload.LabelCluster: "default"},
		Mounts: []workload.Mount{
			{Source: conf, Target: "/etc/prometheus", ReadOnly: true},
			{Source: t.TempDir(), Target: "/prometheus"},
		},
	}
	t.Cleanup(func() {
		if err := d.Remove(context.Background(), "prometheus"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if _, err := d.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	ready := func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	poll.Until(t, 30*time.Second, ready, "containerised Prometheus not ready on %s (host network):\n%s", addr, dockertest.Logs(t, e.Client, "prometheus"))
	t.Logf("prometheus ready %s after the import", time.Since(start).Round(time.Millisecond))
	// Prometheus logs this line once at start and once per reload.
	const loaded = "Completed loading of configuration file"
	// The engine copies a container's output into its log on its own time:
	// poll for the line Prometheus wrote before it became ready.
	poll.Until(t, 10*time.Second, func() bool {
		return strings.Count(dockertest.Logs(t, e.Client, "prometheus"), loaded) == 1
	}, "%q not logged once before SIGHUP:\n%s", loaded, dockertest.Logs(t, e.Client, "prometheus"))
	if err := d.Signal(ctx, "prometheus", syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() bool {
		return strings.Count(dockertest.Logs(t, e.Client, "prometheus"), loaded) == 2
	}, "no config reload seen after SIGHUP")
	if st, _ := d.Inspect(ctx, "prometheus"); st.Status != workload.StatusRunning {
		t.Fatalf("prometheus after SIGHUP: %+v", st)
	}
}

// The case on the real engine: node_exporter on a port that is
// already taken (host network) exits at once with "bind: address already
// in use". Whether Docker restarts it by its policy ("always", the
// default) or the Supervisor does ("no"), the state is crash-looping with
// the restarts and that line from the container's log; once the port is
// free it runs and is reported running.
func TestCrashLoopingContainerShowsItsError(t *testing.T) {
	e := dockertest.Start(t)
	const img = "prom/node-exporter:v1.5.0"
	dockertest.ImportImage(t, e.Client, img, "/usr/bin/prometheus-node-exporter")
	d := newDriver(t, e)
	for _, restart := range []workload.Restart{workload.RestartAlways, workload.RestartNo} {
		t.Run(string(restart), func(t *testing.T) {
			held, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			addr := held.Addr().String()
			spec := workload.Spec{
				Name: "node-exporter-" + string(restart), Image: img, Restart: restart,
				Args:   []string{"--web.listen-address=" + addr, "--no-collector.systemd"},
				Labels: map[string]string{workload.LabelRole: workload.RoleNodeExporter},
			}
			t.Cleanup(func() {
				if err := d.Remove(context.Background(), spec.Name); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			sup, err := workload.NewSupervisor(d, workload.SupervisorOptions{
				Owner: "node-stack", Interval: 50 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 2 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := sup.Set([]workload.Spec{spec}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- sup.Run(ctx) }()
			defer func() { cancel(); <-done }()

			var st workload.State
			poll.Until(t, 60*time.Second, func() bool {
				s := sup.States()
				if len(s) != 1 {
					return false
				}
				st = s[0]
				return st.Status == workload.StatusCrashLooping && st.Restarts >= 2 && strings.Contains(st.LastError, "address already in use")
			}, "node_exporter on a taken port is not reported crash-looping with its error: %+v", &st)
			if !strings.Contains(strings.Join(st.LastOutput, "\n"), "bind: address already in use") {
				t.Errorf("last_output lacks the error from the container's log: %q", st.LastOutput)
			}

			held.Close()
			poll.Until(t, 60*time.Second, func() bool {
				resp, err := http.Get("http://" + addr + "/metrics")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			}, "node_exporter does not serve once the port is free:\n%s", dockertest.Logs(t, e.Client, spec.Name))
			poll.Until(t, 30*time.Second, func() bool {
				s := sup.States()
				return len(s) == 1 && s[0].Status == workload.StatusRunning && s[0].LastError == ""
			}, "node_exporter that stays up is not reported running: %+v", poll.Latest(func() any { return sup.States() }))
		})
	}
}

// Every container logs through json-file with the managed and guid labels
// in each line, where the engine's ContainerLogGlob finds it: how the
// otelcol log shipper reads the agent's containers, and only those.
func TestContainerLogsCarryManagedAndGUIDLabels(t *testing.T) {
	e := dockertest.Start(t)
	dockertest.BusyboxImage(t, e.Client, "registry.local/shop:1", "#!/bin/sh\necho \"order placed by $(hostname)\"\nexec sleep 2147483647\n", nil)
	d := newDriver(t, e)
	ctx := context.Background()
	spec := workload.Spec{Name: "shop-1", Image: "registry.local/shop:1", Hostname: "shop-1", StopTimeout: time.Second,
		Labels: map[string]string{workload.LabelGUID: "shop-1", workload.LabelRole: workload.RoleApp, workload.LabelNode: "n1"}}
	if _, err := d.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Remove(context.Background(), "shop-1") })
	glob, err := d.ContainerLogGlob(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.Client.ContainerInspect(ctx, "shop-1")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := filepath.Match(glob, info.LogPath); !ok || info.HostConfig.LogConfig.Type != "json-file" {
		t.Fatalf("log %s (driver %s) is not matched by %s", info.LogPath, info.HostConfig.LogConfig.Type, glob)
	}
	var line string
	poll.Until(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(info.LogPath)
		line = strings.TrimSpace(string(b))
		return line != ""
	}, "nothing in %s", info.LogPath)
	if !strings.Contains(line, `"log":"order placed by shop-1\n"`) ||
		!strings.Contains(line, `"attrs":{"io.agentproj.guid":"shop-1","io.agentproj.managed":"true","io.agentproj.node":"n1"}`) {
		t.Fatalf("json-file line without the labels: %s", line)
	}
}
