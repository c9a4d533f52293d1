package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SupervisorOptions configure a Supervisor. Owner is required; zero values
// of the others take the defaults in DefaultSupervisorOptions.
type SupervisorOptions struct {
	// Owner names the Supervisor, a DNS label ("node-stack",
	// "cluster-stack", "apps"). It is set as LabelOwner on every workload
	// and is part of the selector, so two Supervisors on one host never
	// take each other's workloads for orphans.
	Owner string
	// Selector holds further labels that mark this caller's workloads
	// (LabelNode, LabelCluster). They are set on every spec too.
	Selector map[string]string
	// Interval is the time between two reconciles without a nudge.
	Interval time.Duration
	// BackoffMin and BackoffMax bound the wait between two restarts (or
	// failed attempts) of one workload: the first restart is immediate,
	// the n-th waits BackoffMin·2^(n-2), at most BackoffMax. A workload
	// that has run for BackoffMax is forgiven its earlier restarts.
	BackoffMin, BackoffMax time.Duration
	// StopOnExit removes every workload of the Supervisor when Run's
	// context ends (the master's cluster stack on stepping down). Without
	// it they keep running (the node stack), for the next agent to adopt.
	StopOnExit bool
	// ReadyTimeout bounds the wait of a reload for a workload with a
	// readiness probe (Spec.Ready) to answer, counted from its start or
	// from the Reload, whichever is later; then it is restarted instead.
	ReadyTimeout time.Duration
	// ReloadPoll is the time between two passes while a reload waits.
	ReloadPoll time.Duration
	// StopTimeout bounds the removal on exit; zero means the longest
	// StopGrace of the desired specs plus 10s.
	StopTimeout time.Duration
	// Logger is already tagged with the component's name; nil discards.
	Logger *slog.Logger
	// Registerer takes the Supervisor's metrics, labelled owner=Owner;
	// nil registers nothing.
	Registerer prometheus.Registerer
}

// DefaultSupervisorOptions hold the defaults of the zero fields.
var DefaultSupervisorOptions = SupervisorOptions{
	Interval:   5 * time.Second,
	BackoffMin: time.Second,
	BackoffMax: time.Minute,
	// Prometheus replays its write-ahead log before it is ready; a
	// restart would replay it again.
	ReadyTimeout: 5 * time.Minute,
	ReloadPoll:   250 * time.Millisecond,
}

// Supervisor keeps one caller's desired set of workloads running through a
// Driver. Set stores the desired set and nudges Run; Run reconciles, from
// the first Set on, on every nudge and every Interval:
//  1. List the workloads that carry the selector (LabelManaged, LabelOwner,
//     Selector) and remove those no longer desired: after an agent restart
//     this adopts its own workloads and removes its orphans.
//  2. Inspect each desired workload. One that runs with the spec's hash is
//     left alone (adopted, if an earlier agent started it).
//  3. Ensure the others: create what is missing, replace what has another
//     hash, start what stopped. Starting a stopped one counts as a
//     restart and is spaced by a capped exponential backoff per workload.
//
// States reports what the last reconcile saw.
type Supervisor struct {
	driver   Driver
	opts     SupervisorOptions
	selector map[string]string
	log      *slog.Logger
	metrics  *supervisorMetrics

	nudge   chan struct{}
	handed  chan struct{} // closed by the first Set that is taken
	handOff sync.Once

	mu      sync.Mutex
	desired map[string]Spec   // guarded by mu
	reloads map[string]reload // guarded by mu; asked for, not done yet
	states  []State           // guarded by mu

	track map[string]*tracked // owned by Run
}

type tracked struct {
	hash     string    // the spec hash the backoff is about
	failures int       // consecutive restarts or failed attempts
	next     time.Time // no restart or attempt before this
	restarts int       // restarts seen: the Supervisor's and the runtime's
	lastErr  string

	// Crash loops: exits in a row after a start (not failed attempts),
	// forgiven with the failures once the workload has run for BackoffMax.
	crashes  int
	runtime  int  // the runtime's own restart count last seen (Docker's)
	exitCode int  // of the last exit seen
	exited   bool // an exit has been seen, so exitCode means something
	output   []string
	outputAt int // the crash count output was read at

	readyOf string // the instance (id@since) whose Spec.Ready probe answered
}

// NewSupervisor returns a Supervisor of driver; it does nothing until Run.
func NewSupervisor(driver Driver, opts SupervisorOptions) (*Supervisor, error) {
	if !dnsLabel.MatchString(opts.Owner) {
		return nil, fmt.Errorf("supervisor owner: must be a DNS label, got %q", opts.Owner)
	}
	d := DefaultSupervisorOptions
	if opts.Interval <= 0 {
		opts.Interval = d.Interval
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = d.BackoffMin
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(d.BackoffMax, opts.BackoffMin)
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = d.ReadyTimeout
	}
	if opts.ReloadPoll <= 0 {
		opts.ReloadPoll = d.ReloadPoll
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	selector := maps.Clone(opts.Selector)
	if selector == nil {
		selector = map[string]string{}
	}
	selector[LabelOwner] = opts.Owner
	selector[LabelManaged] = ManagedValue
	m, err := newSupervisorMetrics(opts.Registerer, opts.Owner)
	if err != nil {
		return nil, err
	}
	return &Supervisor{
		driver:   driver,
		opts:     opts,
		selector: selector,
		log:      log.With("owner", opts.Owner, "driver", driver.Name()),
		metrics:  m,
		nudge:    make(chan struct{}, 1),
		handed:   make(chan struct{}),
		desired:  map[string]Spec{},
		reloads:  map[string]reload{},
		track:    map[string]*tracked{},
	}, nil
}

// Selector returns the labels that mark this Supervisor's workloads.
func (s *Supervisor) Selector() map[string]string { return maps.Clone(s.selector) }

// Set replaces the desired set and nudges Run. Each spec gets the
// Supervisor's selector labels. An invalid set is refused whole and the
// previous one stays.
func (s *Supervisor) Set(specs []Spec) error {
	desired := make(map[string]Spec, len(specs))
	for _, spec := range specs {
		if err := spec.Validate(); err != nil {
			return err
		}
		if _, dup := desired[spec.Name]; dup {
			return fmt.Errorf("workload %q: name: desired twice", spec.Name)
		}
		spec = spec.Clone()
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		for k, v := range s.selector {
			if k == LabelManaged {
				continue
			}
			if got, ok := spec.Labels[k]; ok && got != v {
				return fmt.Errorf("workload %q: labels.%s: the supervisor's selector says %q, got %q", spec.Name, k, v, got)
			}
			spec.Labels[k] = v
		}
		desired[spec.Name] = spec
	}
	s.mu.Lock()
	s.desired = desired
	s.mu.Unlock()
	s.handOff.Do(func() { close(s.handed) })
	select {
	case s.nudge <- struct{}{}:
	default:
	}
	return nil
}

// States returns the states the last reconcile saw of the desired
// workloads, sorted by name.
func (s *Supervisor) States() []State {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]State, len(s.states))
	for i, st := range s.states {
		st.Labels = maps.Clone(st.Labels)
		out[i] = st
	}
	return out
}

// Run reconciles until ctx ends, then removes the workloads if StopOnExit
// is set. It returns nil, or the errors of that removal. It may run again
// after it returned (the cluster stack runs once per master term), but
// never twice at once. It reconciles only once a desired set has been
// Set: a pass without one would remove the workloads an earlier agent left
// running as orphans instead of adopting them.
func (s *Supervisor) Run(ctx context.Context) error {
	select {
	case <-s.handed:
	case <-ctx.Done():
		if s.opts.StopOnExit {
			return s.removeAll()
		}
		return nil
	}
	select { // the first pass sees the latest Set anyway
	case <-s.nudge:
	default:
	}
	timer := time.NewTimer(s.reconcile(ctx))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			if s.opts.StopOnExit {
				return s.removeAll()
			}
			return nil
		case <-s.nudge:
		case <-timer.C:
		}
		timer.Reset(s.reconcile(ctx))
	}
}

func (s *Supervisor) snapshot() map[string]Spec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.desired // replaced whole by Set, never modified
}

// reconcile runs one pass and returns how long to wait for the next one.
func (s *Supervisor) reconcile(ctx context.Context) time.Duration {
	s.metrics.reconciles.Inc()
	desired := s.snapshot()
	wait := s.opts.Interval

	existing, err := s.driver.List(ctx, s.selector)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("list workloads", "err", err)
	}
	for _, st := range existing {
		if _, ok := desired[st.Name]; ok {
			continue
		}
		if err := s.driver.Remove(ctx, st.Name); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("remove workload no longer desired", "name", st.Name, "err", err)
			}
			continue
		}
		s.metrics.removed.Inc()
		s.log.Info("removed workload no longer desired", "name", st.Name, "role", st.Labels[LabelRole], "id", st.ID)
	}
	for name := range s.track {
		if _, ok := desired[name]; !ok {
			delete(s.track, name)
		}
	}
	s.mu.Lock()
	for name := range s.reloads {
		if _, ok := desired[name]; !ok {
			delete(s.reloads, name)
		}
	}
	s.mu.Unlock()

	states := make([]State, 0, len(desired))
	running, looping := 0, 0
	for _, name := range slices.Sorted(maps.Keys(desired)) {
		if ctx.Err() != nil {
			return wait
		}
		st, retry := s.reconcileOne(ctx, desired[name])
		if again := s.reloadOne(ctx, desired[name], st); again > 0 && (retry <= 0 || again < retry) {
			retry = again
		}
		if st.Running() {
			running++
		}
		if st.Status == StatusCrashLooping {
			looping++
		}
		states = append(states, st)
		if retry > 0 && retry < wait {
			wait = retry
		}
	}
	s.metrics.running.Set(float64(running))
	s.metrics.crashLooping.Set(float64(looping))
	s.metrics.desired.Set(float64(len(desired)))
	s.mu.Lock()
	s.states = states
	s.mu.Unlock()
	return wait
}

// reconcileOne brings one workload in line; retry > 0 asks for another pass
// that soon (the end of a backoff).
func (s *Supervisor) reconcileOne(ctx context.Context, spec Spec) (st State, retry time.Duration) {
	tr := s.track[spec.Name]
	if tr == nil {
		tr = &tracked{}
		s.track[spec.Name] = tr
	}
	defer func() { s.report(ctx, tr, &st) }()
	role := spec.Labels[LabelRole]
	log := s.log.With("name", spec.Name, "role", role)
	now := time.Now()
	hash := spec.Hash()
	if tr.hash != hash { // a new spec gets a fresh start, not the old one's backoff
		*tr = tracked{hash: hash, restarts: tr.restarts, runtime: tr.runtime}
	}

	st, err := s.driver.Inspect(ctx, spec.Name)
	if err != nil {
		if ctx.Err() != nil {
			return State{Name: spec.Name, Driver: s.driver.Name(), Status: StatusMissing, LastError: err.Error()}, 0
		}
		log.Warn("inspect workload", "err", err)
		st = State{Name: spec.Name, Driver: s.driver.Name(), Status: StatusMissing}
	}
	// The runtime restarts by its own policy (Docker's "always") without
	// asking: each one it counted since the last look is an exit too. On
	// first sight that is its whole count, so an agent restarted in the
	// middle of a crash loop still sees one.
	if st.Restarts > tr.runtime {
		tr.restarts += st.Restarts - tr.runtime
		tr.crashes += st.Restarts - tr.runtime
	}
	tr.runtime = st.Restarts
	if st.Status == StatusExited || st.Status == StatusRestarting {
		tr.exitCode, tr.exited = st.ExitCode, true
	}
	if st.Status == StatusUnmanaged || (st.Running() && st.SpecHash == hash) {
		tr.lastErr = ""
		if st.Status == StatusRunning && !st.Since.IsZero() && now.Sub(st.Since) >= s.opts.BackoffMax {
			tr.failures, tr.crashes, tr.output, tr.outputAt = 0, 0, nil, 0
		}
		return st, 0
	}
	if wait := tr.next.Sub(now); wait > 0 {
		st.LastError = fmt.Sprintf("next start in %s (backoff after %d consecutive restarts or failures)", wait.Round(time.Millisecond), tr.failures)
		if tr.lastErr != "" {
			st.LastError = tr.lastErr + "; " + st.LastError
		}
		return st, wait
	}
	// A stopped workload with this very spec crashed or was killed; one
	// with another hash, or none at all, is new.
	restart := st.SpecHash == hash && (st.Status == StatusExited || st.Status == StatusCreated)
	if restart && st.Status == StatusExited {
		// What it wrote last says why it exited; read it before the
		// next start writes more.
		tr.output, tr.outputAt = s.tail(ctx, spec.Name), tr.crashes+1
	}
	next, err := s.driver.Ensure(ctx, spec)
	if err != nil {
		if ctx.Err() != nil {
			return st, 0
		}
		tr.failures++
		tr.next = time.Now().Add(s.backoff(tr.failures + 1)) // from the end of this attempt
		tr.lastErr = err.Error()
		s.metrics.ensureErrors.WithLabelValues(role).Inc()
		log.Error("ensure workload", "err", err, "failures", tr.failures)
		st.LastError = tr.lastErr
		return st, time.Until(tr.next)
	}
	tr.lastErr = ""
	if restart {
		tr.failures++
		tr.next = time.Now().Add(s.backoff(tr.failures + 1)) // from the end of this attempt
		tr.restarts++
		tr.crashes++
		s.metrics.restarts.WithLabelValues(role).Inc()
		log.Warn("restarted stopped workload", "exit_code", st.ExitCode, "restarts", tr.restarts, "id", next.ID,
			"last_output", strings.Join(tr.output, "\n"))
	} else {
		log.Info("started workload", "id", next.ID, "spec_hash", next.SpecHash)
	}
	return next, 0
}

// report completes the state of one workload with what the Supervisor
// knows and a single look cannot: the restart count, the last error, and
// whether it is crash-looping, with the last lines it wrote.
func (s *Supervisor) report(ctx context.Context, tr *tracked, st *State) {
	st.Restarts = tr.restarts
	if st.LastError == "" {
		st.LastError = tr.lastErr
	}
	if tr.crashes < CrashLoopThreshold || st.Status == StatusUnmanaged {
		return
	}
	st.Status = StatusCrashLooping
	if tr.outputAt != tr.crashes { // the runtime restarted it (Docker's policy)
		tr.output, tr.outputAt = s.tail(ctx, st.Name), tr.crashes
	}
	st.LastOutput = slices.Clone(tr.output)
	msg := fmt.Sprintf("exited %d times in a row", tr.crashes)
	if tr.exited && tr.exitCode >= 0 {
		msg += fmt.Sprintf(", last with exit code %d", tr.exitCode)
	}
	if line := errorLine(tr.output); line != "" {
		msg += ": " + line
	}
	if st.LastError != "" {
		msg += "; " + st.LastError
	}
	st.LastError = msg
}

// tail returns the last lines the named workload wrote, through a driver
// that can read them (OutputTailer); nil otherwise.
func (s *Supervisor) tail(ctx context.Context, name string) []string {
	tailer, ok := s.driver.(OutputTailer)
	if !ok {
		return nil
	}
	lines, err := tailer.Tail(ctx, name, OutputLines)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("read output of exited workload", "name", name, "err", err)
	}
	return lines
}

// Reload asks for sig to be sent to the named workload so that it reads a
// config that was rewritten at changedAt; Run sends it. Only a workload of
// the desired set that carries this Supervisor's labels (LabelManaged,
// LabelOwner, the selector) and runs the desired spec is signalled, and
// only through a driver that can (Signaler): whatever else listens on the
// workload's port or bears its name is never touched.
//
// A signal that lands before a program installs its handler kills it
// (otelcol installs its SIGHUP handler only once all of its pipelines have
// started). So a workload that started after changedAt is left alone (it
// read the new config when it started), one that stops or is replaced
// meanwhile too (its next start reads it), and one whose Spec.Ready probe
// has not answered yet is signalled only once it has answered at a pass
// before (ReloadPoll apart): a program that reports ready installs its
// handler at once. One that is not ready within ReadyTimeout is restarted
// instead, so that it starts over with the new config. Without a probe
// the signal goes at the next pass. Run logs what it did.
func (s *Supervisor) Reload(name string, sig syscall.Signal, changedAt time.Time) error {
	s.mu.Lock()
	_, ok := s.desired[name]
	if ok {
		r := s.reloads[name]
		r.sig = sig
		if changedAt.After(r.changedAt) {
			r.changedAt = changedAt
		}
		if r.asked.IsZero() {
			r.asked = time.Now()
		}
		s.reloads[name] = r
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("reload %q: not a desired workload", name)
	}
	select {
	case s.nudge <- struct{}{}:
	default:
	}
	return nil
}

// reload is a reload asked for and not done yet.
type reload struct {
	sig       syscall.Signal
	changedAt time.Time // the config the workload must read was written then
	asked     time.Time // when the first Reload not done yet asked for it
}

// reloadOne does or keeps the reload asked for spec's workload, whose
// state the pass has just seen; retry > 0 asks for another pass that soon.
func (s *Supervisor) reloadOne(ctx context.Context, spec Spec, st State) (retry time.Duration) {
	s.mu.Lock()
	r, ok := s.reloads[spec.Name]
	s.mu.Unlock()
	if !ok {
		return 0
	}
	done := func() {
		s.mu.Lock()
		if cur := s.reloads[spec.Name]; cur.changedAt.Equal(r.changedAt) { // else asked again meanwhile
			delete(s.reloads, spec.Name)
		}
		s.mu.Unlock()
	}
	log := s.log.With("name", spec.Name, "role", spec.Labels[LabelRole])
	if st.Status == StatusCrashLooping { // what report says; the driver says whether it runs
		var err error
		if st, err = s.driver.Inspect(ctx, spec.Name); err != nil {
			return s.opts.ReloadPoll
		}
	}
	signaler, can := s.driver.(Signaler)
	if !can || st.Status != StatusRunning || !Matches(st.Labels, s.selector) || st.SpecHash != spec.Hash() ||
		(!st.Since.IsZero() && !st.Since.Before(r.changedAt)) {
		done() // nothing to signal, or its next start reads the new config
		return 0
	}
	if spec.Ready != "" {
		tr := s.track[spec.Name]
		instance := st.ID + "@" + st.Since.String()
		if tr.readyOf != instance {
			if probe(ctx, spec.Ready) == nil {
				tr.readyOf = instance // signalled at the next pass
				return s.opts.ReloadPoll
			}
			if time.Since(later(st.Since, r.asked)) < s.opts.ReadyTimeout {
				return s.opts.ReloadPoll
			}
			done()
			if err := s.driver.Remove(ctx, spec.Name); err != nil {
				if ctx.Err() == nil {
					log.Warn("restart workload not ready for a reload", "err", err)
				}
				return 0
			}
			log.Warn("restarted workload to load its new config: not ready for a reload", "ready", spec.Ready, "ready_timeout", s.opts.ReadyTimeout, "id", st.ID)
			return s.opts.ReloadPoll // started again at the next pass
		}
	}
	done()
	if err := signaler.Signal(ctx, spec.Name, r.sig); err != nil {
		if ctx.Err() == nil {
			log.Warn("reload", "signal", r.sig.String(), "err", err)
		}
		return 0
	}
	log.Info("config reloaded", "signal", r.sig.String(), "id", st.ID)
	return 0
}

// probeClient asks readiness probes: no proxy, no connection kept.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// probe reports whether url answers 2xx within a second.
func probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// backoff is the wait before the n-th consecutive restart or attempt,
// counted from the one before: none before the first, then BackoffMin
// doubling up to BackoffMax.
func (s *Supervisor) backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := s.opts.BackoffMin
	for i := 2; i < n && d < s.opts.BackoffMax; i++ {
		d *= 2
	}
	return min(d, s.opts.BackoffMax)
}

// removeAll removes every workload of the selector, in parallel, under a
// fresh context: Run's own has ended.
func (s *Supervisor) removeAll() error {
	timeout := s.opts.StopTimeout
	if timeout <= 0 {
		longest := DefaultStopTimeout
		for _, spec := range s.snapshot() {
			longest = max(longest, spec.StopGrace())
		}
		timeout = longest + 10*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	existing, err := s.driver.List(ctx, s.selector)
	if err != nil {
		return fmt.Errorf("list workloads to stop: %w", err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, st := range existing {
		wg.Go(func() {
			if err := s.driver.Remove(ctx, st.Name); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("remove %s: %w", st.Name, err))
				mu.Unlock()
				return
			}
			s.log.Info("stopped workload", "name", st.Name, "role", st.Labels[LabelRole])
		})
	}
	wg.Wait()
	s.mu.Lock()
	s.states = nil
	s.mu.Unlock()
	return errors.Join(errs...)
}
