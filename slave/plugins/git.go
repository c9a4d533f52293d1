package plugins

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// gitTimeout bounds one clone or pull.
const gitTimeout = 2 * time.Minute

// gitEnv keeps git from asking for credentials on a terminal it does not
// have, and from reading the operator's global config.
var gitEnv = []string{
	"PATH=" + defaultPath, "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "HOME=/nonexistent",
	"LC_ALL=C",
}

// Executable is the file a git plugin's repository holds at its root.
const Executable = "plugin"

// git runs the system's git with args and returns its output, or an
// error with the end of it.
func (m *Manager) git(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, gitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.gitPath, args...)
	cmd.Env = gitEnv
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > stderrTail {
			msg = "..." + msg[len(msg)-stderrTail:]
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("git %s: no answer within %s", args[0], gitTimeout)
		}
		return "", fmt.Errorf("git %s: %w: %s", args[0], err, strings.ReplaceAll(msg, "\n", " | "))
	}
	return strings.TrimSpace(string(out)), nil
}

// ensureClone clones p's repository into its directory unless a clone of
// the same URL is there. The clone goes to a temporary directory first and
// is renamed into place, so a half clone never looks like a plugin.
func (m *Manager) ensureClone(ctx context.Context, p *plugin) error {
	p.gitMu.Lock()
	defer p.gitMu.Unlock()
	return m.ensureCloneLocked(ctx, p)
}

// ensureCloneLocked is ensureClone with p.gitMu held.
func (m *Manager) ensureCloneLocked(ctx context.Context, p *plugin) error {
	dir := p.repoDir
	if url, err := m.git(ctx, "-C", dir, "config", "--get", "remote.origin.url"); err == nil && url == p.cfg.Git {
		return nil
	}
	if err := os.MkdirAll(m.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("plugins dir: %w", err)
	}
	// Half clones of an agent that died while cloning.
	old, _ := filepath.Glob(filepath.Join(m.cfg.Dir, "."+p.cfg.Name+"-clone-*"))
	for _, o := range old {
		_ = os.RemoveAll(o)
	}
	tmp, err := os.MkdirTemp(m.cfg.Dir, "."+p.cfg.Name+"-clone-")
	if err != nil {
		return fmt.Errorf("plugins dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	// Readable by a plugin that runs as another user.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if _, err := m.git(ctx, "clone", "--quiet", "--", p.cfg.Git, tmp); err != nil {
		return err
	}
	// A clone of another URL (the config changed) is replaced.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	m.log.Info("git plugin cloned", "plugin", p.cfg.Name, "git", p.cfg.Git, "dir", dir)
	return nil
}

// pull updates p's clone (fast-forward only) and returns the revision
// before and after.
func (m *Manager) pull(ctx context.Context, p *plugin) (from, to string, err error) {
	p.gitMu.Lock()
	defer p.gitMu.Unlock()
	if err := m.ensureCloneLocked(ctx, p); err != nil {
		return "", "", err
	}
	from, _ = m.git(ctx, "-C", p.repoDir, "rev-parse", "--short", "HEAD")
	if _, err := m.git(ctx, "-C", p.repoDir, "pull", "--ff-only", "--quiet"); err != nil {
		return from, from, err
	}
	to, err = m.git(ctx, "-C", p.repoDir, "rev-parse", "--short", "HEAD")
	return from, to, err
}

// revision is the clone's HEAD, "" when there is none.
func (m *Manager) revision(ctx context.Context, p *plugin) string {
	rev, _ := m.git(ctx, "-C", p.repoDir, "rev-parse", "--short", "HEAD")
	return rev
}

// checkExecutable says why path cannot be run as a plugin, if it cannot.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("the repository has no file named %s at its root", filepath.Base(path))
	case err != nil:
		return err
	case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%s in the repository is not an executable file (git update-index --chmod=+x %s)", filepath.Base(path), filepath.Base(path))
	}
	return nil
}
