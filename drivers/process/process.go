package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentproj/agent/drivers/workload"
)

// DriverName is State.Driver of this driver.
const DriverName = "process"

// defaultPath is PATH when Spec.Env sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// killWait bounds the wait for a process to go after SIGKILL.
const killWait = 5 * time.Second

// pollEvery is how often the liveness of an adopted process is checked
// while waiting for it to stop.
const pollEvery = 20 * time.Millisecond

// Driver runs workloads as child processes, with their files in one
// directory. It is safe for concurrent use.
type Driver struct {
	dir string
	log *slog.Logger

	mu    sync.Mutex
	procs map[string]*proc // guarded by mu; known workloads, started or adopted
}

// Option configures a Driver.
type Option func(*Driver)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(d *Driver) { d.log = l } }

// New returns a driver that keeps its workloads' files in dir, creating it.
// It adopts nothing yet: each workload is adopted from its files when first
// asked about.
func New(dir string, opts ...Option) (*Driver, error) {
	if dir == "" {
		return nil, errors.New("process: directory: must be set")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("process: create directory: %w", err)
	}
	d := &Driver{dir: dir, log: slog.New(slog.DiscardHandler), procs: map[string]*proc{}}
	for _, o := range opts {
		o(d)
	}
	return d, nil
}

// Dir is the directory of the workloads' files.
func (d *Driver) Dir() string { return d.dir }

// LogPath is the file that takes the named workload's stdout and stderr.
func (d *Driver) LogPath(name string) string { return filepath.Join(d.dir, name+".log") }

func (d *Driver) pidPath(name string) string   { return filepath.Join(d.dir, name+".pid") }
func (d *Driver) statePath(name string) string { return filepath.Join(d.dir, name+".json") }

// Name implements workload.Driver.
func (d *Driver) Name() string { return DriverName }

// record is <name>.json: what an agent needs to adopt the process later.
type record struct {
	Name       string            `json:"name"`
	Binary     string            `json:"binary"` // resolved path, argv[0]
	Args       []string          `json:"args,omitempty"`
	PID        int               `json:"pid"`
	StartTicks uint64            `json:"start_ticks"` // /proc/<pid>/stat starttime
	Started    time.Time         `json:"started"`
	SpecHash   string            `json:"spec_hash"`
	Labels     map[string]string `json:"labels,omitempty"`
	StopGrace  time.Duration     `json:"stop_timeout"`
	Exited     time.Time         `json:"exited,omitzero"`
	ExitCode   *int              `json:"exit_code,omitempty"`
}

// proc is one known workload.
type proc struct {
	rec record
	// done is closed once a child has been reaped; nil for a process
	// adopted from an earlier agent (not our child: polled in /proc).
	done     chan struct{}
	exitCode int         // set before done is closed
	exited   time.Time   // set before done is closed
	stopping atomic.Bool // the driver is stopping it: its exit is no news
}

func (p *proc) running() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return false
		default:
			return true
		}
	}
	if !p.rec.Exited.IsZero() {
		return false
	}
	if p.rec.StartTicks == 0 { // no start time to tell a reused pid
		return alive(p.rec.PID, 0, p.rec.Binary)
	}
	return exists(p.rec.PID, p.rec.StartTicks) // identity was checked on adoption
}

func (p *proc) state() workload.State {
	st := workload.State{
		Name:     p.rec.Name,
		Driver:   DriverName,
		Binary:   p.rec.Binary,
		ID:       strconv.Itoa(p.rec.PID),
		Labels:   maps.Clone(p.rec.Labels),
		SpecHash: p.rec.SpecHash,
	}
	switch {
	case p.running():
		st.Status = workload.StatusRunning
		st.Since = p.rec.Started
	case p.done != nil:
		st.Status = workload.StatusExited
		st.Since = p.exited
		st.ExitCode = p.exitCode
	default:
		st.Status = workload.StatusExited
		st.Since = p.rec.Exited
		st.ExitCode = -1
		if p.rec.ExitCode != nil {
			st.ExitCode = *p.rec.ExitCode
		} else {
			st.LastError = "exit code unknown: the process was started by an earlier agent"
		}
	}
	return st
}

// lookup returns the known workload, adopting it from its files if this
// driver has not seen it yet; nil when there is none. d.mu must be held.
func (d *Driver) lookup(name string) (*proc, error) {
	if p := d.procs[name]; p != nil {
		return p, nil
	}
	b, err := os.ReadFile(d.statePath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("process: read state of %q: %w", name, err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("process: parse %s: %w", d.statePath(name), err)
	}
	if rec.Name != name {
		return nil, fmt.Errorf("process: %s names %q", d.statePath(name), rec.Name)
	}
	// The pid file wins over the record when they disagree: it is what
	// operators read and edit.
	if pb, err := os.ReadFile(d.pidPath(name)); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(pb))); err == nil && pid != rec.PID {
			rec.PID, rec.StartTicks = pid, 0
		}
	}
	p := &proc{rec: rec}
	if rec.Exited.IsZero() && !alive(rec.PID, rec.StartTicks, rec.Binary) {
		// Died while no agent watched, or the pid now belongs to another
		// process: treat as exited, never signal it.
		p.rec.Exited = time.Now()
	} else if rec.Exited.IsZero() {
		d.log.Info("adopted process", "name", name, "pid", rec.PID, "binary", rec.Binary)
	}
	d.procs[name] = p
	return p, nil
}

// Ensure implements workload.Driver.
func (d *Driver) Ensure(ctx context.Context, spec workload.Spec) (workload.State, error) {
	if err := spec.Validate(); err != nil {
		return workload.State{}, fmt.Errorf("process: %w", err)
	}
	bin, err := resolveBinary(spec)
	if err != nil {
		return workload.State{}, err
	}
	hash := spec.Hash()
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.lookup(spec.Name)
	if err != nil {
		return workload.State{}, err
	}
	if p != nil {
		if !workload.IsManaged(p.rec.Labels) {
			return p.state(), fmt.Errorf("process: %q: %w", spec.Name, workload.ErrNotManaged)
		}
		if p.running() {
			if p.rec.SpecHash == hash {
				return p.state(), nil
			}
			d.log.Info("replacing process: spec changed", "name", spec.Name, "pid", p.rec.PID, "old_hash", p.rec.SpecHash, "new_hash", hash)
			if err := d.stop(ctx, p); err != nil {
				return p.state(), err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return workload.State{}, fmt.Errorf("process: start %q: %w", spec.Name, err)
	}
	p, err = d.start(spec, bin, hash)
	if err != nil {
		return workload.State{}, err
	}
	return p.state(), nil
}

// resolveBinary checks that spec.Binary names an executable and returns
// its path.
func resolveBinary(spec workload.Spec) (string, error) {
	if spec.Binary == "" {
		return "", fmt.Errorf("process: workload %q: binary: must be set for the process driver", spec.Name)
	}
	bin, err := exec.LookPath(spec.Binary)
	if err != nil {
		return "", fmt.Errorf("process: workload %q: binary: %q is not an executable file: %w", spec.Name, spec.Binary, err)
	}
	if !filepath.IsAbs(bin) {
		if bin, err = filepath.Abs(bin); err != nil {
			return "", fmt.Errorf("process: workload %q: binary %q: %w", spec.Name, spec.Binary, err)
		}
	}
	return bin, nil
}

// start starts a new child for spec. d.mu must be held.
func (d *Driver) start(spec workload.Spec, bin, hash string) (*proc, error) {
	logf, err := os.OpenFile(d.LogPath(spec.Name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("process: open log of %q: %w", spec.Name, err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, spec.Args...)
	cmd.Dir = d.dir
	cmd.Env = environ(spec.Env)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	started := time.Now()
	fmt.Fprintf(logf, startMarker+"starting %s %s at %s\n", bin, strings.Join(spec.Args, " "), started.UTC().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("process: start %q (%s): %w", spec.Name, bin, err)
	}
	pid := cmd.Process.Pid
	var ticks uint64
	if st, err := readStat(pid); err == nil {
		ticks = st.startTicks
	}
	p := &proc{
		rec: record{
			Name:       spec.Name,
			Binary:     bin,
			Args:       slices.Clone(spec.Args),
			PID:        pid,
			StartTicks: ticks,
			Started:    started,
			SpecHash:   hash,
			Labels:     workload.DriverLabels(spec.Labels, hash),
			StopGrace:  spec.StopGrace(),
		},
		done: make(chan struct{}),
	}
	d.procs[spec.Name] = p
	go d.wait(cmd, p)
	if err := d.writeFiles(p.rec); err != nil {
		// Without its files the process could not be adopted later: do
		// not leave it running.
		_ = killGroup(pid, syscall.SIGKILL)
		<-p.done
		delete(d.procs, spec.Name)
		return nil, err
	}
	d.log.Info("started process", "name", spec.Name, "pid", pid, "binary", bin)
	return p, nil
}

// wait reaps the child and records how it ended.
func (d *Driver) wait(cmd *exec.Cmd, p *proc) {
	err := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal()) // as shells and Docker report it
		}
	default:
		code = -1
	}
	p.exitCode, p.exited = code, time.Now()
	// Logged before done is closed: a Remove waiting for it logs after,
	// and may have deleted the process's files by the time the lock below
	// is taken.
	if p.stopping.Load() {
		d.log.Info("process stopped", "name", p.rec.Name, "pid", p.rec.PID, "exit_code", code)
	} else {
		d.log.Warn("process exited", "name", p.rec.Name, "pid", p.rec.PID, "exit_code", code)
	}
	close(p.done)

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.procs[p.rec.Name] != p {
		return // removed or replaced meanwhile: its files are not ours
	}
	p.rec.Exited, p.rec.ExitCode = p.exited, &code
	if err := d.recordExit(p.rec); err != nil {
		d.log.Warn("record process exit", "name", p.rec.Name, "err", err)
	}
}

func environ(env map[string]string) []string {
	out := make([]string, 0, len(env)+1)
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	if _, ok := env["PATH"]; !ok {
		out = append(out, "PATH="+defaultPath)
	}
	return out
}

// lockFiles takes the directory's lock (an flock on <dir>/.lock), which
// every change to the workloads' files holds: another driver on the same
// directory (the next agent, or a second driver in a test) never sees a
// half-made change, and a removal is never undone by a late write.
func (d *Driver) lockFiles() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(d.dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("process: lock %s: %w", d.dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("process: lock %s: %w", d.dir, err)
	}
	return func() { f.Close() }, nil // closing drops the lock
}

// writeFiles writes <name>.pid and <name>.json, each renamed into place,
// the pid file first: should the agent die between the two, the pid file,
// which wins over the record (lookup), names the newest process.
func (d *Driver) writeFiles(rec record) error {
	unlock, err := d.lockFiles()
	if err != nil {
		return err
	}
	defer unlock()
	return d.writeFilesLocked(rec)
}

func (d *Driver) writeFilesLocked(rec record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("process: encode state of %q: %w", rec.Name, err)
	}
	if err := writeAtomic(d.pidPath(rec.Name), []byte(strconv.Itoa(rec.PID)+"\n")); err != nil {
		return fmt.Errorf("process: write pid file of %q: %w", rec.Name, err)
	}
	if err := writeAtomic(d.statePath(rec.Name), append(b, '\n')); err != nil {
		return fmt.Errorf("process: write state of %q: %w", rec.Name, err)
	}
	return nil
}

// recordExit writes the exit of rec's process into its files, unless they
// are gone or name another process: then another driver on the directory
// removed or replaced the workload, and writing would bring back files it
// removed.
func (d *Driver) recordExit(rec record) error {
	unlock, err := d.lockFiles()
	if err != nil {
		return err
	}
	defer unlock()
	b, err := os.ReadFile(d.statePath(rec.Name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("process: read state of %q: %w", rec.Name, err)
	}
	var onDisk record
	if json.Unmarshal(b, &onDisk) != nil || onDisk.PID != rec.PID || onDisk.StartTicks != rec.StartTicks {
		return nil
	}
	return d.writeFilesLocked(rec)
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// stop stops p gracefully: SIGTERM to its group, SIGKILL after its stop
// timeout. It returns once the process is gone.
func (d *Driver) stop(ctx context.Context, p *proc) error {
	if !p.running() {
		return nil
	}
	pid := p.rec.PID
	p.stopping.Store(true)
	if err := killGroup(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("process: stop %q: %w", p.rec.Name, err)
	}
	grace := p.rec.StopGrace
	if grace <= 0 {
		grace = workload.DefaultStopTimeout
	}
	if d.waitGone(ctx, p, grace) {
		return nil
	}
	d.log.Warn("process ignored SIGTERM: killing it", "name", p.rec.Name, "pid", pid, "stop_timeout", grace)
	if err := killGroup(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("process: kill %q: %w", p.rec.Name, err)
	}
	if d.waitGone(context.WithoutCancel(ctx), p, killWait) {
		return nil
	}
	return fmt.Errorf("process: %q (pid %d) still runs %s after SIGKILL", p.rec.Name, pid, killWait)
}

// waitGone waits up to timeout for p to stop; it reports whether it did.
// A cancelled ctx ends the wait early, as a timeout.
func (d *Driver) waitGone(ctx context.Context, p *proc, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	if p.done != nil {
		select {
		case <-p.done:
			return true
		case <-timer.C:
		case <-ctx.Done():
		}
		return false
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for p.running() {
		select {
		case <-tick.C:
		case <-timer.C:
			return !p.running()
		case <-ctx.Done():
			return !p.running()
		}
	}
	return true
}

// Inspect implements workload.Driver.
func (d *Driver) Inspect(_ context.Context, name string) (workload.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.lookup(name)
	if err != nil {
		return workload.State{}, err
	}
	if p == nil {
		return workload.State{Name: name, Driver: DriverName, Status: workload.StatusMissing}, nil
	}
	return p.state(), nil
}

// Remove implements workload.Driver. It keeps the log file.
func (d *Driver) Remove(ctx context.Context, name string) error {
	d.mu.Lock()
	p, err := d.lookup(name)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if p == nil {
		return nil
	}
	if !workload.IsManaged(p.rec.Labels) {
		return fmt.Errorf("process: remove %q: %w", name, workload.ErrNotManaged)
	}
	if err := d.stop(ctx, p); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.procs[name] != p {
		return nil // replaced meanwhile: the new one is not ours to remove
	}
	delete(d.procs, name)
	unlock, err := d.lockFiles()
	if err != nil {
		return err
	}
	defer unlock()
	for _, f := range []string{d.statePath(name), d.pidPath(name)} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("process: remove %q: %w", name, err)
		}
	}
	d.log.Info("removed process", "name", name, "pid", p.rec.PID)
	return nil
}

// List implements workload.Driver: the workloads with a state file in the
// directory.
func (d *Driver) List(_ context.Context, selector map[string]string) ([]workload.State, error) {
	files, err := filepath.Glob(filepath.Join(d.dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("process: list: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []workload.State
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		p, err := d.lookup(name)
		if err != nil {
			d.log.Warn("skip unreadable workload state", "name", name, "err", err)
			continue
		}
		if p == nil || !workload.IsManaged(p.rec.Labels) || !workload.Matches(p.rec.Labels, selector) {
			continue
		}
		out = append(out, p.state())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Signal implements workload.Signaler: sig goes to the main process only.
func (d *Driver) Signal(_ context.Context, name string, sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.lookup(name)
	if err != nil {
		return err
	}
	if p != nil && !workload.IsManaged(p.rec.Labels) {
		return fmt.Errorf("process: signal %s to %q: %w", sig, name, workload.ErrNotManaged)
	}
	if p == nil || !p.running() {
		return fmt.Errorf("process: signal %s to %q: not running", sig, name)
	}
	if err := syscall.Kill(p.rec.PID, sig); err != nil {
		return fmt.Errorf("process: signal %s to %q (pid %d): %w", sig, name, p.rec.PID, err)
	}
	return nil
}

// tailBytes is how much of the end of a log file Tail reads: enough for
// OutputLines lines of MaxOutputLine bytes, and markers between them.
const tailBytes = 64 << 10

// startMarker begins the line the driver writes into a log at each start.
const startMarker = "--- agent: "

// Tail implements workload.OutputTailer: the last lines of the workload's
// log file, without the driver's start markers.
func (d *Driver) Tail(_ context.Context, name string, lines int) ([]string, error) {
	f, err := os.Open(d.LogPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("process: read log of %q: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("process: read log of %q: %w", name, err)
	}
	off := max(fi.Size()-tailBytes, 0)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("process: read log of %q: %w", name, err)
	}
	if off > 0 { // the first line is cut: drop it
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	var kept []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, startMarker) {
			kept = append(kept, line)
		}
	}
	return workload.LastLines(strings.Join(kept, "\n"), lines), nil
}

var (
	_ workload.Driver       = (*Driver)(nil)
	_ workload.Signaler     = (*Driver)(nil)
	_ workload.OutputTailer = (*Driver)(nil)
)
