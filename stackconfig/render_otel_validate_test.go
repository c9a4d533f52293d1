package stackconfig

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/process/processtest"
)

// The real collectors check every golden config: `jaeger validate` (Jaeger
// v2.12.0) and `otelcol validate` (the project's distribution) build every
// component from it without starting any, so a wrong key, component name
// or value fails here. Tokens are read from a temporary directory instead
// of /etc/agent, since validation reads them.
func TestRenderedOTelConfigsValidate(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"traces-token", "logs.token"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range otelGoldens() {
		bin := processtest.Testbin(t, g.binary, g.binary)
		b, err := g.render(dir)
		if err != nil {
			t.Fatalf("%s: %v", g.file, err)
		}
		golden := strings.ReplaceAll(string(b), dir, "/etc/agent")
		if want, _ := os.ReadFile(filepath.Join("..", "testdata", "render", g.file)); golden != string(want) {
			t.Fatalf("%s: the validated config is not the golden one", g.file)
		}
		path := filepath.Join(t.TempDir(), "config.yml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "validate", "--config=file:"+path).CombinedOutput()
		if err != nil {
			t.Errorf("%s validate %s: %v\n%s\n--- config\n%s", g.binary, g.file, err, out, b)
		}
	}
}

// The collector itself reads a rendered URL as it was given: the node
// collector ships a log line to a logs URL full of $ (the one character
// of the collectors' expansion syntax a URL may hold), and the manager
// sees exactly that path and query. This checks otelExpandFake against
// the real thing.
func TestRenderedURLReachesTheManagerAsGiven(t *testing.T) {
	bin := processtest.Testbin(t, "otelcol", "otelcol")
	got := make(chan string, 10)
	manager := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case got <- r.URL.RequestURI():
		default:
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer manager.Close()
	// Braces are refused in URLs, so ${...} cannot be spelled; $ can.
	const path = "/in$HOME/a$$b$/$$$env:HOME/v1/logs?q=$PATH&r=$$"
	dir := t.TempDir()
	logFile := filepath.Join(dir, "app.log")
	if err := os.WriteFile(logFile, []byte("one line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := testNodeLogsInput()
	in.CollectorURL, in.ContainerLogs, in.LogsBearerTokenFile, in.HealthListen, in.TelemetryListen = "", "", "", "", ""
	in.StorageDir, in.LogFiles = filepath.Join(dir, "storage"), []string{logFile}
	in.LogsURL = manager.URL + path
	b := mustRender(t, RenderTraceAgent, in)
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config=file:"+cfg)
	out, err := os.Create(filepath.Join(dir, "otelcol.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() }()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case uri := <-got:
		if uri != path {
			t.Fatalf("the manager got %q, want %q", uri, path)
		}
	case <-ctx.Done():
		log, _ := os.ReadFile(out.Name())
		t.Fatalf("no log line reached the manager\n%s", log)
	}
}
