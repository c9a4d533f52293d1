package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

// runningService runs a Service until the test ends.
func runningService(t *testing.T, cfg stackconfig.Relay, logger *slog.Logger, reg *prometheus.Registry) *Service {
	t.Helper()
	s, err := NewService(cfg, logger, reg)
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
	waitFor(t, "relay running", func() bool { return s.Current().running.Load() })
	return s
}

// reloadTo reloads s with cfg and waits until a relay built from it runs.
func reloadTo(t *testing.T, s *Service, cfg stackconfig.Relay) {
	t.Helper()
	s.Reload(cfg)
	waitFor(t, "the reloaded relay running", func() bool {
		r := s.Current()
		return r.running.Load() && r.cfg.Concurrency == cfg.Concurrency && len(r.cfg.Upstream) == len(cfg.Upstream)
	})
}

// A reload replaces the relay without losing what it acknowledged: what an
// upstream had not taken yet is delivered after the reload (to more shards
// now), a new upstream gets what comes after it, and the metrics are
// registered again for the new upstreams.
func TestReloadKeepsWhatWasQueued(t *testing.T) {
	a, b := newFakeManager(t), newFakeManager(t)
	var down atomic.Bool
	down.Store(true)
	a.respond = func(int, *remotewrite.WriteRequest) (int, http.Header) {
		if down.Load() {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusNoContent, nil
	}
	reg := prometheus.NewRegistry()
	cfg := testConfig(t.TempDir(), a.URL)
	s := runningService(t, cfg, discardLogger(), reg)
	for i := range 10 {
		if rec := post(s, request(fmt.Sprintf("before%d", i)), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}

	next := cfg
	next.Concurrency = 3
	next.Upstream = stackconfig.Upstreams(a.URL, b.URL)
	reloadTo(t, s, next)
	for i := range 5 {
		if rec := post(s, request(fmt.Sprintf("after%d", i)), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	down.Store(false)
	count := func(up *fakeManager, prefix string) int {
		n := 0
		for name, c := range names(up.received()) {
			if strings.HasPrefix(name, prefix) {
				n += c
			}
		}
		return n
	}
	waitFor(t, "the first upstream has everything, the new one what came after the reload", func() bool {
		return count(a, "before") == 10 && count(a, "after") == 5 && count(b, "after") == 5
	})
	if n := count(b, "before"); n != 0 {
		t.Fatalf("the new upstream got %d series queued before it was configured", n)
	}
	if n, err := testutil.GatherAndCount(reg, "relay_queue_bytes"); err != nil || n != 2 {
		t.Fatalf("relay_queue_bytes has %d series (%v), want one per upstream", n, err)
	}
	if got := s.Stats(); len(got.Upstreams) != 2 {
		t.Fatalf("stats of %d upstreams, want 2", len(got.Upstreams))
	}
}

// A reloaded config the relay cannot open leaves the previous one running.
func TestReloadThatCannotOpenKeepsThePrevious(t *testing.T) {
	up := newFakeManager(t)
	var logs logbuf.Buffer
	cfg := testConfig(t.TempDir(), up.URL)
	s := runningService(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)), prometheus.NewRegistry())
	bad := cfg
	bad.QueueDir = filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(bad.QueueDir, nil, 0o600); err != nil { // a file where the queue's directory should be
		t.Fatal(err)
	}
	s.Reload(bad)
	waitFor(t, "the rejection logged and the previous relay running again", func() bool {
		return strings.Contains(logs.String(), "reloaded config rejected") && s.Current().running.Load()
	})
	if got := s.Current().cfg.QueueDir; got != cfg.QueueDir {
		t.Fatalf("queue_dir %s, want the previous %s", got, cfg.QueueDir)
	}
	if rec := post(s, request("x"), nil); rec.Code != http.StatusNoContent {
		t.Fatalf("status %d after the rejected reload: %s", rec.Code, rec.Body)
	}
	waitFor(t, "delivered", func() bool { return names(up.received())["x"] == 1 })
}

// A reload keeps the relay's counters going, as Prometheus' own reload
// does (a rate() over it sees no reset), and deletes the series of an
// upstream the reloaded config no longer has.
func TestReloadKeepsCounters(t *testing.T) {
	a, b := newFakeManager(t), newFakeManager(t)
	reg := prometheus.NewRegistry()
	cfg := testConfig(t.TempDir(), a.URL, b.URL)
	s := runningService(t, cfg, discardLogger(), reg)
	forwarded := func(up *fakeManager) float64 {
		return testutil.ToFloat64(s.Current().m.forwarded.WithLabelValues(redact(up.URL)))
	}
	for i := range 3 {
		if rec := post(s, request(fmt.Sprintf("before%d", i)), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	waitFor(t, "both upstreams took the 3 samples", func() bool { return forwarded(a) == 3 && forwarded(b) == 3 })

	next := cfg
	next.Concurrency = 3
	next.Upstream = stackconfig.Upstreams(a.URL)
	reloadTo(t, s, next)
	if rec := post(s, request("after0", "after1"), nil); rec.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	waitFor(t, "the kept upstream took the 2 samples after the reload", func() bool { return forwarded(a) == 5 })
	want := `
# HELP relay_samples_received_total Samples and histograms made durable in the queue.
# TYPE relay_samples_received_total counter
relay_samples_received_total 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "relay_samples_received_total"); err != nil {
		t.Fatalf("after the reload: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "upstream" && l.GetValue() == redact(b.URL) {
					t.Errorf("%s still has a series of the removed upstream %s", mf.GetName(), l.GetValue())
				}
			}
		}
	}
}
