package dockertest

import (
	"context"
	"os"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEngineIsGoneAfterItsTest(t *testing.T) {
	var e *Engine
	t.Run("engine", func(t *testing.T) {
		e = Start(t)
		StandInImage(t, e.Client, "agentproj/standin:test")
		StandInImage(t, e.Client, "agentproj/standin:test") // kept, not imported twice
		img, err := e.Client.ImageInspect(context.Background(), "agentproj/standin:test")
		if err != nil {
			t.Fatal(err)
		}
		if len(img.Config.Entrypoint) != 1 || img.Config.Entrypoint[0] != "/entrypoint" {
			t.Fatalf("entrypoint = %v", img.Config.Entrypoint)
		}
	})
	if e == nil {
		t.Fatal("no engine")
	}
	if _, err := os.Stat(e.Dir); !os.IsNotExist(err) {
		t.Errorf("engine directory %s left behind: %v", e.Dir, err)
	}
	if err := syscall.Kill(e.cmd.Process.Pid, 0); err == nil {
		t.Errorf("dockerd (pid %d) still runs after its test", e.cmd.Process.Pid)
	}
}

func TestLibrariesOfStaticAndDynamicBinaries(t *testing.T) {
	Need(t, "busybox")
	if libs, err := libraries(BusyboxPath); err != nil || len(libs) != 0 {
		t.Fatalf("static busybox: %v, %v; want no libraries", libs, err)
	}
	libs, err := libraries("/bin/sh")
	if err != nil || len(libs) < 2 {
		t.Fatalf("/bin/sh: %v, %v; want libc and the loader", libs, err)
	}
	for _, l := range libs {
		if _, err := os.Stat(l); err != nil {
			t.Errorf("ldd listed %s: %v", l, err)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/tmp/a\040b/x`); got != "/tmp/a b/x" {
		t.Fatalf("got %q", got)
	}
}
