package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The systemd unit in deploy/ passes systemd-analyze verify, with ExecStart
// pointed at a freshly built agent (verify needs the binary to exist).
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := requireBinary(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile("../../deploy/agent.service")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/agent", agentBinary(t))
	path := filepath.Join(t.TempDir(), "agent.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify exits 0 on some warnings; a line naming our unit is a problem.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "agent.service") {
			t.Errorf("systemd-analyze: %s", line)
		}
	}
}
