package plugins

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/master/relay/relaytest"
	"github.com/agentproj/agent/stackconfig"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// upstream is the manager's side of the relay: what it received.
type upstream struct{ *relaytest.Upstream }

func newUpstream(t *testing.T) upstream { return upstream{relaytest.NewUpstream(t)} }

// values returns the samples received of the series named name, with the
// labels of the last one.
func (u upstream) values(name string) (vals []float64, labels map[string]string) {
	for _, ts := range u.Series() {
		if ts.Labels[0].Value != name {
			continue
		}
		labels = map[string]string{}
		for _, l := range ts.Labels {
			labels[l.Name] = l.Value
		}
		for _, s := range ts.Samples {
			vals = append(vals, s.Value)
		}
	}
	return vals, labels
}

// runActor runs fn until the test ends (or stop is called) and checks it
// returned nil.
func runActor(t *testing.T, fn func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// script writes an executable shell script into dir and returns its path.
// writePID is the shell that writes its own pid as the agent sees it into
// file: a run has a PID namespace of its own, where $$ and $! are not.
func writePID(file string) string {
	return fmt.Sprintf("read pid rest < /proc/self/stat; echo $pid > %s", file)
}

func script(t testing.TB, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// startManager builds a manager for plugins (relay may be nil), runs it
// until the test ends and waits until it takes runs.
func startManager(t *testing.T, app Appender, logs io.Writer, plugins ...stackconfig.Plugin) (*Manager, func()) {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	m, err := New(Config{Node: "n1", Cluster: "c1", Dir: filepath.Join(t.TempDir(), "plugins"), Plugins: plugins},
		app, slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop := runActor(t, m.Run)
	waitFor(t, "manager running", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.ctx != nil
	})
	return m, stop
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 20*time.Second, cond, "waiting for %s", what)
}

func statusOf(m *Manager, name string) Status {
	return m.status(context.Background(), m.plugins[name])
}

// skipShort skips a test that starts processes under -short, as every
// such test of the module does.
func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes (plugins, git)")
	}
}
