package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/slave/samples"
	"github.com/agentproj/agent/stackconfig"
)

// Appender puts a remote-write request into the relay's queue and returns
// nil only once it is durable. *relay.Relay implements it.
type Appender interface {
	Append(ctx context.Context, wr *remotewrite.WriteRequest) error
}

// Config is what the manager needs of the agent's configuration.
type Config struct {
	Node, Cluster string
	// Dir is where git plugins are cloned (<dir>/<name>).
	Dir     string
	Plugins []stackconfig.Plugin
}

// defaultPath is the PATH of a plugin unless its env sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// appendTimeout bounds how long a scheduled run waits for the relay.
const appendTimeout = 30 * time.Second

// Errors of the API, each with its own status.
var (
	ErrUnknown  = errors.New("no such plugin")
	ErrBusy     = errors.New("plugin is already running")
	ErrDisabled = errors.New("plugin is disabled")
	ErrNotGit   = errors.New("plugin is not a git plugin")
	ErrStopped  = errors.New("plugins are not running (the agent is starting or stopping)")
)

// Manager runs the configured plugins.
type Manager struct {
	cfg     Config
	app     Appender // nil: no relay, samples are only shown
	log     *slog.Logger
	m       *metrics
	gitPath string
	plugins map[string]*plugin
	order   []string

	stateMu sync.Mutex // one saveDisabled at a time

	// pidNS: runs get a PID namespace of their own (see command.pidNS);
	// as root, until the kernel refuses one.
	pidNS atomic.Bool

	mu      sync.Mutex
	ctx     context.Context // Run's, nil outside Run
	runs    sync.WaitGroup  // runs and updates under way
	stopped bool
}

// plugin is one plugin and its state.
type plugin struct {
	cfg     stackconfig.Plugin // with defaults
	path    string             // executable
	args    []string
	repoDir string // git plugins
	cred    *syscall.Credential
	env     []string   // without PLUGIN_PARAM
	gitMu   sync.Mutex // one clone or pull at a time

	mu            sync.Mutex
	busy          string // "run" or "update" while one is under way
	disabledUntil time.Time
	last          *RunResult
	runs, fails   int64
	cloneErr      string
}

// New checks what the configuration cannot (a user other than the
// agent's needs root; git plugins need git) and prepares every plugin.
// app may be nil when the agent has no relay: runs on demand still show
// their samples, which are then not stored.
func New(cfg Config, app Appender, log *slog.Logger, reg prometheus.Registerer) (*Manager, error) {
	var m *Manager
	mt := newMetrics(func() *Manager { return m })
	m, err := build(cfg, app, log, mt)
	if err != nil {
		return nil, err
	}
	if reg != nil {
		if err := mt.register(reg); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// build is New with the metrics given, not registered: a Service's
// metrics outlive each manager it runs.
func build(cfg Config, app Appender, log *slog.Logger, mt *metrics) (*Manager, error) {
	m := &Manager{cfg: cfg, app: app, log: log, plugins: map[string]*plugin{}, m: mt}
	if err := stackconfigErrors(cfg.Plugins, app != nil); err != nil {
		return nil, err
	}
	for i, pc := range cfg.Plugins {
		pc = pc.WithDefaults()
		p := &plugin{cfg: pc}
		if pc.Git != "" {
			if m.gitPath == "" {
				path, err := exec.LookPath("git")
				if err != nil {
					return nil, fmt.Errorf("plugins[%d].git: git plugins need the git program, which is not installed (apt-get install git)", i)
				}
				m.gitPath = path
			}
			p.repoDir = filepath.Join(cfg.Dir, pc.Name)
			p.path = filepath.Join(p.repoDir, Executable)
			p.args = nil
		} else {
			p.path, p.args = pc.Command[0], pc.Command[1:]
		}
		home, err := p.credentials()
		if err != nil {
			return nil, fmt.Errorf("plugins[%d].user: %w", i, err)
		}
		if p.cred == nil && os.Geteuid() == 0 || p.cred != nil && p.cred.Uid == 0 {
			log.Warn("plugin runs as root; set user to run it unprivileged", "plugin", pc.Name)
		}
		p.env = append([]string{"PATH=" + defaultPath, "HOME=" + home}, pc.Env...)
		if pc.User != "" {
			p.env = append(p.env, "USER="+pc.User, "LOGNAME="+pc.User)
		}
		p.env = append(p.env, "PLUGIN_NAME="+pc.Name, "PLUGIN_NS="+pc.NS, "PLUGIN_NODE="+cfg.Node, "PLUGIN_CLUSTER="+cfg.Cluster)
		m.plugins[pc.Name] = p
		m.order = append(m.order, pc.Name)
	}
	m.loadDisabled(time.Now())
	m.pidNS.Store(os.Geteuid() == 0)
	mt.usePlugins(m.order)
	return m, nil
}

func stackconfigErrors(ps []stackconfig.Plugin, relay bool) error {
	return errors.Join(stackconfig.ValidatePlugins(ps, relay)...)
}

// credentials resolves the plugin's user: the credential to run as (nil:
// the agent's own) and its home directory.
func (p *plugin) credentials() (string, error) {
	if p.cfg.User == "" {
		home, _ := os.UserHomeDir()
		if home == "" {
			home = "/"
		}
		return home, nil
	}
	u, err := user.Lookup(p.cfg.User)
	if err != nil {
		return "", fmt.Errorf("no such user on this host, got %q", p.cfg.User)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return "", fmt.Errorf("user %q has no numeric uid/gid (%s/%s)", p.cfg.User, u.Uid, u.Gid)
	}
	if int(uid) == os.Geteuid() {
		return u.HomeDir, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("running a plugin as user %q needs an agent running as root (it runs as uid %d)", p.cfg.User, os.Geteuid())
	}
	var groups []uint32
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				groups = append(groups, uint32(g))
			}
		}
	}
	p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}
	return u.HomeDir, nil
}

// Run clones missing git plugins, runs the scheduled plugins every
// interval (the first run at once) until ctx ends, and returns once every
// run has ended; runs under way are killed when ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, name := range m.order {
		p := m.plugins[name]
		wg.Go(func() { m.schedule(ctx, p) })
	}
	<-ctx.Done()
	wg.Wait()
	m.mu.Lock()
	m.stopped = true
	m.ctx = nil
	m.mu.Unlock()
	m.runs.Wait()
	return nil
}

// schedule prepares one plugin and runs it every interval.
func (m *Manager) schedule(ctx context.Context, p *plugin) {
	if p.cfg.Git != "" {
		m.clone(ctx, p)
	}
	if p.cfg.Interval <= 0 {
		return
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		done, err := m.start(p, "run")
		switch {
		case errors.Is(err, ErrBusy):
			m.m.skipped.WithLabelValues(p.cfg.Name).Inc()
			m.log.Debug("scheduled run skipped: the previous run is still under way", "plugin", p.cfg.Name)
		case errors.Is(err, ErrDisabled), errors.Is(err, ErrStopped):
		case err == nil:
			res := m.run(ctx, p, runOptions{timeout: p.cfg.Timeout})
			done()
			if res.Error != "" && ctx.Err() == nil {
				m.log.Warn("plugin run failed", "plugin", p.cfg.Name, "err", res.Error, "exit_code", res.ExitCode)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// clone makes sure a git plugin has its clone, recording a failure in its
// status (a run tries again).
func (m *Manager) clone(ctx context.Context, p *plugin) {
	err := m.ensureClone(ctx, p)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cloneErr = ""
	if err != nil && ctx.Err() == nil {
		p.cloneErr = err.Error()
		m.log.Warn("git plugin clone failed", "plugin", p.cfg.Name, "git", p.cfg.Git, "err", err)
	}
}

// start marks p busy with what (run or update) if it is free, enabled (for
// a run) and the manager runs; done must be called once the work ended.
func (m *Manager) start(p *plugin, what string) (done func(), err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil {
		return nil, ErrStopped
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.busy != "" {
		return nil, fmt.Errorf("%w (%s under way)", ErrBusy, p.busy)
	}
	if what == "run" && !m.enabledLocked(p, time.Now()) {
		return nil, fmt.Errorf("%w until %s (enable it, or wait)", ErrDisabled, p.disabledUntil.Format(time.RFC3339))
	}
	p.busy = what
	m.runs.Add(1)
	return func() {
		p.mu.Lock()
		p.busy = ""
		p.mu.Unlock()
		m.runs.Done()
	}, nil
}

// enabledLocked reports whether p may run at now, enabling it again when
// its disable_max has passed. p.mu is held.
func (m *Manager) enabledLocked(p *plugin, now time.Time) bool {
	if p.disabledUntil.IsZero() {
		return true
	}
	if now.Before(p.disabledUntil) {
		return false
	}
	p.disabledUntil = time.Time{}
	m.log.Info("plugin enabled again: disable_max has passed", "plugin", p.cfg.Name, "disable_max", p.cfg.DisableMax)
	return true
}

// runOptions are what a run on demand may set.
type runOptions struct {
	timeout time.Duration
	param   string
	hasParm bool
}

// RunResult is the outcome of one run.
type RunResult struct {
	Plugin          string               `json:"plugin"`
	Started         time.Time            `json:"started"`
	DurationSeconds float64              `json:"duration_seconds"`
	ExitCode        int                  `json:"exit_code"`
	Error           string               `json:"error,omitempty"`
	Samples         int                  `json:"samples"`
	Stored          bool                 `json:"stored"` // durable in the relay's queue
	Values          []samples.JSONSample `json:"values,omitempty"`
}

// run runs p once (the caller holds it busy) and records the result.
func (m *Manager) run(ctx context.Context, p *plugin, o runOptions) *RunResult {
	start := time.Now()
	res := &RunResult{Plugin: p.cfg.Name, Started: start, ExitCode: -1}
	defer func() {
		res.DurationSeconds = time.Since(start).Seconds()
		m.record(p, res)
	}()
	if p.cfg.Git != "" {
		if err := m.ensureClone(ctx, p); err != nil {
			res.Error = err.Error()
			return res
		}
		if err := checkExecutable(p.path); err != nil {
			res.Error = err.Error()
			return res
		}
	}
	env := slices.Clone(p.env)
	env = append(env, "PLUGIN_TIMEOUT="+strconv.FormatFloat(o.timeout.Seconds(), 'f', -1, 64))
	if o.hasParm {
		env = append(env, "PLUGIN_PARAM="+o.param)
	}
	dir := "/"
	if p.repoDir != "" {
		dir = p.repoDir
	}
	c := command{path: p.path, args: p.args, dir: dir, env: env, cred: p.cred, pidNS: m.pidNS.Load()}
	out := run(ctx, c, o.timeout, MaxOutputBytes)
	if errors.Is(out.err, errNoPIDNS) && m.pidNS.CompareAndSwap(true, false) {
		m.log.Warn("plugins run without a PID namespace of their own: what a run leaves behind is found by "+RunEnv+" in its environment and killed; a process that clears its environment outlives the run", "err", out.err)
	}
	if errors.Is(out.err, errNoPIDNS) {
		c.pidNS = false
		out = run(ctx, c, o.timeout, MaxOutputBytes)
	}
	res.ExitCode = out.exitCode
	if out.err != nil {
		res.Error = out.err.Error()
		return res
	}
	parsed, err := samples.Parse(out.stdout, samples.Auto, samples.Options{
		Now:    start,
		Prefix: "plugin_" + p.cfg.Name + "_",
		Labels: map[string]string{"ns": p.cfg.NS, "node": m.cfg.Node, "cluster": m.cfg.Cluster},
	})
	if err != nil {
		res.Error = "output: " + err.Error()
		return res
	}
	res.Samples = parsed.Samples
	res.Values = parsed.JSON()
	if m.app == nil || parsed.Samples == 0 {
		return res
	}
	if err := m.appendSamples(ctx, parsed.WriteRequest()); err != nil {
		res.Error = "relay: " + err.Error()
		return res
	}
	res.Stored = true
	return res
}

// appendSamples hands wr to the relay, waiting up to appendTimeout while
// it answers 503: the first scheduled runs start beside the relay, which
// may not run yet.
func (m *Manager) appendSamples(ctx context.Context, wr *remotewrite.WriteRequest) error {
	ctx, cancel := context.WithTimeout(ctx, appendTimeout)
	defer cancel()
	for {
		err := m.app.Append(ctx, wr)
		var sc interface{ StatusCode() int }
		if err == nil || !errors.As(err, &sc) || sc.StatusCode() != http.StatusServiceUnavailable {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// record keeps res as p's last run and counts it.
func (m *Manager) record(p *plugin, res *RunResult) {
	p.mu.Lock()
	p.last = res
	p.runs++
	if res.Error != "" {
		p.fails++
	}
	p.mu.Unlock()
	result := "ok"
	switch {
	case res.Error != "" && res.ExitCode == -1 && isTimeout(res.Error):
		result = "timeout"
	case res.Error != "":
		result = "failed"
	}
	m.m.runs.WithLabelValues(p.cfg.Name, result).Inc()
	m.m.duration.WithLabelValues(p.cfg.Name).Observe(res.DurationSeconds)
}

func isTimeout(msg string) bool {
	return len(msg) > 9 && msg[:9] == "timed out"
}
