package plugins

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MaxOutputBytes bounds what one run may print on stdout; a plugin that
// prints more is killed and its run fails.
const MaxOutputBytes = 1 << 20

// stderrTail is how much of the end of stderr a failed run reports.
const stderrTail = 512

// command is one process to run.
type command struct {
	path string
	args []string
	dir  string
	env  []string
	cred *syscall.Credential // nil: as the agent
	// pidNS runs it as the first process of a PID namespace of its own:
	// when it exits, the kernel kills every process it left, those that
	// left its process group (setsid, daemons) too. Needs CAP_SYS_ADMIN.
	// Without it, the run carries RunEnv in its environment, and the
	// processes that still carry it when the run ends are killed.
	pidNS bool
}

// RunEnv is set to an id of its own in the environment of each run
// that has no PID namespace (the agent is not root): the processes a run
// left behind, daemons that left its process group too, are the ones whose
// environment still holds it, and are killed when the run ends.
const RunEnv = "AGENT_PLUGIN_RUN"

// outcome is how a process ended.
type outcome struct {
	stdout   []byte
	stderr   string // its last stderrTail bytes
	exitCode int    // -1: killed, or never started
	err      error  // nil: exit status 0 within the limits
}

// run runs c until it exits, timeout passes, its stdout passes maxOut
// bytes or ctx ends; in the last three cases it kills the process group.
// Whatever is left of the group when the process exits is killed too, so
// a run never leaves processes behind (with c.pidNS, not even ones that
// left the group with setsid).
func run(ctx context.Context, c command, timeout time.Duration, maxOut int) outcome {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	tctx, tcancel := context.WithTimeoutCause(ctx, timeout, errTimeout)
	defer tcancel()

	cmd := exec.CommandContext(tctx, c.path, c.args...)
	cmd.Dir = c.dir
	cmd.Env = c.env
	var mark string // RunEnv=<id>, without a PID namespace
	if !c.pidNS {
		mark = RunEnv + "=" + runID()
		cmd.Env = append(slices.Clone(c.env), mark)
	}
	// Pdeathsig: a plugin does not outlive an agent killed with -9 (its
	// own children may; a clean stop kills the whole group).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred, Pdeathsig: syscall.SIGKILL}
	if c.pidNS {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
	}
	stdout := &capped{max: maxOut, full: func() { cancel(errTooMuch) }}
	stderr := &tail{max: stderrTail}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A child that keeps stdout open after the plugin exited would hold
	// Wait: give it a moment, then close the pipes (and kill it below).
	cmd.WaitDelay = time.Second

	err := cmd.Start()
	if err != nil {
		if u := errors.Unwrap(err); u != nil {
			err = u
		}
		if c.pidNS && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)) {
			return outcome{exitCode: -1, err: fmt.Errorf("%w: %w", errNoPIDNS, err)}
		}
		return outcome{exitCode: -1, err: fmt.Errorf("start %s: %w", c.path, err)}
	}
	err = cmd.Wait()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if mark != "" {
		killMarked("/proc", mark)
	}
	o := outcome{stdout: stdout.bytes(), stderr: stderr.String(), exitCode: cmd.ProcessState.ExitCode()}
	switch cause := context.Cause(tctx); {
	case errors.Is(cause, errTimeout):
		o.err = fmt.Errorf("timed out after %s: killed with its process group", timeout)
	case errors.Is(cause, errTooMuch):
		o.err = fmt.Errorf("printed more than %d bytes: killed with its process group", maxOut)
	case cause != nil:
		o.err = fmt.Errorf("stopped: %w", cause)
	case err != nil && o.exitCode != 0:
		o.err = fmt.Errorf("%v%s", strings.TrimPrefix(err.Error(), "exec: "), stderrSuffix(o.stderr))
	case errors.Is(err, exec.ErrWaitDelay):
		// Exit status 0, and a child kept stdout open: the output is what
		// was read until the pipes were closed.
	}
	return o
}

// runID is a random id for RunEnv.
func runID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// killMarked kills every process under procRoot whose environment holds
// mark (RunEnv=<id>), again while a pass finds one (a process may fork
// while it is being killed), at most 10 passes. Processes it may not read
// (another user's) are not the run's: it runs as the agent's user.
func killMarked(procRoot, mark string) {
	want := []byte(mark + "\x00")
	for range 10 {
		entries, err := os.ReadDir(procRoot)
		if err != nil {
			return
		}
		found := false
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			env, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "environ"))
			if err != nil || !slices.ContainsFunc(bytes.SplitAfter(env, []byte{0}), func(v []byte) bool { return bytes.Equal(v, want) }) {
				continue
			}
			found = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if !found {
			return
		}
	}
}

var (
	errTimeout = errors.New("timeout")
	errTooMuch = errors.New("too much output")
	errNoPIDNS = errors.New("no PID namespace")
)

func stderrSuffix(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return ": " + strings.ReplaceAll(s, "\n", " | ")
}

// capped keeps up to max bytes; past that it calls full once and drops
// the rest (the process is being killed).
type capped struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	max  int
	over bool
	full func()
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.over {
		return len(p), nil
	}
	if c.buf.Len()+len(p) > c.max {
		c.over = true
		c.full()
		return len(p), nil
	}
	return c.buf.Write(p)
}

func (c *capped) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Bytes()
}

// tail keeps the last max bytes written.
type tail struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
