// Package processtest is test support for end-to-end tests that run real
// components as local processes when no Debian package has them: it finds
// the binaries testdata/testbins/build.sh built once into the cache folder
// (Prometheus 3, Jaeger v2, the project's OpenTelemetry Collector,
// VictoriaLogs).
//
// A missing binary is built when CI=true (minutes, once: `make testbins`
// does it before the tests) and skips the test otherwise, with the command
// that builds it.
//
// It also runs the manager's side of the tests from those binaries: a
// Jaeger that stores in memory and answers its query API (StartJaeger), a
// VictoriaLogs (StartVictoriaLogs); and it speaks OTLP/HTTP in JSON
// (TracesJSON, LogsJSON, PostOTLP) so that tests send spans and log
// records without an OTLP library.
package processtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Testbin returns the path of binary bin of component name (a folder of
// testdata/testbins), e.g. Testbin(t, "prometheus3", "promtool").
func Testbin(t testing.TB, name, bin string) string {
	t.Helper()
	script := filepath.Join(repoRoot(t), "testdata", "testbins", "build.sh")
	out, err := exec.Command("bash", script, "--path", name).Output()
	if err != nil {
		t.Fatalf("testbins: %s --path %s: %v", script, name, err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), bin)
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if os.Getenv("CI") != "true" {
		t.Skipf("%s is not built: run `make testbins` (or bash %s %s) once to run this test", bin, script, name)
	}
	var log bytes.Buffer
	cmd := exec.Command("bash", script, name)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("testbins: build %s (CI=true): %v\n%s", name, err, log.String())
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("testbins: %s built but %s is missing: %v", name, path, err)
	}
	return path
}

// LookPath returns the path of a program from a Debian package (install
// says how to get it): a missing one fails the test when CI=true and
// skips it otherwise.
func LookPath(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (CI=true): %s", name, install)
	}
	t.Skipf("%s is missing: %s to run this test", name, install)
	return ""
}

// repoRoot is the folder of the agent's go.mod, found from the test's
// working directory (its package folder).
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/agentproj/agent\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testbins: the agent's go.mod is not above the working directory")
		}
		dir = parent
	}
}
