package plugins

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/stackconfig"
)

// A plugin with user = ... runs as that user, with its groups, and cannot
// write where only root can.
func TestRunsAsUnprivilegedUser(t *testing.T) {
	skipShort(t)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root: this test must run there")
		}
		t.Skip("running a plugin as another user needs root; run the tests as root to cover it")
	}
	name := fmt.Sprintf("agentplug%d", os.Getpid())
	if out, err := exec.Command("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir is private to root: the script lives where the user can read it.
	dir, err := os.MkdirTemp("", "plugin-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rootOnly := filepath.Join(dir, "root-only")
	if err := os.Mkdir(rootOnly, 0o755); err != nil {
		t.Fatal(err)
	}
	who := script(t, dir, "who.sh", fmt.Sprintf(`echo "uid $(id -u)"
echo "gid $(id -g)"
touch %s/x 2>/dev/null && echo "wrote 1" || echo "wrote 0"
echo "home{user=\"$USER\"} 1"
`, rootOnly))
	logs := &logbuf.Buffer{}
	m, _ := startManager(t, nil, logs,
		stackconfig.Plugin{Name: "who", Command: []string{who}, User: name},
		stackconfig.Plugin{Name: "asroot", Command: []string{who}})
	res, err := m.RunNow(context.Background(), "who", 0, nil)
	if err != nil || res.Error != "" {
		t.Fatalf("run: %+v %v", res, err)
	}
	got := map[string]float64{}
	for _, v := range res.Values {
		got[v.Name] = *v.Value
		if v.Name == "plugin_who_home" && v.Tags["user"] != name {
			t.Fatalf("USER = %q, want %q", v.Tags["user"], name)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if got["plugin_who_uid"] != float64(uid) || got["plugin_who_gid"] != float64(gid) || got["plugin_who_wrote"] != 0 {
		t.Fatalf("ran as uid %v gid %v, wrote %v; want uid %d gid %d and no write to a root-only directory", got["plugin_who_uid"], got["plugin_who_gid"], got["plugin_who_wrote"], uid, gid)
	}
	if l := logs.String(); !strings.Contains(l, `msg="plugin runs as root; set user to run it unprivileged" plugin=asroot`) || strings.Contains(l, "plugin=who") {
		t.Fatalf("want a root warning for asroot only:\n%s", logs)
	}
}
