package main

// Helpers for end-to-end tests that run real processes: the agent binary
// built from this package, and the Debian etcd. Every process listens on
// 127.0.0.1 only and is killed when its test ends.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

func requireBinary(t testing.TB, name, pkg string) string {
	t.Helper()
	return etcdtest.RequireBinary(t, name, pkg)
}

// agentBuild is one build of the agent, made once per test run.
type agentBuild struct {
	flags, env []string
	once       sync.Once
	bin        string
	err        error
}

// Both builds are static (CGO_ENABLED=0) as the Makefile makes them; they
// share every compiled package but the Kubernetes ones.
var (
	// hostAgent is the host build, the one `make build` makes.
	hostAgent = &agentBuild{env: []string{"CGO_ENABLED=0"}}
	// kubeAgent is the build with Kubernetes mode (`make
	// build-kubernetes`), the image's binary.
	kubeAgent = &agentBuild{flags: []string{"-tags", "kubernetes"}, env: []string{"CGO_ENABLED=0"}}
)

// agentBinary builds the host agent once per test run.
func agentBinary(t testing.TB) string {
	t.Helper()
	return hostAgent.build(t)
}

// kubeAgentBinary builds the agent with Kubernetes mode once per test run.
func kubeAgentBinary(t testing.TB) string {
	t.Helper()
	return kubeAgent.build(t)
}

func (b *agentBuild) build(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "agent-e2e-bin")
		if err != nil {
			b.err = err
			return
		}
		b.bin = filepath.Join(dir, "agent")
		args := append(append([]string{"build"}, b.flags...), "-o", b.bin, ".")
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("%s go %s: %w\n%s", strings.Join(b.env, " "), strings.Join(args, " "), err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// proc is a process started by a test.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(t testing.TB, name, bin string, args ...string) *proc {
	t.Helper()
	log := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	f.Close()
	p := &proc{t: t, name: name, cmd: cmd, log: log, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("--- log of %s:\n%s", name, b)
		}
	})
	return p
}

// exited reports whether process pid has exited: it is gone, or a zombie
// its parent has not reaped yet.
func exited(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // reaped meanwhile
	}
	i := strings.LastIndexByte(string(b), ')') // the command name may hold spaces and parentheses
	return i > 0 && len(b) > i+2 && b[i+2] == 'Z'
}

func (p *proc) signal(sig syscall.Signal) { _ = syscall.Kill(-p.cmd.Process.Pid, sig) }

// kill sends SIGKILL to the process group and waits for the process.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		return -1, fmt.Errorf("%s still running after %s", p.name, timeout)
	}
}

func startEtcd(t testing.TB) string { return etcdtest.StartProcess(t) }

func etcdClient(t testing.TB, endpoint string) *clientv3.Client {
	return etcdtest.NewClient(t, endpoint)
}

// agentProc is one agent process of a test cluster.
type agentProc struct {
	*proc
	node, api string
}

// startAgent runs an agent with the none driver (it starts no workloads)
// and a fresh data dir; extra flags override.
func startAgent(t testing.TB, endpoint, node, ttl string, extra ...string) *agentProc {
	t.Helper()
	return startAgentIn(t, endpoint, node, ttl, t.TempDir(), extra...)
}

func startAgentIn(t testing.TB, endpoint, node, ttl, dataDir string, extra ...string) *agentProc {
	t.Helper()
	return startBuildIn(t, agentBinary(t), endpoint, node, ttl, dataDir, extra...)
}

// startKubeAgent starts the agent built with Kubernetes mode.
func startKubeAgent(t testing.TB, endpoint, node, ttl string, extra ...string) *agentProc {
	t.Helper()
	return startBuildIn(t, kubeAgentBinary(t), endpoint, node, ttl, t.TempDir(), extra...)
}

func startBuildIn(t testing.TB, bin, endpoint, node, ttl, dataDir string, extra ...string) *agentProc {
	t.Helper()
	api := etcdtest.FreeAddr(t)
	args := append([]string{"join", "--etcd", endpoint, "--node", node, "--cluster", "e2e",
		"--listen", api, "--data-dir", dataDir, "--ttl", ttl, "--driver", "none"}, extra...)
	return &agentProc{proc: startProc(t, "agent-"+node, bin, args...), node: node, api: api}
}

func (a *agentProc) ready() bool {
	resp, err := http.Get("http://" + a.api + "/-/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// masterSince watches etcd until a member other than not reports itself
// master, and returns its name and the moment the watch saw it.
func masterSince(ctx context.Context, cli *clientv3.Client, keys etcd.Keys, not string) (string, time.Time, error) {
	reg := etcd.Registry{KV: cli, Keys: keys}
	view, err := reg.View(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	if m := view.Master; m != nil && m.Node != not && m.Since != nil {
		return m.Node, time.Now(), nil
	}
	wch := cli.Watch(ctx, keys.Members(), clientv3.WithPrefix(), clientv3.WithRev(view.Revision+1))
	for wr := range wch {
		for _, ev := range wr.Events {
			var m etcd.Member
			if ev.Type == clientv3.EventTypePut && json.Unmarshal(ev.Kv.Value, &m) == nil && m.Node != not && m.MasterSince != nil {
				return m.Node, time.Now(), nil
			}
		}
	}
	return "", time.Time{}, fmt.Errorf("no new master: %w", ctx.Err())
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// startNodeExporter runs the Debian node_exporter on a free loopback port.
func startNodeExporter(t testing.TB) string {
	t.Helper()
	bin := requireBinary(t, "prometheus-node-exporter", "prometheus-node-exporter")
	addr := etcdtest.FreeAddr(t)
	startProc(t, "node-exporter-"+addr, bin, "--web.listen-address="+addr, "--no-collector.systemd")
	etcdtest.Eventually(t, 10*time.Second, func() bool { return httpCode("http://"+addr+"/metrics") == 200 }, "node_exporter at %s not up", addr)
	return addr
}

// startPrometheus runs the Debian Prometheus with config on a free loopback
// port and returns its base URL.
func startPrometheus(t testing.TB, name, config string, extra ...string) string {
	t.Helper()
	bin := requireBinary(t, "prometheus", "prometheus")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := etcdtest.FreeAddr(t)
	args := append([]string{"--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr, "--web.enable-lifecycle"}, extra...)
	startProc(t, name, bin, args...)
	url := "http://" + addr
	etcdtest.Eventually(t, 15*time.Second, func() bool { return httpCode(url+"/-/ready") == 200 }, "%s not ready", name)
	return url
}

// promTarget is one active target in Prometheus' /api/v1/targets.
type promTarget struct {
	Labels    map[string]string `json:"labels"`
	Health    string            `json:"health"`
	ScrapeURL string            `json:"scrapeUrl"`
}

func activeTargets(t testing.TB, promURL string) []promTarget {
	t.Helper()
	resp, err := http.Get(promURL + "/api/v1/targets?state=active")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			ActiveTargets []promTarget `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil
	}
	return body.Data.ActiveTargets
}
