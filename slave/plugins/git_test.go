package plugins

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/stackconfig"
)

// gitRepo is a bare repository on disk and a work tree that pushes to it.
type gitRepo struct {
	t          *testing.T
	bare, work string
}

func newGitRepo(t *testing.T) *gitRepo {
	etcdtest.RequireBinary(t, "git", "git")
	dir := t.TempDir()
	r := &gitRepo{t: t, bare: filepath.Join(dir, "plugin.git"), work: filepath.Join(dir, "work")}
	r.git(dir, "init", "--quiet", "--bare", r.bare)
	r.git(dir, "clone", "--quiet", r.bare, r.work)
	return r
}

func (r *gitRepo) git(dir string, args ...string) {
	r.t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// commit writes files (name: content, executable when the name is
// "plugin") and pushes them.
func (r *gitRepo) commit(msg string, files map[string]string) {
	r.t.Helper()
	for name, content := range files {
		mode := os.FileMode(0o644)
		if name == Executable {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(r.work, name), []byte(content), mode); err != nil {
			r.t.Fatal(err)
		}
	}
	r.git(r.work, "add", "-A")
	r.git(r.work, "commit", "--quiet", "-m", msg)
	r.git(r.work, "push", "--quiet", "origin", "HEAD")
}

// A git plugin from a local bare repository: cloned at start, run from
// its clone, not updated until asked, then updated by a pull; the URL is
// the config's only.
func TestGitPlugin(t *testing.T) {
	skipShort(t)
	repo := newGitRepo(t)
	repo.commit("v1", map[string]string{Executable: "#!/bin/sh\necho 'version 1'\n"})
	noexec := newGitRepo(t)
	noexec.commit("not executable", map[string]string{"README": "no plugin here\n"})

	m, _ := startManager(t, nil, nil,
		stackconfig.Plugin{Name: "gitp", Git: "file://" + repo.bare},
		stackconfig.Plugin{Name: "empty", Git: noexec.bare})
	h := apiServer(t, m)
	waitFor(t, "clone", func() bool { return statusOf(m, "gitp").Revision != "" })
	version := func() float64 {
		t.Helper()
		res, err := m.RunNow(context.Background(), "gitp", 0, nil)
		if err != nil || res.Error != "" || len(res.Values) != 1 || res.Values[0].Name != "plugin_gitp_version" {
			t.Fatalf("run: %+v %v", res, err)
		}
		return *res.Values[0].Value
	}
	if v := version(); v != 1 {
		t.Fatalf("version %v, want 1", v)
	}
	rev1 := statusOf(m, "gitp").Revision

	repo.commit("v2", map[string]string{Executable: "#!/bin/sh\necho 'version 2'\n"})
	if v := version(); v != 1 {
		t.Fatalf("version %v before update, want 1: git plugins change only on request", v)
	}
	if code, body := call(t, h, http.MethodPost, "/api/v1/plugins/gitp/update?git=file:///tmp/evil.git"); code != 400 || !strings.Contains(body, "repository is the one in the config file") {
		t.Fatalf("update with a URL: %d %s", code, body)
	}
	code, body := call(t, h, http.MethodPost, "/api/v1/plugins/gitp/update")
	var up UpdateResult
	if code != 200 || json.Unmarshal([]byte(body), &up) != nil || up.From != rev1 || up.To == rev1 || up.To == "" {
		t.Fatalf("update: %d %s (revision before %s)", code, body, rev1)
	}
	if v := version(); v != 2 {
		t.Fatalf("version %v after update, want 2", v)
	}
	if st := statusOf(m, "gitp"); st.Revision != up.To || st.Git != "file://"+repo.bare {
		t.Fatalf("status %+v", st)
	}

	res, err := m.RunNow(context.Background(), "empty", 0, nil)
	if err != nil || !strings.Contains(res.Error, "the repository has no file named plugin at its root") {
		t.Fatalf("repository without a plugin: %+v %v", res, err)
	}
}

// A clone that fails is in the status, and a run tries again.
func TestGitCloneFailureIsReported(t *testing.T) {
	skipShort(t)
	etcdtest.RequireBinary(t, "git", "git")
	missing := filepath.Join(t.TempDir(), "missing.git")
	m, _ := startManager(t, nil, nil, stackconfig.Plugin{Name: "gone", Git: missing})
	waitFor(t, "clone error in the status", func() bool { return strings.Contains(statusOf(m, "gone").LastError, "git clone") })
	repo := newGitRepo(t)
	repo.commit("v1", map[string]string{Executable: "#!/bin/sh\necho 'up 1'\n"})
	if err := os.Rename(repo.bare, missing); err != nil {
		t.Fatal(err)
	}
	res, err := m.RunNow(context.Background(), "gone", 0, nil)
	if err != nil || res.Error != "" || res.Samples != 1 {
		t.Fatalf("run once the repository exists: %+v %v", res, err)
	}
}
