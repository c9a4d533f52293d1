package monitor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/stackconfig"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	goleak.VerifyTestMain(m)
}

// newMonitor returns a monitor of the given groups on the real /proc, and
// its log.
func newMonitor(t testing.TB, mutate func(*Config), groups ...stackconfig.MonitorProcess) (*Monitor, *logbuf.Buffer) {
	t.Helper()
	cfg := Config{Monitor: stackconfig.DefaultMonitor}
	cfg.Containers = false
	cfg.Processes = groups
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &logbuf.Buffer{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	m, err := New(cfg, slog.New(slog.NewTextHandler(w, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return m, logs
}

// scrape gets the monitor's endpoint and returns every sample keyed by
// series(name, labels...).
func scrape(t testing.TB, m *Monitor) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", Path, nil))
	if rec.Code != 200 {
		t.Fatalf("GET %s: %d %s", Path, rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", Path, err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, mt := range f.Metric {
			var kv []string
			for _, l := range mt.Label {
				if l.GetValue() != "" {
					kv = append(kv, l.GetName(), l.GetValue())
				}
			}
			var v float64
			switch {
			case mt.Counter != nil:
				v = mt.Counter.GetValue()
			case mt.Gauge != nil:
				v = mt.Gauge.GetValue()
			case mt.Untyped != nil:
				v = mt.Untyped.GetValue()
			}
			out[series(name, kv...)] = v
		}
	}
	return out
}

// series names a sample: the metric and its non-empty labels, sorted.
func series(name string, kv ...string) string {
	var pairs []string
	for i := 0; i+1 < len(kv); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%s=%q", kv[i], kv[i+1]))
	}
	slices.Sort(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// eventually refreshes the monitor until cond holds for a scrape, or fails
// after the deadline with the last scrape's lines about what.
func eventually(t testing.TB, m *Monitor, timeout time.Duration, what string, cond func(s map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m.Refresh(context.Background())
		s := scrape(t, m)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			var lines []string
			for k, v := range s {
				lines = append(lines, fmt.Sprintf("%s %v", k, v))
			}
			slices.Sort(lines)
			t.Fatalf("%s: not within %s; last scrape:\n%s", what, timeout, strings.Join(lines, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// start runs a command in its own process group, killed with its children
// when the test ends.
func start(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	return cmd
}

// stop kills a command's process group and waits until its leader is gone
// from /proc.
func stop(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	poll.Until(t, 10*time.Second, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		return err != nil || bytes.Contains(b, []byte(") Z "))
	}, "process %d does not die", cmd.Process.Pid)
}

// uniqueBinary copies sleep under a name no other process on the machine
// has, so that a comm selector picks only this test's processes.
func uniqueBinary(t testing.TB) string {
	t.Helper()
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("mon%d", time.Now().UnixNano()%1e9)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	// Written aside and renamed, as applications and daemons do.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// captureWriter is an http.ResponseWriter for the helper process, which
// has no testing.T for httptest.
type captureWriter struct {
	header http.Header
	body   []byte
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) Write(b []byte) (int, error) {
	c.body = append(c.body, b...)
	return len(b), nil
}
func (c *captureWriter) WriteHeader(int) {}

func newRequest() *http.Request { return httptest.NewRequest("GET", Path, nil) }
