package monitor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/stackconfig"
)

const helperEnv = "MONITOR_TEST_UNPRIVILEGED"

// runHelper is the test binary run as an unprivileged user: it measures
// init (pid 1, root's), whose io and fd files it may not read, three
// times, then prints its log and the scrape.
func runHelper() int {
	cfg := Config{Monitor: stackconfig.DefaultMonitor}
	cfg.Containers = false
	no := false
	cfg.Processes = []stackconfig.MonitorProcess{{Name: "init", PID: 1, Children: &no}}
	m, err := New(cfg, slog.New(slog.NewTextHandler(os.Stdout, nil)), prometheus.NewRegistry())
	if err != nil {
		fmt.Println("helper:", err)
		return 1
	}
	for range 3 {
		m.Refresh(context.Background())
	}
	fmt.Println("--- scrape")
	rec := &captureWriter{header: map[string][]string{}}
	m.Handler().ServeHTTP(rec, newRequest())
	os.Stdout.Write(rec.body)
	return 0
}

// A permission error is counted and logged once, and the group is still
// measured with what can be read. The test runs itself as nobody.
func TestPermissionErrorsCountedAndLoggedOnce(t *testing.T) {
	var out []byte
	if os.Geteuid() == 0 {
		// The test binary, where nobody may execute it.
		dir, err := os.MkdirTemp("", "monperm")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "monitor.test")
		b, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), helperEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err = cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("unprivileged helper: %v\n%s", err, out)
		}
	} else {
		r, w, _ := os.Pipe()
		stdout := os.Stdout
		os.Stdout = w
		runHelper()
		os.Stdout = stdout
		w.Close()
		out, _ = io.ReadAll(r)
	}
	text := string(out)
	log, scrape, _ := strings.Cut(text, "--- scrape")
	if n := strings.Count(log, "no permission to read a process file"); n < 1 || n > 3 {
		t.Fatalf("permission errors logged %d times (want once per file, io and fd):\n%s", n, log)
	}
	if strings.Count(log, "file=io") != 1 {
		t.Fatalf("the io permission error is not logged exactly once:\n%s", log)
	}
	if !strings.Contains(scrape, `agent_monitor_permission_errors_total{file="io"} 3`) {
		t.Fatalf("permission errors not counted per read:\n%s", scrape)
	}
	if !strings.Contains(scrape, `namedprocess_namegroup_up{group="init",guid="",ip="",service=""} 1`) {
		t.Fatalf("init is not measured with what can be read:\n%s", scrape)
	}
}
