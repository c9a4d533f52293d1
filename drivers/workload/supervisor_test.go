package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeDriver is an in-memory fake for the Supervisor's logic (backoff,
// errors, selectors). The Supervisor runs against the real drivers in the
// tests of drivers/process and drivers/docker.
type fakeDriver struct {
	mu        sync.Mutex
	w         map[string]State
	starts    map[string][]time.Time
	crash     bool    // every started workload is found exited at the next Inspect
	ensureErr []error // returned by the next Ensure calls, in order
	ids       int
	output    []string // what Tail returns for every workload
	tails     int      // Tail calls
}

func newFake() *fakeDriver {
	return &fakeDriver{w: map[string]State{}, starts: map[string][]time.Time{}}
}

func (f *fakeDriver) Name() string { return "fake" }

func (f *fakeDriver) Ensure(_ context.Context, spec Spec) (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ensureErr) > 0 {
		err := f.ensureErr[0]
		f.ensureErr = f.ensureErr[1:]
		return State{}, err
	}
	st, ok := f.w[spec.Name]
	if ok && st.Running() && st.SpecHash == spec.Hash() {
		return st, nil
	}
	if !ok || st.SpecHash != spec.Hash() {
		f.ids++
		st = State{Name: spec.Name, Driver: "fake", ID: fmt.Sprint(f.ids), SpecHash: spec.Hash(), Labels: DriverLabels(spec.Labels, spec.Hash())}
	}
	st.Status, st.Since = StatusRunning, time.Now()
	f.w[spec.Name] = st
	f.starts[spec.Name] = append(f.starts[spec.Name], time.Now())
	return st, nil
}

func (f *fakeDriver) Inspect(_ context.Context, name string) (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.w[name]
	if !ok {
		return State{Name: name, Driver: "fake", Status: StatusMissing}, nil
	}
	if f.crash && st.Status == StatusRunning {
		st.Status, st.ExitCode = StatusExited, 1
		f.w[name] = st
	}
	return st, nil
}

func (f *fakeDriver) Remove(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.w, name)
	return nil
}

func (f *fakeDriver) List(_ context.Context, selector map[string]string) ([]State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []State
	for _, st := range f.w {
		if IsManaged(st.Labels) && Matches(st.Labels, selector) {
			out = append(out, st)
		}
	}
	return out, nil
}

func (f *fakeDriver) put(st State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.w[st.Name] = st
}

func (f *fakeDriver) has(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.w[name]
	return ok
}

func (f *fakeDriver) startTimes(name string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.starts[name]...)
}

func (f *fakeDriver) Tail(_ context.Context, _ string, lines int) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tails++
	out := f.output
	if len(out) > lines {
		out = out[len(out)-lines:]
	}
	return append([]string(nil), out...), nil
}

func (f *fakeDriver) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

var (
	_ Driver       = (*fakeDriver)(nil)
	_ OutputTailer = (*fakeDriver)(nil)
)

// run runs s until the test ends and returns a stop function that returns
// Run's error.
func run(t *testing.T, s *Supervisor) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func spec(name, role string) Spec {
	return Spec{Name: name, Image: "img", Labels: map[string]string{LabelRole: role}}
}

func TestNewSupervisorNeedsAnOwner(t *testing.T) {
	if _, err := NewSupervisor(newFake(), SupervisorOptions{}); err == nil || !strings.Contains(err.Error(), `supervisor owner: must be a DNS label, got ""`) {
		t.Fatalf("NewSupervisor without owner = %v", err)
	}
}

func TestSetRefusesABadSetWholeAndKeepsThePrevious(t *testing.T) {
	s, err := NewSupervisor(newFake(), SupervisorOptions{Owner: "node-stack", Selector: map[string]string{LabelNode: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{spec("a", "app")}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		specs []Spec
		want  string
	}{
		{[]Spec{spec("b", "app"), spec("B", "app")}, `got "B"`},
		{[]Spec{spec("b", "app"), spec("b", "app")}, `workload "b": name: desired twice`},
		{[]Spec{{Name: "b", Labels: map[string]string{LabelNode: "n2"}}}, `workload "b": labels.io.agentproj.node: the supervisor's selector says "n1", got "n2"`},
	} {
		if err := s.Set(tc.specs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Set = %v; want an error containing %q", err, tc.want)
		}
	}
	got := s.snapshot()
	if len(got) != 1 || got["a"].Labels[LabelOwner] != "node-stack" || got["a"].Labels[LabelNode] != "n1" {
		t.Fatalf("desired set after refused sets = %+v; want only a, with the selector labels", got)
	}
}

func TestBackoffDoublesUpToTheCap(t *testing.T) {
	s, err := NewSupervisor(newFake(), SupervisorOptions{Owner: "x", BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{0, 100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := s.backoff(i + 1); got != w*time.Millisecond {
			t.Errorf("backoff(%d) = %s, want %s", i+1, got, w*time.Millisecond)
		}
	}
}

func TestCrashLoopIsSpacedByBackoff(t *testing.T) {
	f := newFake()
	f.crash = true
	reg := prometheus.NewRegistry()
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "node-stack", Interval: 5 * time.Millisecond,
		BackoffMin: 40 * time.Millisecond, BackoffMax: 160 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{spec("vector", RoleVector)}); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	poll.Until(t, 10*time.Second, func() bool { return len(f.startTimes("vector")) >= 7 }, "fewer than 7 starts")
	starts := f.startTimes("vector")
	// starts[0] creates; starts[n] is the n-th restart, which waits
	// backoff(n) after the one before.
	for n := 2; n < len(starts); n++ {
		if gap, min := starts[n].Sub(starts[n-1]), s.backoff(n); gap < min {
			t.Errorf("restart %d came %s after the one before; backoff says at least %s", n, gap, min)
		}
	}
	// The cap, read from the wait the Supervisor announces rather than from
	// gaps between starts, which a loaded machine only makes longer.
	announced := regexp.MustCompile(`next start in (\S+) \(backoff after (\d+) consecutive`)
	poll.Until(t, 10*time.Second, func() bool {
		st := s.States()
		if len(st) != 1 {
			return false
		}
		m := announced.FindStringSubmatch(st[0].LastError)
		if m == nil {
			return false
		}
		if wait, err := time.ParseDuration(m[1]); err != nil || wait > 160*time.Millisecond {
			t.Fatalf("announced wait %q (%v): the cap is 160ms", m[1], err)
		}
		n, _ := strconv.Atoi(m[2])
		return n >= 6
	}, "no backoff announced after 6 restarts: %+v", poll.Latest(func() any { return s.States() }))
	if n := testutil.ToFloat64(s.metrics.restarts.WithLabelValues(RoleVector)); n < 6 {
		t.Errorf("restarts{role=vector} = %v, want >= 6", n)
	}
	poll.Until(t, 5*time.Second, func() bool {
		st := s.States()
		return len(st) == 1 && st[0].Restarts >= 6
	}, "States does not count the restarts: %+v", poll.Latest(func() any { return s.States() }))
}

func TestEnsureErrorsAreCountedByRoleAndRetried(t *testing.T) {
	f := newFake()
	f.ensureErr = []error{errors.New("engine busy"), errors.New("engine busy")}
	reg := prometheus.NewRegistry()
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "cluster-stack", Interval: 5 * time.Millisecond,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{spec("prometheus", RolePrometheus)}); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	poll.Until(t, 5*time.Second, func() bool {
		st := s.States()
		return len(st) == 1 && st[0].Status == StatusRunning && st[0].LastError == ""
	}, "never running after two errors: %+v", poll.Latest(func() any { return s.States() }))
	const want = `
# HELP agent_workload_ensure_errors_total Failed attempts to make a workload match its spec, by role.
# TYPE agent_workload_ensure_errors_total counter
agent_workload_ensure_errors_total{owner="cluster-stack",role="prometheus"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "agent_workload_ensure_errors_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(s.metrics.restarts.WithLabelValues(RolePrometheus)); n != 0 {
		t.Fatalf("restarts = %v: a first start that failed is no restart", n)
	}
}

func TestLastErrorShowsInStates(t *testing.T) {
	f := newFake()
	f.ensureErr = []error{errors.New("image absent")}
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "apps", Interval: time.Hour, BackoffMin: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{spec("g1", RoleApp)}); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	var st []State
	poll.Until(t, 5*time.Second, func() bool {
		st = s.States()
		return len(st) == 1 && st[0].LastError == "image absent" && st[0].Status == StatusMissing
	}, "error not in States: %+v", &st)
	// The nudge of Set reconciles again at once; the backoff holds the
	// next attempt and says so.
	if err := s.Set([]Spec{spec("g1", RoleApp)}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() bool {
		st := s.States()
		return len(st) == 1 && strings.HasPrefix(st[0].LastError, "image absent; next start in ")
	}, "backoff not in States: %+v", &st)
	if f.has("g1") {
		t.Fatal("started during the backoff")
	}
}

// A Supervisor run before its desired set is known removes nothing: the
// workload an earlier agent left running is adopted once the set comes,
// not taken for an orphan meanwhile (synctest: Run has done all it would
// before the Set).
func TestRunWaitsForTheDesiredSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		sp := spec("vector", RoleVector)
		s, err := NewSupervisor(f, SupervisorOptions{Owner: "node-stack", Interval: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		// What the earlier agent's Supervisor (same owner) started.
		earlier, err := NewSupervisor(newFake(), SupervisorOptions{Owner: "node-stack"})
		if err != nil {
			t.Fatal(err)
		}
		if err := earlier.Set([]Spec{sp}); err != nil {
			t.Fatal(err)
		}
		labelled := earlier.snapshot()["vector"]
		before, err := f.Ensure(context.Background(), labelled)
		if err != nil {
			t.Fatal(err)
		}

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		synctest.Wait()
		if n := testutil.ToFloat64(s.metrics.reconciles); n != 0 || !f.has("vector") {
			t.Fatalf("before any Set: %v reconciles, vector still there: %v; want none, and it there", n, f.has("vector"))
		}

		if err := s.Set([]Spec{sp}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		st := s.States()
		if len(st) != 1 || st[0].ID != before.ID || len(f.startTimes("vector")) != 1 {
			t.Fatalf("after Set: %+v, %d starts; want %s adopted, started once", st, len(f.startTimes("vector")), before.ID)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestOrphansAreRemovedByOwnerOnly(t *testing.T) {
	f := newFake()
	mk := func(name, owner, node string) State {
		return State{Name: name, Status: StatusRunning, Labels: DriverLabels(map[string]string{LabelOwner: owner, LabelNode: node}, "h")}
	}
	f.put(mk("old", "node-stack", "n1"))
	f.put(mk("theirs", "cluster-stack", "n1"))
	f.put(mk("other-node", "node-stack", "n2"))
	f.put(State{Name: "unmanaged", Status: StatusRunning, Labels: map[string]string{LabelOwner: "node-stack", LabelNode: "n1"}})
	reg := prometheus.NewRegistry()
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "node-stack", Selector: map[string]string{LabelNode: "n1"}, Interval: 5 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{spec("vector", RoleVector)}); err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	poll.Until(t, 5*time.Second, func() bool { return !f.has("old") && f.has("vector") }, "orphan not removed or vector not started")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"theirs", "other-node", "unmanaged", "vector"} {
		if !f.has(name) {
			t.Errorf("%s removed; only the owner's orphans may go, and without StopOnExit the desired ones stay", name)
		}
	}
	if n := testutil.ToFloat64(s.metrics.removed); n != 1 {
		t.Errorf("orphans removed = %v, want 1", n)
	}
}

func TestStopOnExitRemovesTheOwnersWorkloads(t *testing.T) {
	f := newFake()
	f.put(State{Name: "theirs", Status: StatusRunning, Labels: DriverLabels(map[string]string{LabelOwner: "node-stack"}, "h")})
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "cluster-stack", Interval: 5 * time.Millisecond, StopOnExit: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{spec("prometheus", RolePrometheus), spec("jaeger", RoleJaeger)}); err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	poll.Until(t, 5*time.Second, func() bool { return f.has("prometheus") && f.has("jaeger") }, "not started")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if f.has("prometheus") || f.has("jaeger") || !f.has("theirs") {
		t.Fatalf("after stepping down: %v; want only theirs", slicesKeys(f))
	}
	if st := s.States(); len(st) != 0 {
		t.Fatalf("States after stop = %+v", st)
	}
}

func slicesKeys(f *fakeDriver) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range maps.Keys(f.w) {
		out = append(out, k)
	}
	return out
}

func TestTwoOwnersShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, owner := range []string{"node-stack", "cluster-stack"} {
		if _, err := NewSupervisor(newFake(), SupervisorOptions{Owner: owner, Registerer: reg}); err != nil {
			t.Fatalf("owner %s: %v", owner, err)
		}
	}
	if _, err := NewSupervisor(newFake(), SupervisorOptions{Owner: "node-stack", Registerer: reg}); err == nil {
		t.Fatal("a second supervisor of the same owner registered its metrics twice without error")
	}
}

func TestASpecChangeIsNotHeldByTheOldBackoff(t *testing.T) {
	f := newFake()
	f.ensureErr = []error{errors.New("image absent")}
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "apps", Interval: time.Hour, BackoffMin: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	bad := spec("g1", RoleApp)
	if err := s.Set([]Spec{bad}); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	var st []State
	poll.Until(t, 5*time.Second, func() bool {
		st = s.States()
		return len(st) == 1 && st[0].LastError == "image absent"
	}, "error not in States: %+v", &st)
	fixed := bad.Clone()
	fixed.Image = "img:fixed"
	if err := s.Set([]Spec{fixed}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() bool {
		st = s.States()
		return len(st) == 1 && st[0].Status == StatusRunning
	}, "the fixed spec waits for the old backoff: %+v", &st)
}

// A workload that exits at once looks "running" for the instant after
// each restart; over two exits in a row it is crash-looping, with its
// restarts, its exit code and why, until it has run for BackoffMax.
func TestCrashLoopingStateSaysWhyAndHowOften(t *testing.T) {
	f := newFake()
	f.crash = true
	f.output = []string{"starting", `level=error err="listen tcp 127.0.0.1:9100: bind: address already in use"`, "See you next time!"}
	reg := prometheus.NewRegistry()
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "node-stack", Interval: 5 * time.Millisecond,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 300 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{spec("node-exporter", RoleNodeExporter)}); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	var st State
	poll.Until(t, 10*time.Second, func() bool {
		all := s.States()
		if len(all) != 1 {
			return false
		}
		st = all[0]
		return st.Status == StatusCrashLooping && st.Restarts >= 2
	}, "never crash-looping with 2 restarts: %+v", &st)
	if !strings.Contains(st.LastError, "last with exit code 1: "+f.output[1]) || !strings.HasPrefix(st.LastError, "exited ") {
		t.Errorf("last_error = %q; want the exit code and the line with the error", st.LastError)
	}
	if len(st.LastOutput) != 3 || st.LastOutput[1] != f.output[1] {
		t.Errorf("last_output = %q; want the workload's last lines", st.LastOutput)
	}
	if st.Running() {
		t.Error("a crash-looping workload reports Running")
	}
	poll.Until(t, 5*time.Second, func() bool { return testutil.ToFloat64(s.metrics.crashLooping) == 1 }, "agent_workloads_crash_looping is not 1")
	// The output is read once per exit, not once per reconcile.
	f.mu.Lock()
	tails, starts := f.tails, len(f.starts["node-exporter"])
	f.mu.Unlock()
	if tails > starts {
		t.Errorf("Tail called %d times for %d starts", tails, starts)
	}

	// Fixed: it stays up, and after BackoffMax of running it is forgiven.
	f.set(func() { f.crash = false })
	poll.Until(t, 10*time.Second, func() bool {
		all := s.States()
		return len(all) == 1 && all[0].Status == StatusRunning && all[0].LastError == "" && all[0].LastOutput == nil
	}, "a workload that stays up is still reported crash-looping: %+v", poll.Latest(func() any { return s.States() }))
	if got := s.States()[0].Restarts; got < 2 {
		t.Errorf("restarts after recovery = %d; the count stays", got)
	}
}

// Docker restarts a container by its own policy without the Supervisor:
// the runtime's restart count makes a crash loop too, even on first sight
// (an agent restarted in the middle of one).
func TestRuntimeRestartsMakeACrashLoop(t *testing.T) {
	f := newFake()
	f.output = []string{"panic: config missing"}
	sp := spec("vector", RoleVector)
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "node-stack", Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{sp}); err != nil {
		t.Fatal(err)
	}
	desired := s.snapshot()["vector"]
	f.put(State{Name: "vector", Driver: "fake", ID: "c1", Status: StatusRestarting, ExitCode: 2, Restarts: 3,
		SpecHash: desired.Hash(), Labels: DriverLabels(desired.Labels, desired.Hash())})
	run(t, s)
	var st State
	poll.Until(t, 5*time.Second, func() bool {
		all := s.States()
		if len(all) != 1 {
			return false
		}
		st = all[0]
		return st.Status == StatusCrashLooping && st.Restarts == 3
	}, "the runtime's restarts do not make a crash loop: %+v", &st)
	if st.LastError != "exited 3 times in a row, last with exit code 2: panic: config missing" {
		t.Errorf("last_error = %q", st.LastError)
	}
	if starts := f.startTimes("vector"); len(starts) != 0 {
		t.Errorf("the Supervisor started a container the runtime is restarting: %d starts", len(starts))
	}
	f.put(State{Name: "vector", Driver: "fake", ID: "c1", Status: StatusRestarting, ExitCode: 2, Restarts: 5,
		SpecHash: desired.Hash(), Labels: DriverLabels(desired.Labels, desired.Hash())})
	poll.Until(t, 5*time.Second, func() bool {
		all := s.States()
		return len(all) == 1 && all[0].Restarts == 5
	}, "two more runtime restarts not counted: %+v", poll.Latest(func() any { return s.States() }))
}

// signalFake is the in-memory fake driver that also takes signals.
type signalFake struct {
	*fakeDriver
	mu   sync.Mutex
	sent []string
}

func (f *signalFake) Signal(_ context.Context, name string, sig syscall.Signal) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, name+":"+sig.String())
	return nil
}

func (f *signalFake) signals() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

// pending reports whether a reload of name is still asked for.
func (s *Supervisor) pending(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.reloads[name]
	return ok
}

// Reload signals only a running workload of the Supervisor's own, with the
// desired spec, started before the config changed; never anything that
// merely bears the name, and nothing through a driver that cannot signal.
// The passes are run by hand (reconcile), as Run would.
func TestReloadSignalsOnlyTheSupervisorsOwnRunningWorkload(t *testing.T) {
	ctx := context.Background()
	f := &signalFake{fakeDriver: newFake()}
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "cluster-stack", Selector: map[string]string{LabelNode: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{spec("prometheus", RolePrometheus)}); err != nil {
		t.Fatal(err)
	}
	desired := s.snapshot()["prometheus"]
	hash := desired.Hash()
	started := time.Now().Add(-time.Minute)
	changed := time.Now()
	ours := State{Name: "prometheus", Status: StatusRunning, Since: started, SpecHash: hash, Labels: DriverLabels(desired.Labels, hash)}
	for _, tc := range []struct {
		name  string
		state State
	}{
		{"not the agent's (no labels)", State{Name: "prometheus", Status: StatusRunning, Since: started, SpecHash: hash}},
		{"another owner's", func() State {
			st := ours
			st.Labels = DriverLabels(map[string]string{LabelOwner: "node-stack", LabelNode: "n1"}, hash)
			return st
		}()},
		{"another spec (about to be replaced)", func() State { st := ours; st.SpecHash = "old"; return st }()},
		{"exited", func() State { st := ours; st.Status = StatusExited; return st }()},
		{"started after the change", func() State { st := ours; st.Since = changed.Add(time.Millisecond); return st }()},
		{"unmanaged (none driver)", State{Name: "prometheus", Status: StatusUnmanaged}},
	} {
		f.put(tc.state)
		if err := s.Reload("prometheus", syscall.SIGHUP, changed); err != nil {
			t.Fatalf("%s: Reload = %v", tc.name, err)
		}
		s.reconcile(ctx)
		if s.pending("prometheus") {
			t.Errorf("%s: the reload is still pending; its next start reads the config, or it is not ours", tc.name)
		}
	}
	if got := f.signals(); len(got) != 0 {
		t.Fatalf("signals sent: %v", got)
	}
	f.put(ours)
	if err := s.Reload("prometheus", syscall.SIGHUP, changed); err != nil {
		t.Fatal(err)
	}
	s.reconcile(ctx)
	if got := f.signals(); len(got) != 1 || got[0] != "prometheus:hangup" || s.pending("prometheus") {
		t.Fatalf("signals sent to the Supervisor's own running workload: %v (pending: %v)", got, s.pending("prometheus"))
	}
	if err := s.Reload("jaeger", syscall.SIGHUP, changed); err == nil || !strings.Contains(err.Error(), `reload "jaeger": not a desired workload`) {
		t.Fatalf("Reload of a workload not desired = %v", err)
	}

	// A driver that cannot signal (none) reloads nothing.
	plain := newFake()
	s2, err := NewSupervisor(plain, SupervisorOptions{Owner: "cluster-stack", Selector: map[string]string{LabelNode: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Set([]Spec{spec("prometheus", RolePrometheus)}); err != nil {
		t.Fatal(err)
	}
	plain.put(ours)
	if err := s2.Reload("prometheus", syscall.SIGHUP, changed); err != nil {
		t.Fatal(err)
	}
	s2.reconcile(ctx)
	if s2.pending("prometheus") {
		t.Fatal("a reload through a driver that cannot signal is still pending")
	}
}

// readiness is a readiness probe a test turns on.
type readiness struct {
	ready atomic.Bool
	asked atomic.Int32
	url   string
}

// probedTraceAgent is a Supervisor of a signalling fake driver whose
// desired set is a trace agent with a readiness probe, not ready yet.
func probedTraceAgent(t *testing.T, opts SupervisorOptions) (*Supervisor, *signalFake, *readiness) {
	t.Helper()
	f := &signalFake{fakeDriver: newFake()}
	s, err := NewSupervisor(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	probe := newReadiness(t)
	sp := spec("trace-agent", RoleTraceAgent)
	sp.Ready = probe.url
	if err := s.Set([]Spec{sp}); err != nil {
		t.Fatal(err)
	}
	return s, f, probe
}

func newReadiness(t *testing.T) *readiness {
	r := &readiness{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r.asked.Add(1)
		if !r.ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/ready"
	return r
}

// A workload with a readiness probe is signalled only once the probe has
// answered at a pass before: a signal that lands before a program has
// installed its handler kills it (otelcol installs its SIGHUP handler only
// after its pipelines started). The reload waits, it is not lost.
func TestReloadWaitsForTheReadinessProbe(t *testing.T) {
	ctx := context.Background()
	s, f, probe := probedTraceAgent(t, SupervisorOptions{Owner: "node-stack"})
	s.reconcile(ctx) // started
	if err := s.Reload("trace-agent", syscall.SIGHUP, time.Now()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if wait := s.reconcile(ctx); wait != DefaultSupervisorOptions.ReloadPoll {
			t.Fatalf("a waiting reload asks for the next pass in %s; want ReloadPoll", wait)
		}
	}
	if got := f.signals(); len(got) != 0 || !s.pending("trace-agent") || probe.asked.Load() != 3 {
		t.Fatalf("signalled before ready: %v (pending %v, probes %d)", got, s.pending("trace-agent"), probe.asked.Load())
	}
	probe.ready.Store(true)
	s.reconcile(ctx) // ready now: the program installs its handler at once
	if got := f.signals(); len(got) != 0 {
		t.Fatalf("signalled at the pass that first saw it ready: %v", got)
	}
	s.reconcile(ctx)
	if got := f.signals(); len(got) != 1 || s.pending("trace-agent") {
		t.Fatalf("signals once ready: %v (pending %v)", got, s.pending("trace-agent"))
	}
	// Ready stays ready for the same instance: the next reload goes at once.
	if err := s.Reload("trace-agent", syscall.SIGHUP, time.Now()); err != nil {
		t.Fatal(err)
	}
	s.reconcile(ctx)
	if got := f.signals(); len(got) != 2 {
		t.Fatalf("signals after a second reload of a ready workload: %v", got)
	}
	if starts := f.startTimes("trace-agent"); len(starts) != 1 {
		t.Fatalf("started %d times; a reload signals, it does not restart", len(starts))
	}
}

// A workload that does not become ready within ReadyTimeout is restarted
// instead of signalled: its new start reads the new config.
func TestReloadRestartsAWorkloadThatNeverGetsReady(t *testing.T) {
	ctx := context.Background()
	s, f, _ := probedTraceAgent(t, SupervisorOptions{Owner: "node-stack", ReadyTimeout: 50 * time.Millisecond, ReloadPoll: 10 * time.Millisecond})
	s.reconcile(ctx)
	if err := s.Reload("trace-agent", syscall.SIGHUP, time.Now()); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() bool { s.reconcile(ctx); return len(f.startTimes("trace-agent")) == 2 },
		"not restarted after ReadyTimeout")
	if got := f.signals(); len(got) != 0 || s.pending("trace-agent") {
		t.Fatalf("signals: %v (pending %v); want a restart instead", got, s.pending("trace-agent"))
	}
	if st := s.States(); len(st) != 1 || st[0].Restarts != 0 {
		t.Fatalf("a restart for a reload counts as a crash: %+v", st)
	}
}

func TestLastLinesDropsBlanksAndCutsLongLines(t *testing.T) {
	long := strings.Repeat("é", MaxOutputLine)
	got := LastLines("a\n\n  \nb\r\n"+long+"\n\x1b[31mc\td\n", 3)
	if len(got) != 3 || got[0] != "b" || got[2] != "[31mc d" || len(got[1]) > MaxOutputLine || !strings.HasSuffix(got[1], "...") {
		t.Fatalf("LastLines = %q", got)
	}
	if !utf8.ValidString(got[1]) {
		t.Fatalf("cut inside a rune: %q", got[1])
	}
}

// The first exit already says why in the log: the restart's line carries
// the workload's last output (a port taken, a config refused), before the
// next start writes more.
func TestRestartLogsTheLastOutput(t *testing.T) {
	f := newFake()
	f.crash = true
	f.output = []string{"starting", `level=error err="listen tcp 127.0.0.1:9090: bind: address already in use"`}
	var logs logbuf.Buffer
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "cluster-stack", Interval: 5 * time.Millisecond,
		BackoffMin: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{spec("prometheus", RolePrometheus)}); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	poll.Until(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "restarted stopped workload") },
		"no restart logged:\n%s", logs.String())
	for _, want := range []string{"exit_code=1", `bind: address already in use`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the restart's log line lacks %q:\n%s", want, logs.String())
		}
	}
}

// A workload reported crash-looping may run at the moment (it is up again
// after its last exit): a reload reaches it all the same.
func TestReloadReachesACrashLoopingWorkloadThatRuns(t *testing.T) {
	ctx := context.Background()
	f := &signalFake{fakeDriver: newFake()}
	f.crash = true
	s, err := NewSupervisor(f, SupervisorOptions{Owner: "node-stack", BackoffMin: time.Millisecond, BackoffMax: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]Spec{spec("vector", RoleVector)}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() bool { s.reconcile(ctx); return len(f.startTimes("vector")) >= 3 }, "not restarted twice")
	f.set(func() { f.crash = false })
	s.reconcile(ctx) // up again, and still crash-looping
	if st := s.States(); len(st) != 1 || st[0].Status != StatusCrashLooping {
		t.Fatalf("states: %+v", st)
	}
	if err := s.Reload("vector", syscall.SIGHUP, time.Now()); err != nil {
		t.Fatal(err)
	}
	s.reconcile(ctx)
	if got := f.signals(); len(got) != 1 {
		t.Fatalf("signals to a crash-looping workload that runs: %v", got)
	}
}
