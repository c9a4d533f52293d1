package plugins

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/master/relay/relaytest"
	"github.com/agentproj/agent/stackconfig"
)

// runningService runs a Service until the test ends.
func runningService(t *testing.T, cfg Config, app Appender, log *slog.Logger, reg prometheus.Registerer) *Service {
	t.Helper()
	s, err := NewService(cfg, app, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}

// A reload replaces the plugins: the one removed stops, the one added
// runs on its schedule and is served by the API, the metrics are
// registered again; a list that cannot start keeps the previous one.
func TestReloadReplacesThePlugins(t *testing.T) {
	skipShort(t)
	up := newUpstream(t)
	dir := t.TempDir()
	plugin := func(name string) stackconfig.Plugin {
		return stackconfig.Plugin{Name: name, Command: []string{script(t, dir, name+".sh", "echo 'ticks 1'\n")}, Interval: time.Second}
	}
	cfg := Config{Node: "n1", Cluster: "c1", Dir: t.TempDir(), Plugins: []stackconfig.Plugin{plugin("a")}}
	logs := &logbuf.Buffer{}
	s := runningService(t, cfg, relaytest.Start(t, up.URL), slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
	mux := http.NewServeMux()
	for pattern, h := range s.Routes() {
		mux.Handle(pattern, h)
	}
	listed := func() string {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/plugins", nil))
		var l List
		if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
			return rec.Body.String()
		}
		var names []string
		for _, p := range l.Plugins {
			names = append(names, p.Name)
		}
		return strings.Join(names, ",")
	}
	waitFor(t, "plugin a's samples upstream", func() bool { v, _ := up.values("plugin_a_ticks"); return len(v) >= 1 })

	next := cfg
	next.Plugins = []stackconfig.Plugin{plugin("b")}
	s.Reload(next)
	waitFor(t, "plugin b listed and its samples upstream", func() bool {
		v, _ := up.values("plugin_b_ticks")
		return listed() == "b" && len(v) >= 1
	})
	a, _ := up.values("plugin_a_ticks")
	stopped := len(a)
	waitFor(t, "two more runs of b", func() bool { v, _ := up.values("plugin_b_ticks"); return len(v) >= 3 })
	if a, _ := up.values("plugin_a_ticks"); len(a) > stopped+1 { // one may have been under way
		t.Fatalf("plugin a ran %d times after it was removed", len(a)-stopped)
	}

	bad := next
	bad.Plugins = []stackconfig.Plugin{{Name: "c", Command: []string{"/bin/true"}, User: "no-such-user-here"}}
	s.Reload(bad)
	waitFor(t, "the rejected list logged", func() bool { return strings.Contains(logs.String(), "reloaded config rejected") })
	b, _ := up.values("plugin_b_ticks")
	waitFor(t, "b running again", func() bool { v, _ := up.values("plugin_b_ticks"); return listed() == "b" && len(v) >= len(b)+2 })
}

// A reload keeps the plugins' counters going (a rate() over them sees no
// reset) and deletes the series of a plugin the reloaded list no longer
// has.
func TestReloadKeepsCounters(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	plugin := func(name string, every time.Duration) stackconfig.Plugin {
		return stackconfig.Plugin{Name: name, Command: []string{script(t, dir, name+".sh", "echo 'ticks 1'\n")}, Interval: every}
	}
	cfg := Config{Node: "n1", Cluster: "c1", Dir: t.TempDir(), Plugins: []stackconfig.Plugin{plugin("a", time.Second), plugin("b", time.Second)}}
	reg := prometheus.NewRegistry()
	s := runningService(t, cfg, relaytest.Start(t, newUpstream(t).URL), slog.New(slog.DiscardHandler), reg)
	runs := func(plugin string) float64 {
		return testutil.ToFloat64(s.Current().m.runs.WithLabelValues(plugin, "ok"))
	}
	waitFor(t, "two runs of each plugin", func() bool { return runs("a") >= 2 && runs("b") >= 2 })

	first := s.Current()
	before := runs("a")
	next := cfg
	next.Plugins = []stackconfig.Plugin{plugin("a", 2*time.Second)}
	s.Reload(next)
	waitFor(t, "a run of a by the reloaded manager", func() bool {
		now := runs("a")
		if now < before {
			t.Fatalf("agent_plugin_runs_total{plugin=\"a\"} went from %v down to %v", before, now)
		}
		before = now
		return s.Current() != first && statusOf(s.Current(), "a").Runs >= 1
	})
	if n := s.Current().m.runs.DeletePartialMatch(prometheus.Labels{"plugin": "b"}); n != 0 {
		t.Fatalf("agent_plugin_runs_total still has %d series of the removed plugin b", n)
	}
}
