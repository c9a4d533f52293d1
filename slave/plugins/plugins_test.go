package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/master/relay"
	"github.com/agentproj/agent/master/relay/relaytest"
	"github.com/agentproj/agent/stackconfig"
)

// A scheduled plugin runs every interval, first at once; its samples reach
// the upstream through the relay as plugin_<name>_<metric> with ns, node
// and cluster.
func TestScheduledPlugin(t *testing.T) {
	skipShort(t)
	up := newUpstream(t)
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	sched := script(t, dir, "sched.sh", fmt.Sprintf(`n=$(( $(cat %[1]s 2>/dev/null || echo 0) + 1 )); echo $n > %[1]s
echo "# TYPE runs counter"
echo "runs{disk=\"sda\"} $n"
`, count))
	m, _ := startManager(t, relaytest.Start(t, up.URL), nil,
		stackconfig.Plugin{Name: "sched", Command: []string{sched}, Interval: time.Second, NS: "infra"})
	waitFor(t, "two scheduled runs upstream", func() bool {
		vals, _ := up.values("plugin_sched_runs")
		return len(vals) >= 2
	})
	vals, labels := up.values("plugin_sched_runs")
	want := map[string]string{"__name__": "plugin_sched_runs", "disk": "sda", "ns": "infra", "node": "n1", "cluster": "c1"}
	if fmt.Sprint(labels) != fmt.Sprint(want) || vals[0] != 1 || vals[1] != 2 {
		t.Fatalf("upstream got %v %v, want %v with values 1, 2", vals, labels, want)
	}
	st := statusOf(m, "sched")
	if st.Runs < 2 || st.Failures != 0 || st.ExitCode == nil || *st.ExitCode != 0 || st.Samples != 1 || st.LastRun == nil || !st.Enabled {
		t.Fatalf("status %+v", st)
	}
}

// On demand with a param: it arrives in PLUGIN_PARAM only, never as an
// argument and never through a shell.
func TestOnDemandRunWithParam(t *testing.T) {
	skipShort(t)
	up := newUpstream(t)
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	od := script(t, dir, "od.sh", `printf '[{"name":"args","value":%d,"tags":{"param":"%s"}}]' $# "$PLUGIN_PARAM"`)
	m, _ := startManager(t, relaytest.Start(t, up.URL), nil, stackconfig.Plugin{Name: "od", Command: []string{od}})
	h := apiServer(t, m)

	param := fmt.Sprintf("$(touch %s); `touch %s` -x --all", pwned, pwned)
	code, body := call(t, h, http.MethodPost, "/api/v1/plugins/od/run?timeout=5s&param="+url.QueryEscape(param))
	var res RunResult
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil {
		t.Fatalf("run: %d %s", code, body)
	}
	if res.Error != "" || res.ExitCode != 0 || res.Samples != 1 || !res.Stored || len(res.Values) != 1 {
		t.Fatalf("run result %+v", res)
	}
	v := res.Values[0]
	if v.Name != "plugin_od_args" || *v.Value != 0 || v.Tags["param"] != param || v.Tags["ns"] != "plugins" {
		t.Fatalf("sample %+v %v: want 0 arguments and the param verbatim", v, *v.Value)
	}
	if _, err := os.Stat(pwned); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the param was run by a shell: %v", err)
	}
	waitFor(t, "on-demand sample upstream", func() bool { vals, _ := up.values("plugin_od_args"); return len(vals) == 1 })

	for _, c := range []struct {
		target string
		code   int
		want   string
	}{
		{"/api/v1/plugins/od/run?timeout=2h", 400, "timeout: must be > 0 and at most 1h0m0s"},
		{"/api/v1/plugins/od/run?timeout=soon", 400, "timeout: want a duration"},
		{"/api/v1/plugins/od/run?param=a%00b", 400, "param: must not contain control characters"},
		{"/api/v1/plugins/od/run?param=a&param=b", 400, "param: give it once"},
		{"/api/v1/plugins/od/run?cmd=ls", 400, `unknown query parameter "cmd"`},
		{"/api/v1/plugins/nope/run", 404, `no plugin named "nope"`},
		{"/api/v1/plugins/Bad..Name/run", 400, "plugin name: must be lower-case letters"},
		{"/api/v1/plugins/od/update", 400, "not a git plugin"},
	} {
		if code, body := call(t, h, http.MethodPost, c.target); code != c.code || !strings.Contains(jsonError(t, body), c.want) {
			t.Errorf("POST %s: %d %s, want %d with %q", c.target, code, body, c.code, c.want)
		}
	}
	for _, c := range []struct{ method, target, allow string }{
		{http.MethodGet, "/api/v1/plugins/od/run", "POST"},
		{http.MethodPost, "/api/v1/plugins", "GET"},
		{http.MethodDelete, "/api/v1/plugins/od", "GET"},
	} {
		if code, body := call(t, h, c.method, c.target); code != 405 || jsonError(t, body) == "" {
			t.Errorf("%s %s: %d %s, want a JSON 405", c.method, c.target, code, body)
		}
	}
	if code, body := call(t, h, http.MethodGet, "/api/v1/plugins/od/logs"); code != 404 || jsonError(t, body) == "" {
		t.Errorf("unknown endpoint: %d %s", code, body)
	}
}

// A plugin that hangs is killed with its children at its timeout; while
// it hangs it is not started twice (409) and other plugins run.
func TestHangingPluginKilledWithChildren(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	hang := script(t, dir, "hang.sh", fmt.Sprintf("sh -c '%s; exec sleep 300' &\nsleep 300\n", writePID(pidFile)))
	good := script(t, dir, "good.sh", "echo ok 1\n")
	m, _ := startManager(t, nil, nil,
		stackconfig.Plugin{Name: "hang", Command: []string{hang}, Timeout: 2 * time.Second},
		stackconfig.Plugin{Name: "good", Command: []string{good}})
	h := apiServer(t, m)

	done := make(chan *RunResult, 1)
	go func() {
		res, err := m.RunNow(context.Background(), "hang", 0, nil)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	waitFor(t, "hanging plugin started its child", func() bool { b, _ := os.ReadFile(pidFile); return len(b) > 0 })
	if code, body := call(t, h, http.MethodPost, "/api/v1/plugins/hang/run"); code != http.StatusConflict || !strings.Contains(body, "already running") {
		t.Fatalf("second run of a running plugin: %d %s, want 409", code, body)
	}
	if !statusOf(m, "hang").Running {
		t.Fatal("status does not show the plugin running")
	}
	res, err := m.RunNow(context.Background(), "good", 0, nil)
	if err != nil || res.Error != "" || res.Samples != 1 {
		t.Fatalf("another plugin while one hangs: %+v %v", res, err)
	}
	res = <-done
	if !strings.Contains(res.Error, "timed out after 2s: killed with its process group") || res.ExitCode != -1 || res.DurationSeconds > 10 {
		t.Fatalf("hanging run: %+v", res)
	}
	b, _ := os.ReadFile(pidFile)
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	waitFor(t, "the plugin's child gone", func() bool { return !alive(child) })
	st := statusOf(m, "hang")
	if st.Running || st.Failures != 1 || !strings.Contains(st.LastError, "timed out") {
		t.Fatalf("status after the timeout: %+v", st)
	}
}

// alive reports whether pid runs (a zombie waiting for its reaper does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i > 0 && len(s) > i+2 {
		return s[i+2] != 'Z'
	}
	return true
}

// Garbage, too much output and a failing exit are recorded as failed with
// the reason; nothing of such a run is stored.
func TestFailingOutputs(t *testing.T) {
	skipShort(t)
	up := newUpstream(t)
	dir := t.TempDir()
	cases := []struct{ name, body, want string }{
		{"garbage", "echo 'good 1'\necho 'this is not a metric'\n", "output: line 2: "},
		{"flood", "exec yes 'flood 1'\n", fmt.Sprintf("printed more than %d bytes: killed with its process group", MaxOutputBytes)},
		{"exits", "echo 'good 1'\necho 'disk gone' >&2\nexit 3\n", "exit status 3: disk gone"},
		{"badjson", "echo '[{\"name\": \"x\", \"value\": 1, \"step\": 60}]'\n", `output: line 1: element 0: unknown field "step"`},
		{"ownlabel", "echo 'x{node=\"other\"} 1'\n", `output: line 1: x: label "node" is set by the agent`},
	}
	var ps []stackconfig.Plugin
	for _, c := range cases {
		ps = append(ps, stackconfig.Plugin{Name: c.name, Command: []string{script(t, dir, c.name, c.body)}})
	}
	good := script(t, dir, "fine", "echo 'fine 1'\n")
	ps = append(ps, stackconfig.Plugin{Name: "fine", Command: []string{good}})
	m, _ := startManager(t, relaytest.Start(t, up.URL), nil, ps...)
	h := apiServer(t, m)
	for _, c := range cases {
		code, body := call(t, h, http.MethodPost, "/api/v1/plugins/"+c.name+"/run")
		var res RunResult
		_ = json.Unmarshal([]byte(body), &res)
		if code != http.StatusBadGateway || !strings.Contains(res.Error, c.want) || res.Stored || len(res.Values) != 0 {
			t.Errorf("%s: %d %s, want 502 with %q", c.name, code, body, c.want)
		}
		if st := statusOf(m, c.name); !strings.Contains(st.LastError, c.want) || st.Failures != 1 {
			t.Errorf("%s: status %+v", c.name, st)
		}
	}
	if res, err := m.RunNow(context.Background(), "fine", 0, nil); err != nil || !res.Stored {
		t.Fatalf("fine: %+v %v", res, err)
	}
	waitFor(t, "fine upstream", func() bool { vals, _ := up.values("plugin_fine_fine"); return len(vals) == 1 })
	for _, c := range cases {
		if vals, _ := up.values("plugin_" + c.name + "_good"); len(vals) != 0 {
			t.Errorf("%s: a failed run's samples reached the upstream", c.name)
		}
	}
}

// Disabled over the API, a plugin does not run (409 on demand, skipped on
// schedule) until disable_max has passed, then runs again by itself.
func TestDisableAndAutomaticReenable(t *testing.T) {
	skipShort(t)
	up := newUpstream(t)
	dir := t.TempDir()
	logs := &logbuf.Buffer{}
	m, _ := startManager(t, relaytest.Start(t, up.URL), logs,
		stackconfig.Plugin{Name: "tick", Command: []string{script(t, dir, "tick", "echo 'tick 1'\n")}, Interval: time.Second, DisableMax: 3 * time.Second},
		stackconfig.Plugin{Name: "od", Command: []string{script(t, dir, "od", "echo 'od 1'\n")}, DisableMax: time.Hour})
	h := apiServer(t, m)
	waitFor(t, "first scheduled run", func() bool { return statusOf(m, "tick").Runs >= 1 })

	code, body := call(t, h, http.MethodPost, "/api/v1/plugins/tick/disable")
	var st Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Enabled || st.DisabledUntil == nil {
		t.Fatalf("disable: %d %s", code, body)
	}
	waitFor(t, "no run under way", func() bool { return !statusOf(m, "tick").Running })
	runs := statusOf(m, "tick").Runs
	if code, body := call(t, h, http.MethodPost, "/api/v1/plugins/tick/run"); code != http.StatusConflict || !strings.Contains(body, "disabled until") {
		t.Fatalf("run while disabled: %d %s", code, body)
	}
	waitFor(t, "enabled again after disable_max", func() bool { return statusOf(m, "tick").Enabled })
	if got := statusOf(m, "tick").Runs; got != runs {
		t.Fatalf("%d scheduled runs while disabled", got-runs)
	}
	waitFor(t, "scheduled runs again", func() bool { return statusOf(m, "tick").Runs > runs })
	if !strings.Contains(logs.String(), "plugin enabled again: disable_max has passed") {
		t.Fatalf("no log line for the automatic enable:\n%s", logs)
	}

	// Enabled over the API before disable_max.
	call(t, h, http.MethodPost, "/api/v1/plugins/od/disable")
	if _, err := m.RunNow(context.Background(), "od", 0, nil); !errors.Is(err, ErrDisabled) {
		t.Fatalf("run while disabled: %v", err)
	}
	if code, body := call(t, h, http.MethodPost, "/api/v1/plugins/od/enable"); code != 200 || !strings.Contains(body, `"enabled": true`) {
		t.Fatalf("enable: %d %s", code, body)
	}
	if res, err := m.RunNow(context.Background(), "od", 0, nil); err != nil || res.Error != "" {
		t.Fatalf("run after enable: %+v %v", res, err)
	}
}

// The agent stopping kills a run under way, and Run returns.
func TestStopKillsRunningPlugin(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	hang := script(t, dir, "hang.sh", writePID(pidFile)+"\nsleep 300\n")
	m, stop := startManager(t, nil, nil, stackconfig.Plugin{Name: "hang", Command: []string{hang}, Timeout: time.Hour})
	done := make(chan *RunResult, 1)
	go func() { res, _ := m.RunNow(context.Background(), "hang", 0, nil); done <- res }()
	waitFor(t, "plugin started", func() bool { b, _ := os.ReadFile(pidFile); return len(b) > 0 })
	stop()
	res := <-done
	if res == nil || !strings.Contains(res.Error, "stopped") {
		t.Fatalf("run at stop: %+v", res)
	}
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	waitFor(t, "plugin process gone", func() bool { return !alive(pid) })
	if _, err := m.RunNow(context.Background(), "hang", 0, nil); !errors.Is(err, ErrStopped) {
		t.Fatalf("run after stop: %v", err)
	}
}

func TestNewRefusesWhatConfigCannotCheck(t *testing.T) {
	ps := []stackconfig.Plugin{{Name: "x", Command: []string{"/bin/true"}, Interval: time.Second}}
	if _, err := New(Config{Plugins: ps}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "needs the relay") {
		t.Fatalf("scheduled plugin without a relay: %v", err)
	}
	if os.Geteuid() != 0 {
		ps = []stackconfig.Plugin{{Name: "x", Command: []string{"/bin/true"}, User: "root"}}
		if _, err := New(Config{Plugins: ps}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "needs an agent running as root") {
			t.Fatalf("another user without root: %v", err)
		}
	}
}

// apiServer serves the manager's routes as the agent's API does.
func apiServer(t *testing.T, m *Manager) http.Handler {
	mux := http.NewServeMux()
	for pattern, h := range m.Routes() {
		mux.Handle(pattern, h)
	}
	return mux
}

func call(t *testing.T, h http.Handler, method, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Code, rec.Body.String()
}

func jsonError(t *testing.T, body string) string {
	var e struct{ Error string }
	_ = json.Unmarshal([]byte(body), &e)
	return e.Error
}

// The first scheduled runs start beside the relay: a run whose relay does
// not run yet waits for it instead of failing.
func TestFirstRunWaitsForTheRelay(t *testing.T) {
	skipShort(t)
	up := newUpstream(t)
	cfg := stackconfig.DefaultRelay
	cfg.Upstream = []stackconfig.RelayUpstream{{URL: up.URL}}
	cfg.FlushDeadline = 0
	rel, err := relay.New(cfg.WithAgentDefaults("c1", t.TempDir()), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	printed := filepath.Join(dir, "printed")
	early := script(t, dir, "early.sh", "echo 'early 1'\ntouch "+printed+"\n")
	m, _ := startManager(t, rel, nil, stackconfig.Plugin{Name: "early", Command: []string{early}, Interval: time.Hour})
	waitFor(t, "first run printed", func() bool { _, err := os.Stat(printed); return err == nil })
	runActor(t, rel.Run) // only now
	waitFor(t, "first run recorded", func() bool { return statusOf(m, "early").Runs == 1 })
	if st := statusOf(m, "early"); st.Failures != 0 || st.LastError != "" {
		t.Fatalf("first run before the relay ran: %+v", st)
	}
	waitFor(t, "sample upstream", func() bool { vals, _ := up.values("plugin_early_early"); return len(vals) == 1 })
}

// A plugin disabled over the API stays disabled across a restart of the
// agent (a new Manager on the same directory), at most for the disable_max
// configured now; enabled, it stays enabled. A damaged state file is
// logged and leaves every plugin enabled.
func TestDisabledStaysDisabledAcrossRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plugins")
	bin := t.TempDir()
	logs := &logbuf.Buffer{}
	restart := func(disableMax time.Duration) *Manager {
		t.Helper()
		m, err := New(Config{Node: "n1", Cluster: "c1", Dir: dir, Plugins: []stackconfig.Plugin{
			{Name: "a", Command: []string{script(t, bin, "a", "echo 'a 1'\n")}, DisableMax: disableMax},
			{Name: "b", Command: []string{script(t, bin, "b", "echo 'b 1'\n")}},
		}}, nil, slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := restart(time.Hour)
	if err := m.Disable("a"); err != nil {
		t.Fatal(err)
	}
	until := *statusOf(m, "a").DisabledUntil

	m = restart(time.Hour)
	if st := statusOf(m, "a"); st.Enabled || !st.DisabledUntil.Equal(until) {
		t.Fatalf("after a restart: %+v, want disabled until %s", st, until)
	}
	if !statusOf(m, "b").Enabled {
		t.Fatal("b disabled after a restart, never was before")
	}
	m = restart(time.Minute)
	if st := statusOf(m, "a"); st.Enabled || st.DisabledUntil.After(time.Now().Add(time.Minute)) {
		t.Fatalf("after a restart with disable_max 1m: %+v, want disabled for a minute at most", st)
	}
	if err := m.Enable("a"); err != nil {
		t.Fatal(err)
	}
	if m = restart(time.Hour); !statusOf(m, "a").Enabled {
		t.Fatal("a disabled after a restart, was enabled before")
	}

	if err := m.Disable("b"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(`{"disabled": {"b": "not a time"`), 0o600); err != nil {
		t.Fatal(err)
	}
	if m = restart(time.Hour); !statusOf(m, "a").Enabled || !statusOf(m, "b").Enabled {
		t.Fatal("a plugin disabled by a damaged state file")
	}
	if !strings.Contains(logs.String(), "state file ignored") {
		t.Fatalf("damaged state file not logged:\n%s", logs)
	}
}

// A process a plugin started outside its process group (setsid, as a
// daemon does) does not outlive the run: the run's PID namespace ends
// with the plugin, or, without one, the process is found by the run's
// AGENT_PLUGIN_RUN and killed.
func TestRunLeavesNoDaemonBehind(t *testing.T) {
	skipShort(t)
	for _, pidNS := range []bool{true, false} {
		t.Run(fmt.Sprintf("pid namespace %v", pidNS), func(t *testing.T) {
			if pidNS && os.Geteuid() != 0 {
				if os.Getenv("CI") == "true" {
					t.Fatal("CI runs as root: this test must run there")
				}
				t.Skip("a PID namespace per run needs root; run the tests as root to cover it")
			}
			dir := t.TempDir()
			pidFile := filepath.Join(dir, "daemon.pid")
			daemon := script(t, dir, "daemon.sh", fmt.Sprintf("setsid sh -c '%s; exec sleep 300' &\n"+
				"while [ ! -s %s ]; do sleep 0.01; done\necho started 1\n", writePID(pidFile), pidFile))
			m, _ := startManager(t, nil, nil, stackconfig.Plugin{Name: "daemon", Command: []string{daemon}})
			m.pidNS.Store(pidNS) // without one (not root), the run's RunEnv marks what it left
			res, err := m.RunNow(context.Background(), "daemon", 0, nil)
			if err != nil || res.Error != "" || res.Samples != 1 {
				t.Fatalf("run: %+v %v", res, err)
			}
			b, _ := os.ReadFile(pidFile)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if pid <= 1 {
				t.Fatalf("the daemon wrote pid %q", b)
			}
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
			waitFor(t, "the plugin's daemon gone", func() bool { return !alive(pid) })
		})
	}
}
