package plugins

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/agentproj/agent/slave"
	"github.com/agentproj/agent/stackconfig"
)

// Limits of a run on demand.
const (
	MaxRunTimeout = time.Hour
	MaxParamBytes = 4096
)

// Status is a plugin as GET /api/v1/plugins shows it.
type Status struct {
	Name            string     `json:"name"`
	Command         []string   `json:"command,omitempty"`
	Git             string     `json:"git,omitempty"`
	Revision        string     `json:"revision,omitempty"` // of the clone
	IntervalSeconds float64    `json:"interval_seconds"`   // 0: on demand only
	TimeoutSeconds  float64    `json:"timeout_seconds"`
	User            string     `json:"user,omitempty"`
	NS              string     `json:"ns"`
	Enabled         bool       `json:"enabled"`
	DisabledUntil   *time.Time `json:"disabled_until,omitempty"`
	Running         bool       `json:"running"`
	LastRun         *time.Time `json:"last_run,omitempty"`
	DurationSeconds float64    `json:"duration_seconds"`
	ExitCode        *int       `json:"exit_code,omitempty"`
	LastError       string     `json:"last_error,omitempty"`
	Samples         int        `json:"samples"`
	Runs            int64      `json:"runs"`
	Failures        int64      `json:"failures"`
}

// List is the answer of GET /api/v1/plugins.
type List struct {
	Plugins []Status `json:"plugins"`
}

// UpdateResult is the answer of POST /api/v1/plugins/<name>/update.
type UpdateResult struct {
	Plugin string `json:"plugin"`
	From   string `json:"from"`
	To     string `json:"to"`
}

// Status reports every plugin in config order.
func (m *Manager) Status(ctx context.Context) List {
	l := List{Plugins: []Status{}}
	for _, name := range m.order {
		l.Plugins = append(l.Plugins, m.status(ctx, m.plugins[name]))
	}
	return l
}

func (m *Manager) status(ctx context.Context, p *plugin) Status {
	st := Status{
		Name: p.cfg.Name, Command: p.cfg.Command, Git: p.cfg.Git, IntervalSeconds: p.cfg.Interval.Seconds(),
		TimeoutSeconds: p.cfg.Timeout.Seconds(), User: p.cfg.User, NS: p.cfg.NS,
	}
	if p.cfg.Git != "" {
		st.Revision = m.revision(ctx, p)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st.Enabled = m.enabledLocked(p, time.Now())
	if !st.Enabled {
		until := p.disabledUntil
		st.DisabledUntil = &until
	}
	st.Running = p.busy == "run"
	st.Runs, st.Failures = p.runs, p.fails
	st.LastError = p.cloneErr
	if r := p.last; r != nil {
		started, code := r.Started, r.ExitCode
		st.LastRun, st.ExitCode = &started, &code
		st.DurationSeconds, st.Samples, st.LastError = r.DurationSeconds, r.Samples, r.Error
	}
	return st
}

// RunNow runs the plugin at once with timeout (0: its own) and param (nil:
// none), and returns when it has ended. The run ends early when ctx or
// the manager's Run ends.
func (m *Manager) RunNow(ctx context.Context, name string, timeout time.Duration, param *string) (*RunResult, error) {
	p, ok := m.plugins[name]
	if !ok {
		return nil, ErrUnknown
	}
	done, err := m.start(p, "run")
	if err != nil {
		return nil, err
	}
	defer done()
	ctx, cancel := m.withRunContext(ctx)
	defer cancel()
	o := runOptions{timeout: p.cfg.Timeout}
	if timeout > 0 {
		o.timeout = timeout
	}
	if param != nil {
		o.param, o.hasParm = *param, true
	}
	return m.run(ctx, p, o), nil
}

// withRunContext ends with ctx or with the manager's Run.
func (m *Manager) withRunContext(ctx context.Context) (context.Context, context.CancelFunc) {
	m.mu.Lock()
	base := m.ctx
	m.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	if base == nil {
		cancel()
		return ctx, cancel
	}
	stop := context.AfterFunc(base, cancel)
	return ctx, func() { stop(); cancel() }
}

// Disable keeps the plugin from running (scheduled or on demand) for its
// disable_max, or until Enable. A run under way is not stopped.
func (m *Manager) Disable(name string) error {
	p, ok := m.plugins[name]
	if !ok {
		return ErrUnknown
	}
	p.mu.Lock()
	p.disabledUntil = time.Now().Add(p.cfg.DisableMax)
	until := p.disabledUntil
	p.mu.Unlock()
	m.saveDisabled()
	m.log.Info("plugin disabled", "plugin", name, "until", until.Format(time.RFC3339))
	return nil
}

// Enable lets a disabled plugin run again at once.
func (m *Manager) Enable(name string) error {
	p, ok := m.plugins[name]
	if !ok {
		return ErrUnknown
	}
	p.mu.Lock()
	was := !p.disabledUntil.IsZero()
	p.disabledUntil = time.Time{}
	p.mu.Unlock()
	if was {
		m.saveDisabled()
		m.log.Info("plugin enabled", "plugin", name)
	}
	return nil
}

// Update pulls a git plugin's repository (fast-forward only), cloning it
// if it is missing. The URL is the config file's, never the caller's.
func (m *Manager) Update(ctx context.Context, name string) (*UpdateResult, error) {
	p, ok := m.plugins[name]
	if !ok {
		return nil, ErrUnknown
	}
	if p.cfg.Git == "" {
		return nil, ErrNotGit
	}
	done, err := m.start(p, "update")
	if err != nil {
		return nil, err
	}
	defer done()
	ctx, cancel := m.withRunContext(ctx)
	defer cancel()
	from, to, err := m.pull(ctx, p)
	if err != nil {
		return nil, &gitError{err}
	}
	m.clone(ctx, p) // clears a clone error of the status
	m.log.Info("git plugin updated", "plugin", name, "from", from, "to", to)
	return &UpdateResult{Plugin: name, From: from, To: to}, nil
}

type gitError struct{ error }

func (e *gitError) Unwrap() error { return e.error }

// Routes are the plugin API's handlers by ServeMux pattern; the caller
// guards them with the API token.
func (m *Manager) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /api/v1/plugins":                 http.HandlerFunc(m.handleList),
		"GET /api/v1/plugins/{name}":          http.HandlerFunc(m.handleGet),
		"POST /api/v1/plugins/{name}/run":     http.HandlerFunc(m.handleRun),
		"POST /api/v1/plugins/{name}/enable":  http.HandlerFunc(m.handleEnable),
		"POST /api/v1/plugins/{name}/disable": http.HandlerFunc(m.handleDisable),
		"POST /api/v1/plugins/{name}/update":  http.HandlerFunc(m.handleUpdate),
		// Anything else under the prefix: a JSON 404 or 405, not the
		// mux's plain text.
		"/api/v1/plugins/": http.HandlerFunc(handleOther),
		"/api/v1/plugins":  http.HandlerFunc(handleOther),
	}
}

func (m *Manager) handleList(w http.ResponseWriter, r *http.Request) {
	slave.WriteJSON(w, http.StatusOK, m.Status(r.Context()))
}

// lookup returns the plugin named in the path, or answers 400/404.
func (m *Manager) lookup(w http.ResponseWriter, r *http.Request) (*plugin, bool) {
	name := r.PathValue("name")
	if !stackconfig.ValidPluginName(name) {
		slave.WriteError(w, http.StatusBadRequest, fmt.Sprintf("plugin name: must be %s, got %q", stackconfig.PluginNameRule, name))
		return nil, false
	}
	p, ok := m.plugins[name]
	if !ok {
		slave.WriteError(w, http.StatusNotFound, fmt.Sprintf("no plugin named %q on this agent", name))
		return nil, false
	}
	return p, true
}

func (m *Manager) handleGet(w http.ResponseWriter, r *http.Request) {
	if p, ok := m.lookup(w, r); ok {
		slave.WriteJSON(w, http.StatusOK, m.status(r.Context(), p))
	}
}

func (m *Manager) handleRun(w http.ResponseWriter, r *http.Request) {
	p, ok := m.lookup(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	for k := range q {
		if k != "timeout" && k != "param" {
			slave.WriteError(w, http.StatusBadRequest, fmt.Sprintf("unknown query parameter %q: only timeout and param are taken", k))
			return
		}
	}
	var timeout time.Duration
	if s := q.Get("timeout"); s != "" {
		d, err := parseTimeout(s)
		if err != nil {
			slave.WriteError(w, http.StatusBadRequest, "timeout: "+err.Error())
			return
		}
		timeout = d
	}
	var param *string
	if vs, ok := q["param"]; ok {
		if len(vs) != 1 {
			slave.WriteError(w, http.StatusBadRequest, "param: give it once")
			return
		}
		if err := checkParam(vs[0]); err != nil {
			slave.WriteError(w, http.StatusBadRequest, "param: "+err.Error())
			return
		}
		param = &vs[0]
	}
	res, err := m.RunNow(r.Context(), p.cfg.Name, timeout, param)
	if err != nil {
		writeErr(w, p.cfg.Name, err)
		return
	}
	code := http.StatusOK
	if res.Error != "" {
		code = http.StatusBadGateway // the plugin failed, not the request
	}
	slave.WriteJSON(w, code, res)
}

func (m *Manager) handleEnable(w http.ResponseWriter, r *http.Request) {
	if p, ok := m.lookup(w, r); ok {
		_ = m.Enable(p.cfg.Name)
		slave.WriteJSON(w, http.StatusOK, m.status(r.Context(), p))
	}
}

func (m *Manager) handleDisable(w http.ResponseWriter, r *http.Request) {
	if p, ok := m.lookup(w, r); ok {
		_ = m.Disable(p.cfg.Name)
		slave.WriteJSON(w, http.StatusOK, m.status(r.Context(), p))
	}
}

func (m *Manager) handleUpdate(w http.ResponseWriter, r *http.Request) {
	p, ok := m.lookup(w, r)
	if !ok {
		return
	}
	if len(r.URL.Query()) > 0 {
		// Above all, no URL: the repository is the config file's.
		slave.WriteError(w, http.StatusBadRequest, "update takes no parameters: the repository is the one in the config file")
		return
	}
	res, err := m.Update(r.Context(), p.cfg.Name)
	if err != nil {
		writeErr(w, p.cfg.Name, err)
		return
	}
	slave.WriteJSON(w, http.StatusOK, res)
}

func handleOther(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/v1/plugins"), "/")
	switch {
	case len(parts) <= 2 && r.Method != http.MethodGet:
		w.Header().Set("Allow", http.MethodGet)
		slave.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s: use GET", r.Method, r.URL.Path))
		return
	case len(parts) == 3 && strings.Contains(" run enable disable update ", " "+parts[2]+" ") && r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		slave.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s: use POST", r.Method, r.URL.Path))
		return
	}
	slave.WriteError(w, http.StatusNotFound, fmt.Sprintf("%s %s: no such endpoint; see GET /api/v1/plugins and POST /api/v1/plugins/<name>/{run,enable,disable,update}", r.Method, r.URL.Path))
}

// writeErr answers an error of the Manager with its status.
func writeErr(w http.ResponseWriter, name string, err error) {
	var ge *gitError
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrUnknown):
		code = http.StatusNotFound
	case errors.Is(err, ErrBusy), errors.Is(err, ErrDisabled):
		code = http.StatusConflict
	case errors.Is(err, ErrNotGit):
		code = http.StatusBadRequest
	case errors.Is(err, ErrStopped):
		code = http.StatusServiceUnavailable
	case errors.As(err, &ge):
		code = http.StatusBadGateway
	}
	slave.WriteError(w, code, fmt.Sprintf("plugin %s: %v", name, err))
}

// parseTimeout reads a run's timeout: a Go duration ("30s") or seconds.
func parseTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return 0, fmt.Errorf("want a duration like 30s or a number of seconds, got %q", s)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d <= 0 || d > MaxRunTimeout {
		return 0, fmt.Errorf("must be > 0 and at most %s, got %q", MaxRunTimeout, s)
	}
	return d, nil
}

// checkParam refuses what cannot travel in an environment variable, or
// should not: NUL and other control characters, invalid UTF-8, size.
func checkParam(s string) error {
	switch {
	case len(s) > MaxParamBytes:
		return fmt.Errorf("at most %d bytes, got %d", MaxParamBytes, len(s))
	case !utf8.ValidString(s):
		return fmt.Errorf("must be UTF-8")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) && r != '\t' }):
		return fmt.Errorf("must not contain control characters, got %q", s)
	}
	return nil
}
