package etcdtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/process/processtest"
)

// RequireBinary returns the path of a program a test needs. When it is
// missing the test fails under CI=true and is skipped elsewhere, with the
// Debian package that provides it.
func RequireBinary(t testing.TB, name, pkg string) string {
	t.Helper()
	return processtest.LookPath(t, name, "apt-get install "+pkg)
}

// StartProcess runs the Debian etcd binary on free loopback ports, with its
// data under t.TempDir(), kills it when the test ends, and returns its
// client URL once it answers.
func StartProcess(t testing.TB) string {
	t.Helper()
	bin := RequireBinary(t, "etcd", "etcd-server")
	client, peer := "http://"+FreeAddr(t), "http://"+FreeAddr(t)
	dir := t.TempDir()
	log, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(bin, "--name", "e1", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "e1="+peer, "--initial-cluster-state", "new")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	cli := NewClient(t, client)
	Eventually(t, 15*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := cli.Get(ctx, "health")
		return err == nil
	}, "etcd at %s not healthy", client)
	return client
}
