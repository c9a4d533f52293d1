package process_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/freeaddr"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/process"
	"github.com/agentproj/agent/drivers/workload"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const nodeExporter = "/usr/bin/prometheus-node-exporter"

// needBinary fails under CI and skips elsewhere when path is missing.
func needBinary(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (CI=true): apt-get install %s", path, pkg)
	}
	t.Skipf("%s is missing: apt-get install %s", path, pkg)
}

// freeAddr is a loopback port reserved for the test (freeaddr.Reserve).
func freeAddr(t *testing.T) string {
	t.Helper()
	return freeaddr.Reserve(t)
}

func newDriver(t *testing.T, dir string) *process.Driver {
	t.Helper()
	d, err := process.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// cleanupRemove removes the workload when the test ends, so that no process
// outlives it.
func cleanupRemove(t *testing.T, d *process.Driver, name string) {
	t.Cleanup(func() {
		if err := d.Remove(context.Background(), name); err != nil {
			t.Errorf("cleanup: remove %s: %v", name, err)
		}
	})
}

func exporterSpec(addr string, extra ...string) workload.Spec {
	return workload.Spec{
		Name:   "node-exporter",
		Binary: nodeExporter,
		Args:   append([]string{"--web.listen-address=" + addr, "--no-collector.systemd"}, extra...),
		Labels: map[string]string{workload.LabelRole: workload.RoleNodeExporter, workload.LabelNode: "n1"},
	}
}

func serves(addr string) bool {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == 200 && strings.Contains(string(b), "node_exporter_build_info")
}

func pidAlive(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && !strings.HasPrefix(strings.TrimSpace(string(b[i+1:])), "Z")
}

func TestEnsureRunsNodeExporter(t *testing.T) {
	needBinary(t, nodeExporter, "prometheus-node-exporter")
	ctx := context.Background()
	dir := t.TempDir()
	d := newDriver(t, dir)
	cleanupRemove(t, d, "node-exporter")
	addr := freeAddr(t)
	spec := exporterSpec(addr)

	st, err := d.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != workload.StatusRunning || st.Driver != "process" || st.Binary != nodeExporter || st.SpecHash != spec.Hash() {
		t.Fatalf("state after Ensure = %+v", st)
	}
	if st.Labels[workload.LabelManaged] != "true" || st.Labels[workload.LabelRole] != workload.RoleNodeExporter {
		t.Fatalf("labels = %v", st.Labels)
	}
	poll.Until(t, 10*time.Second, func() bool { return serves(addr) }, "node_exporter does not serve /metrics on %s", addr)

	pidFile, err := os.ReadFile(filepath.Join(dir, "node-exporter.pid"))
	if err != nil || strings.TrimSpace(string(pidFile)) != st.ID {
		t.Fatalf("pid file = %q, %v; want %s", pidFile, err, st.ID)
	}
	pgid, err := syscall.Getpgid(atoi(t, st.ID))
	if err != nil || pgid != atoi(t, st.ID) {
		t.Fatalf("process group of %s = %d, %v: want its own", st.ID, pgid, err)
	}

	again, err := d.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != st.ID {
		t.Fatalf("Ensure twice: pid %s, then %s; want the same", st.ID, again.ID)
	}

	// A spec change (other args) replaces the process.
	changed := exporterSpec(addr, "--web.max-requests=7")
	repl, err := d.Ensure(ctx, changed)
	if err != nil {
		t.Fatal(err)
	}
	if repl.ID == st.ID || repl.SpecHash != changed.Hash() {
		t.Fatalf("after a spec change: %+v; want a new pid with hash %s", repl, changed.Hash())
	}
	if pidAlive(st.ID) {
		t.Fatalf("old pid %s still runs after the replacement", st.ID)
	}
	poll.Until(t, 10*time.Second, func() bool { return serves(addr) }, "replaced node_exporter does not serve /metrics")

	if err := d.Remove(ctx, "node-exporter"); err != nil {
		t.Fatal(err)
	}
	if pidAlive(repl.ID) {
		t.Fatalf("pid %s still runs after Remove", repl.ID)
	}
	if got, _ := d.Inspect(ctx, "node-exporter"); got.Status != workload.StatusMissing {
		t.Fatalf("Inspect after Remove = %+v, want missing", got)
	}
	for _, f := range []string{"node-exporter.pid", "node-exporter.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left after Remove: %v", f, err)
		}
	}
	logs, err := os.ReadFile(d.LogPath("node-exporter"))
	if err != nil || !strings.Contains(string(logs), "Listening on") {
		t.Errorf("log file kept after Remove should hold node_exporter's output; got %v:\n%s", err, logs)
	}
	if err := d.Remove(ctx, "node-exporter"); err != nil {
		t.Fatalf("Remove of a missing workload: %v", err)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSupervisorRestartsKilledNodeExporter(t *testing.T) {
	needBinary(t, nodeExporter, "prometheus-node-exporter")
	d := newDriver(t, t.TempDir())
	cleanupRemove(t, d, "node-exporter")
	reg := prometheus.NewRegistry()
	sup, err := workload.NewSupervisor(d, workload.SupervisorOptions{
		Owner: "node-stack", Interval: 50 * time.Millisecond, BackoffMin: 100 * time.Millisecond,
		BackoffMax: time.Second, StopOnExit: true, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	if err := sup.Set([]workload.Spec{exporterSpec(addr)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	var first workload.State
	poll.Until(t, 10*time.Second, func() bool {
		s := sup.States()
		if len(s) == 1 && s[0].Status == workload.StatusRunning {
			first = s[0]
			return true
		}
		return false
	}, "supervisor never reports node-exporter running: %+v", poll.Latest(func() any { return sup.States() }))
	poll.Until(t, 10*time.Second, func() bool { return serves(addr) }, "node_exporter does not serve")
	if first.Labels[workload.LabelOwner] != "node-stack" {
		t.Fatalf("owner label = %q", first.Labels[workload.LabelOwner])
	}

	if err := syscall.Kill(atoi(t, first.ID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var second workload.State
	poll.Until(t, 10*time.Second, func() bool {
		s := sup.States()
		if len(s) == 1 && s[0].Status == workload.StatusRunning && s[0].ID != first.ID {
			second = s[0]
			return true
		}
		return false
	}, "killed node-exporter not restarted: %+v", poll.Latest(func() any { return sup.States() }))
	if second.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", second.Restarts)
	}
	if got := testutil.ToFloat64(mustCounter(t, reg, "agent_workload_restarts_total")); got != 1 {
		t.Errorf("agent_workload_restarts_total = %v, want 1", got)
	}
	poll.Until(t, 10*time.Second, func() bool { return serves(addr) }, "restarted node_exporter does not serve")

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	done <- nil // for the deferred receive
	if pidAlive(second.ID) {
		t.Fatalf("StopOnExit: pid %s still runs after Run returned", second.ID)
	}
}

// mustCounter finds the one series of a metric family in reg.
func mustCounter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, "", nil, nil), prometheus.CounterValue, m.GetCounter().GetValue())
				}
			}
		}
	})
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(chan<- *prometheus.Desc)    {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

func TestNewDriverAdoptsAndSupervisorRemovesOrphans(t *testing.T) {
	needBinary(t, nodeExporter, "prometheus-node-exporter")
	ctx := context.Background()
	dir := t.TempDir()
	owner := map[string]string{workload.LabelOwner: "node-stack"}

	// The "earlier agent": starts the exporter and a workload that the
	// next agent will no longer want.
	d1 := newDriver(t, dir)
	addr := freeAddr(t)
	spec := exporterSpec(addr)
	spec.Labels[workload.LabelOwner] = "node-stack"
	st1, err := d1.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := d1.Ensure(ctx, workload.Spec{Name: "old-sleeper", Binary: "/bin/sleep", Args: []string{"300"}, Labels: owner})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := d1.Ensure(ctx, workload.Spec{Name: "other-owner", Binary: "/bin/sleep", Args: []string{"300"},
		Labels: map[string]string{workload.LabelOwner: "apps"}})
	if err != nil {
		t.Fatal(err)
	}

	// The "next agent": a new driver on the same directory.
	d2 := newDriver(t, dir)
	cleanupRemove(t, d2, "node-exporter")
	cleanupRemove(t, d2, "old-sleeper")
	cleanupRemove(t, d2, "other-owner")
	got, err := d2.Inspect(ctx, "node-exporter")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != workload.StatusRunning || got.ID != st1.ID || got.SpecHash != spec.Hash() {
		t.Fatalf("new driver sees %+v; want running pid %s", got, st1.ID)
	}
	list, err := d2.List(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "node-exporter" || list[1].Name != "old-sleeper" {
		t.Fatalf("List(owner=node-stack) = %+v; want node-exporter and old-sleeper", list)
	}

	sup, err := workload.NewSupervisor(d2, workload.SupervisorOptions{Owner: "node-stack", Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Set([]workload.Spec{exporterSpec(addr)}); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sup.Run(runCtx) }()
	poll.Until(t, 10*time.Second, func() bool {
		s, _ := d2.Inspect(ctx, "old-sleeper")
		return s.Status == workload.StatusMissing && len(sup.States()) == 1
	}, "the supervisor did not remove the orphan old-sleeper, or reports no state")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if pidAlive(orphan.ID) {
		t.Fatalf("orphan pid %s still runs", orphan.ID)
	}
	s := sup.States()
	if len(s) != 1 || s[0].ID != st1.ID || s[0].Restarts != 0 {
		t.Fatalf("after adoption the supervisor reports %+v; want the same pid %s, no restart", s, st1.ID)
	}
	if other, _ := d2.Inspect(ctx, "other-owner"); other.Status != workload.StatusRunning || other.ID != foreign.ID {
		t.Fatalf("another owner's workload was touched: %+v", other)
	}
	// d1 started it without waiting for it to listen: poll, as everywhere.
	poll.Until(t, 10*time.Second, func() bool { return serves(addr) }, "adopted node_exporter does not serve on %s", addr)
	// Without StopOnExit the node stack stays for the next agent.
	if !pidAlive(st1.ID) {
		t.Fatal("node-exporter stopped when Run ended without StopOnExit")
	}
	if err := d2.Remove(ctx, "node-exporter"); err != nil {
		t.Fatal(err)
	}
	if pidAlive(st1.ID) {
		t.Fatalf("adopted pid %s still runs after Remove by the new driver", st1.ID)
	}
}

// A workload whose binary is a script runs as its interpreter
// ("/bin/sh -e <script>"): the next agent adopts it all the same, and does
// not start a second copy beside it.
func TestNewDriverAdoptsAScript(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	script := filepath.Join(t.TempDir(), "wrapper.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh -e\nwhile :; do sleep 1; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := workload.Spec{Name: "wrapper", Binary: script}
	d1 := newDriver(t, dir)
	st1, err := d1.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // the script's process group, should the next driver not adopt it
		if pid, err := strconv.Atoi(st1.ID); err == nil {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	d2 := newDriver(t, dir)
	cleanupRemove(t, d2, "wrapper")
	st2, err := d2.Inspect(ctx, "wrapper")
	if err != nil {
		t.Fatal(err)
	}
	if st2.Status != workload.StatusRunning || st2.ID != st1.ID {
		t.Fatalf("the next driver sees %+v, want pid %s running (adopted)", st2, st1.ID)
	}
	st3, err := d2.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if st3.ID != st1.ID || st3.Restarts != 0 {
		t.Fatalf("Ensure after adoption: %+v, want the adopted pid %s, not a second copy", st3, st1.ID)
	}
	if err := d2.Remove(ctx, "wrapper"); err != nil {
		t.Fatal(err)
	}
	if pidAlive(st1.ID) {
		t.Fatalf("pid %s still runs after Remove", st1.ID)
	}
}

func TestAdoptionRefusesAPidThatIsNotOurs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d1 := newDriver(t, dir)
	st, err := d1.Ensure(ctx, workload.Spec{Name: "sleeper", Binary: "/bin/sleep", Args: []string{"300"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.Remove(ctx, "sleeper"); err != nil {
		t.Fatal(err)
	}
	// Forge what a crashed agent might leave: files naming a live pid that
	// runs another binary (this test process).
	rec := `{"name":"sleeper","binary":"/bin/sleep","pid":` + strconv.Itoa(os.Getpid()) +
		`,"spec_hash":"x","labels":{"io.agentproj.managed":"true"}}`
	if err := os.WriteFile(filepath.Join(dir, "sleeper.json"), []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sleeper.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	d2 := newDriver(t, dir)
	got, err := d2.Inspect(ctx, "sleeper")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != workload.StatusExited || got.ExitCode != -1 {
		t.Fatalf("a pid running another binary was adopted: %+v", got)
	}
	// Remove must not signal it (it is this test).
	if err := d2.Remove(ctx, "sleeper"); err != nil {
		t.Fatal(err)
	}
	if pidAlive(st.ID) {
		t.Fatalf("pid %s still runs", st.ID)
	}
}

func TestExitCodeIsRecordedForTheNextAgent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d1 := newDriver(t, dir)
	cleanupRemove(t, d1, "quitter")
	if _, err := d1.Ensure(ctx, workload.Spec{Name: "quitter", Binary: "/bin/sh", Args: []string{"-c", `echo "bye-$((40+2))"; exit 3`}}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() bool {
		s, _ := d1.Inspect(ctx, "quitter")
		return s.Status == workload.StatusExited && s.ExitCode == 3
	}, "exit code 3 not reported")
	var st workload.State
	poll.Until(t, 5*time.Second, func() bool {
		st, _ = newDriver(t, dir).Inspect(ctx, "quitter")
		return st.Status == workload.StatusExited && st.ExitCode == 3
	}, "a new driver does not see the recorded exit code: %+v", st)
	if logs, _ := os.ReadFile(d1.LogPath("quitter")); !strings.Contains(string(logs), "bye-42") {
		t.Fatalf("stdout not in the log file: %q", logs)
	}
}

func TestRemoveKillsAfterStopTimeout(t *testing.T) {
	ctx := context.Background()
	d := newDriver(t, t.TempDir())
	cleanupRemove(t, d, "stubborn")
	st, err := d.Ensure(ctx, workload.Spec{
		Name: "stubborn", Binary: "/bin/sh",
		Args:        []string{"-c", `trap "" TERM; echo "ready-$((40+2))"; sleep 300`},
		StopTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(d.LogPath("stubborn"))
		return strings.Contains(string(b), "ready-42")
	}, "shell never became ready")
	start := time.Now()
	if err := d.Remove(ctx, "stubborn"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("Remove took %s: it did not wait the stop timeout before SIGKILL", took)
	}
	if pidAlive(st.ID) {
		t.Fatalf("pid %s survives SIGKILL", st.ID)
	}
}

func TestSignalReachesTheProcess(t *testing.T) {
	ctx := context.Background()
	d := newDriver(t, t.TempDir())
	cleanupRemove(t, d, "reloader")
	if _, err := d.Ensure(ctx, workload.Spec{
		Name: "reloader", Binary: "/bin/sh",
		Args: []string{"-c", `trap 'echo "reloaded-$((40+2))"' HUP; echo "ready-$((40+2))"; while :; do sleep 0.05; done`},
	}); err != nil {
		t.Fatal(err)
	}
	logHas := func(s string) func() bool {
		return func() bool {
			b, _ := os.ReadFile(d.LogPath("reloader"))
			return strings.Contains(string(b), s)
		}
	}
	poll.Until(t, 5*time.Second, logHas("ready-42"), "shell never became ready")
	if err := d.Signal(ctx, "reloader", syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, logHas("reloaded-42"), "SIGHUP not seen by the process")
	if err := d.Signal(ctx, "nobody", syscall.SIGHUP); err == nil {
		t.Fatal("Signal to a missing workload: no error")
	}
}

func TestEnsureRejectsBadBinary(t *testing.T) {
	d := newDriver(t, t.TempDir())
	for _, tc := range []struct {
		spec workload.Spec
		want string
	}{
		{workload.Spec{Name: "x"}, `binary: must be set`},
		{workload.Spec{Name: "x", Binary: "/nonexistent/prometheus"}, `"/nonexistent/prometheus" is not an executable file`},
		{workload.Spec{Name: "X_1", Binary: "/bin/sleep"}, `workload name: must be a DNS label`},
	} {
		_, err := d.Ensure(context.Background(), tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Ensure(%+v) = %v; want an error containing %q", tc.spec, err, tc.want)
		}
	}
}

// The case: node_exporter on a port that is already taken exits at
// once with "bind: address already in use". The Supervisor reports it
// crash-looping, with its restarts and that line from its log file, not
// "running"; once the port is free it runs and is reported running again.
func TestCrashLoopingNodeExporterShowsItsError(t *testing.T) {
	needBinary(t, nodeExporter, "prometheus-node-exporter")
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	d := newDriver(t, t.TempDir())
	cleanupRemove(t, d, "node-exporter")
	sup, err := workload.NewSupervisor(d, workload.SupervisorOptions{
		Owner: "node-stack", Interval: 50 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Set([]workload.Spec{exporterSpec(addr)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var st workload.State
	poll.Until(t, 30*time.Second, func() bool {
		s := sup.States()
		if len(s) != 1 {
			return false
		}
		st = s[0]
		return st.Status == workload.StatusCrashLooping && st.Restarts >= 2 && strings.Contains(st.LastError, "address already in use")
	}, "node_exporter on a taken port is not reported crash-looping with its error: %+v", &st)
	if !strings.Contains(strings.Join(st.LastOutput, "\n"), "bind: address already in use") {
		t.Errorf("last_output lacks the error from the log file: %q", st.LastOutput)
	}
	if !strings.Contains(st.LastError, "exit code 1") {
		t.Errorf("last_error lacks the exit code: %q", st.LastError)
	}
	for _, l := range st.LastOutput {
		if strings.HasPrefix(l, "--- agent:") {
			t.Errorf("last_output holds the driver's start marker: %q", l)
		}
	}

	held.Close()
	poll.Until(t, 30*time.Second, func() bool { return serves(addr) }, "node_exporter does not serve once the port is free")
	poll.Until(t, 30*time.Second, func() bool {
		s := sup.States()
		return len(s) == 1 && s[0].Status == workload.StatusRunning && s[0].LastError == ""
	}, "node_exporter that stays up is not reported running: %+v", poll.Latest(func() any { return sup.States() }))
}

// The driver signals only what it started: a record without the managed
// label (not the agent's) is refused.
func TestSignalRefusesAWorkloadNotManaged(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sleeper := exec.Command("/bin/sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	// Until it has exec'd, the child's cmdline is this test binary's.
	poll.Until(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(sleeper.Process.Pid) + "/cmdline")
		return strings.HasPrefix(string(b), "/bin/sleep\x00")
	}, "sleep never started")
	rec := `{"name":"foreign","binary":"/bin/sleep","pid":` + strconv.Itoa(sleeper.Process.Pid) + `,"spec_hash":"x","labels":{}}`
	if err := os.WriteFile(filepath.Join(dir, "foreign.json"), []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, dir)
	if err := d.Signal(ctx, "foreign", syscall.SIGTERM); !errors.Is(err, workload.ErrNotManaged) {
		t.Fatalf("Signal of a process without the managed label = %v; want ErrNotManaged", err)
	}
	if err := d.Remove(ctx, "foreign"); !errors.Is(err, workload.ErrNotManaged) {
		t.Fatalf("Remove of a process without the managed label = %v; want ErrNotManaged", err)
	}
	if !pidAlive(strconv.Itoa(sleeper.Process.Pid)) {
		t.Fatal("the foreign process was signalled")
	}
}
