package releases

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/helm"
	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/master"
	"github.com/agentproj/agent/slave/apps"
	"github.com/agentproj/agent/slave/reload"
	"github.com/agentproj/agent/stackconfig"
)

// Owner is the LabelOwner value of everything this duty installs; with
// the cluster label it says which releases and namespaces are the
// master's to remove.
const Owner = "releases"

// AppRelease is the name of an app's release in its guid's namespace.
const AppRelease = "agent-app"

// Stamp labels: the term of the master that last wrote a release.
const (
	LabelTerm        = workload.LabelPrefix + "term"
	LabelEtcdCluster = workload.LabelPrefix + "etcd-cluster"
)

// ErrStaleTerm is returned when a release carries the stamp of a later
// term of the same etcd: a newer master wrote it, so this one has lost
// its term even if etcd has not said so yet. It ends the term.
var ErrStaleTerm = errors.New("releases: a later master's term wrote this release")

//go:embed all:appchart
var appChartFS embed.FS

// Driver is what the duty needs of the helm driver; *helm.Client is one.
type Driver interface {
	LoadChart(ctx context.Context, ref helm.ChartRef) (helm.Chart, error)
	Ensure(ctx context.Context, r helm.Release, guard helm.Guard) (state.Release, error)
	Uninstall(ctx context.Context, namespace, name string, guard helm.Guard) error
	List(ctx context.Context, selector map[string]string) ([]state.Release, error)
	EnsureNamespace(ctx context.Context, name string, labels map[string]string) (state.Namespace, error)
	DeleteNamespace(ctx context.Context, name string) error
	Namespaces(ctx context.Context, selector map[string]string) ([]state.Namespace, error)
}

// Config configures the duty.
type Config struct {
	Node, Cluster string
	Keys          etcd.Keys
	// Helm is stack.helm with its namespace resolved.
	Helm stackconfig.Helm
	// Values is what the agent's own values are rendered from.
	Values Input
	// AllowedImages is api.allowed_images: an app by image outside it is
	// not installed, whoever wrote its record.
	AllowedImages []string
	// Interval is how often every release is checked again (and orphans
	// looked for) besides the changes the duty sees; default 30s.
	Interval time.Duration
	// BackoffMin and BackoffMax space the retries of a failed release:
	// min·2^(n-1), capped; defaults 1s and 1m.
	BackoffMin, BackoffMax time.Duration
}

// Duty installs, upgrades, adopts and uninstalls the cluster's releases
// for one term (see the package doc).
type Duty struct {
	cli    *clientv3.Client
	cfg    Config
	drv    Driver
	log    *slog.Logger
	m      *metrics
	policy apps.ImagePolicy // owned by Run
	// allowed is a reloaded api.allowed_images, and values a reloaded
	// Config.Values, for Run to take.
	allowed *reload.Pending[[]string]
	values  *reload.Pending[Input]

	running atomic.Bool
	mu      sync.Mutex
	status  state.Report
}

// New returns the duty; cli is watched for apps/.
func New(cli *clientv3.Client, cfg Config, drv Driver, log *slog.Logger, reg prometheus.Registerer) *Duty {
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = time.Minute
	}
	if cfg.Helm.Timeout <= 0 {
		cfg.Helm.Timeout = 5 * time.Minute
	}
	return &Duty{
		cli: cli, cfg: cfg, drv: drv, log: log, m: newMetrics(reg),
		policy: apps.ImagePolicy(cfg.AllowedImages), allowed: reload.NewPending[[]string](),
		values: reload.NewPending[Input](),
	}
}

// SetValues applies a reloaded config to the releases' values (Prometheus
// settings, the manager's URLs, the trace collector's queue): the releases
// whose values change are upgraded, in a running term at once, else when
// the next begins. A traces endpoint set or unset installs or uninstalls
// the trace collectors.
func (d *Duty) SetValues(in Input) { d.values.Set(in) }

// SetAllowedImages applies a reloaded api.allowed_images: every app record
// is checked again (now, in a running term; else when the next begins), so
// an app it now allows is installed and one it no longer allows is
// uninstalled and reported as refused.
func (d *Duty) SetAllowedImages(patterns []string) { d.allowed.Set(patterns) }

// takePolicy makes a reloaded api.allowed_images the policy; false when
// there was none.
func (d *Duty) takePolicy() bool {
	patterns, ok := d.allowed.Take()
	if ok {
		d.policy = apps.ImagePolicy(patterns)
		d.log.Info("api.allowed_images reloaded: checking every app again", "allowed_images", patterns)
	}
	return ok
}

// Status returns the last view of the releases; nil when this agent is not
// master.
func (d *Duty) Status() *state.Report {
	if !d.running.Load() {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := state.Report{Releases: slices.Clone(d.status.Releases), Namespaces: slices.Clone(d.status.Namespaces)}
	return &st
}

// want is one release that should exist.
type want struct {
	ns, name string
	guid     string
	role     string
	chart    stackconfig.HelmChart
	builtin  bool           // the agent's own app chart
	values   map[string]any // the agent's values, before the user's
	// agentWins puts the agent's values over the user's (apps).
	agentWins bool
	// invalid says why the release cannot be installed (an app record the
	// master refuses); nothing is installed.
	invalid string
	fp      string
}

func (w *want) key() string { return w.ns + "/" + w.name }

// unit is the duty's view of one release (or, with nsOnly, of one guid
// namespace to delete).
type unit struct {
	ns, name string
	want     *want // nil: remove it
	nsOnly   bool
	busy     bool
	done     string // fp of the want last applied, "" for none
	failures int
	next     time.Time
	checked  time.Time
	state    state.Release
	lastErr  string
}

type result struct {
	key     string
	fp      string
	state   state.Release
	removed bool
	err     error
}

// term is the state of one Run.
type term struct {
	lead    etcd.Leader
	apps    map[string]apps.Record
	invalid map[string]string // guid -> why its record is refused
	units   map[string]*unit
	nss     map[string]state.Namespace // the owned guid namespaces last seen
	written map[string]string          // guid -> status/apps value written this term
	results chan result
	scans   chan scan
	wg      sync.WaitGroup
}

type scan struct {
	releases []state.Release
	nss      []state.Namespace
	err      error
}

// Run keeps the releases for one term: it reads apps/, lists what the
// agent owns, then acts on every change, every result and every Interval,
// until the term ends. It returns etcd.ErrFenced or ErrStaleTerm when a
// write finds the term over, and waits for the actions it started.
func (d *Duty) Run(ctx context.Context, lead etcd.Leader) error {
	t := &term{
		lead: lead, apps: map[string]apps.Record{}, invalid: map[string]string{},
		units: map[string]*unit{}, nss: map[string]state.Namespace{}, written: map[string]string{},
		results: make(chan result, 16), scans: make(chan scan, 1),
	}
	d.running.Store(true)
	defer d.running.Store(false)
	defer t.wg.Wait()

	d.takePolicy()
	if in, ok := d.values.Take(); ok {
		d.cfg.Values = in
	}
	rev, err := d.load(ctx, lead, t)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	stopWatch := func() {}
	defer func() { stopWatch() }()
	watchFrom := func(rev int64) clientv3.WatchChan {
		stopWatch()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		stopWatch = cancel
		return d.cli.Watch(wctx, d.cfg.Keys.Apps(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	}
	wch := watchFrom(rev)
	d.startScan(ctx, t)
	tick := time.NewTicker(d.cfg.Interval)
	defer tick.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		d.desire(t)
		if err := d.schedule(ctx, t); err != nil {
			return err
		}
		d.publish(t)
		if next, ok := d.nextDue(t); ok {
			wake.Reset(max(time.Until(next), 10*time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				if ctx.Err() != nil {
					return nil
				}
				// A compacted or broken watch: read everything again.
				if rev, err = d.load(ctx, lead, t); err != nil {
					return err
				}
				wch = watchFrom(rev)
				continue
			}
			for _, ev := range wr.Events {
				guid := strings.TrimPrefix(string(ev.Kv.Key), d.cfg.Keys.Apps())
				delete(t.apps, guid)
				delete(t.invalid, guid)
				if ev.Type == clientv3.EventTypePut {
					d.put(t, ev.Kv)
				}
			}
		case <-d.values.Ready():
			if in, ok := d.values.Take(); ok {
				d.cfg.Values = in // wants() renders from it next
				d.log.Info("config reloaded: the releases' values are rendered again")
			}
		case <-d.allowed.Ready():
			if !d.takePolicy() {
				continue
			}
			// Read every record again with the new policy; the watch goes
			// on from where this read is.
			if rev, err = d.load(ctx, lead, t); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			wch = watchFrom(rev)
		case r := <-t.results:
			if err := d.record(ctx, t, r); err != nil {
				return err
			}
		case s := <-t.scans:
			d.scanned(t, s)
		case <-tick.C:
			for _, u := range t.units {
				u.checked = time.Time{} // check every release again
			}
			d.startScan(ctx, t)
		case <-wake.C:
		}
	}
}

// load reads apps/ whole.
func (d *Duty) load(ctx context.Context, lead etcd.Leader, t *term) (int64, error) {
	resp, err := lead.KV.Get(ctx, d.cfg.Keys.Apps(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read apps: %w", err)
	}
	clear(t.apps)
	clear(t.invalid)
	for _, kv := range resp.Kvs {
		d.put(t, kv)
	}
	return resp.Header.Revision, nil
}

// put keeps one apps/ record: validated as strictly as the API does, the
// image checked against this agent's list and the chart against its
// stack.helm.app_charts.
func (d *Duty) put(t *term, kv *mvccpb.KeyValue) {
	guid := strings.TrimPrefix(string(kv.Key), d.cfg.Keys.Apps())
	rec, err := apps.ParseRecord(d.cfg.Keys, kv.Key, kv.Value)
	if err == nil {
		err = d.checkApp(rec)
	}
	if err != nil {
		d.m.invalid.Inc()
		if stackconfig.ValidDNSLabel(guid) {
			if t.invalid[guid] != err.Error() {
				d.log.Warn("app record refused", "guid", guid, "err", err)
			}
			t.invalid[guid] = err.Error()
		}
		return
	}
	t.apps[guid] = rec
}

// checkApp refuses what the master will not install: an image outside
// api.allowed_images, a chart outside stack.helm.app_charts, a guid that
// names a namespace Kubernetes or the agent owns.
func (d *Duty) checkApp(rec apps.Record) error {
	s := rec.Spec
	if reason := reservedNamespace(s.GUID, d.cfg.Helm.Namespace); reason != "" {
		return fmt.Errorf("spec.guid: %q cannot be a namespace of the agent's: %s", s.GUID, reason)
	}
	if s.Chart == "" || s.Image != "" {
		if err := d.policy.Check(s.Image); err != nil {
			return fmt.Errorf("spec.%w", err)
		}
	}
	if err := apps.CheckChart(s.Chart, slices.Sorted(maps.Keys(d.cfg.Helm.AppCharts))); err != nil {
		return fmt.Errorf("spec.%w", err)
	}
	return nil
}

// reservedNamespace says why guid may not be a namespace the agent makes
// and deletes: Kubernetes' own, or the agent's.
func reservedNamespace(guid, agentNS string) string {
	switch {
	case guid == "default", strings.HasPrefix(guid, "kube-"):
		return "it is a namespace of Kubernetes itself"
	case guid == agentNS:
		return "it is the agent's own namespace"
	}
	return ""
}

// desire computes the wanted releases from the configuration and the apps
// and updates the units: new ones, changed ones, and those no longer
// wanted (to remove).
func (d *Duty) desire(t *term) {
	wants := d.wants(t)
	for key, w := range wants {
		u, ok := t.units[key]
		if !ok {
			u = &unit{ns: w.ns, name: w.name}
			t.units[key] = u
		}
		if u.want == nil || u.want.fp != w.fp {
			u.failures, u.next = 0, time.Time{} // a changed spec starts without backoff
		}
		u.want = w
	}
	for key, u := range t.units {
		if _, ok := wants[key]; !ok && !u.nsOnly && u.want != nil {
			u.want, u.failures, u.next = nil, 0, time.Time{}
		}
	}
	// A guid namespace of this cluster that no release of it needs any
	// more is deleted once the releases in it are gone.
	inUse := map[string]bool{}
	for _, u := range t.units {
		if !u.nsOnly {
			inUse[u.ns] = true
		}
	}
	for name := range t.nss {
		key := "namespace/" + name
		_, wanted := t.apps[name]
		if !wanted && !inUse[name] && t.units[key] == nil {
			t.units[key] = &unit{ns: name, nsOnly: true}
		}
	}
}

// wants are the releases the configuration and the apps ask for.
func (d *Duty) wants(t *term) map[string]*want {
	h, in := d.cfg.Helm, d.cfg.Values
	out := map[string]*want{}
	add := func(w *want) {
		if w.fp == "" {
			b, _ := json.Marshal([]any{w.chart, w.builtin, w.values, w.agentWins, w.invalid, w.guid, w.role})
			w.fp = string(b)
		}
		out[w.key()] = w
	}
	if h.Metrics.Enabled {
		if v, err := MetricsValues(in); err != nil {
			add(&want{ns: h.Namespace, name: h.Metrics.Release, role: workload.RolePrometheus, chart: h.Metrics, invalid: err.Error()})
		} else {
			add(&want{ns: h.Namespace, name: h.Metrics.Release, role: workload.RolePrometheus, chart: h.Metrics, values: v})
		}
	}
	if h.Logs.Enabled {
		v, ok, err := LogsValues(in)
		switch {
		case err != nil:
			add(&want{ns: h.Namespace, name: h.Logs.Release, role: workload.RoleVector, chart: h.Logs, invalid: err.Error()})
		case ok:
			add(&want{ns: h.Namespace, name: h.Logs.Release, role: workload.RoleVector, chart: h.Logs, values: v})
		}
	}
	for guid, rec := range t.apps {
		traces := false
		if h.Traces.Enabled {
			v, ok, err := TracesValues(in, guid)
			switch {
			case err != nil:
				add(&want{ns: guid, name: h.Traces.Release, guid: guid, role: workload.RoleJaeger, chart: h.Traces, invalid: err.Error()})
			case ok:
				traces = true
				add(&want{ns: guid, name: h.Traces.Release, guid: guid, role: workload.RoleJaeger, chart: h.Traces, values: v})
			}
		}
		w := &want{ns: guid, name: AppRelease, guid: guid, role: workload.RoleApp, agentWins: true}
		if _, ok := t.invalid[guid]; ok {
			continue // a later record of the guid that is refused: below
		}
		if rec.Spec.Chart != "" {
			w.chart = h.AppCharts[rec.Spec.Chart]
			w.values = ChartAppValues(in, rec, traces)
		} else {
			w.builtin = true
			w.values = AppValues(in, rec, traces)
		}
		add(w)
	}
	for guid, why := range t.invalid {
		add(&want{ns: guid, name: AppRelease, guid: guid, role: workload.RoleApp, invalid: why})
	}
	return out
}

// schedule starts the action of every unit that is due and not busy.
func (d *Duty) schedule(ctx context.Context, t *term) error {
	now := time.Now()
	for key, u := range t.units {
		if u.busy || now.Before(u.next) {
			continue
		}
		if !u.nsOnly && u.want != nil && u.done == u.want.fp && !u.checked.IsZero() {
			continue // applied, and checked since the last tick
		}
		u.busy = true
		// The action works on a copy: desire may give a busy unit a new
		// want meanwhile, which the next action applies.
		snap := *u
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			r := d.act(ctx, t.lead, key, &snap)
			select {
			case t.results <- r:
			case <-ctx.Done():
			}
		}()
	}
	return nil
}

// nextDue is the earliest time a unit in backoff is due again.
func (d *Duty) nextDue(t *term) (time.Time, bool) {
	var next time.Time
	for _, u := range t.units {
		if !u.busy && !u.next.IsZero() && (next.IsZero() || u.next.Before(next)) {
			next = u.next
		}
	}
	return next, !next.IsZero()
}

// act runs one unit's action, bounded by the Helm timeout, on a copy of
// the unit taken when it was scheduled.
func (d *Duty) act(ctx context.Context, lead etcd.Leader, key string, u *unit) result {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Helm.Timeout+30*time.Second)
	defer cancel()
	guard := d.guard(lead)
	switch {
	case u.nsOnly:
		if err := guard(ctx, state.Release{}); err != nil {
			return result{key: key, err: err}
		}
		err := d.drv.DeleteNamespace(ctx, u.ns)
		return result{key: key, removed: err == nil, err: err}
	case u.want == nil:
		err := d.drv.Uninstall(ctx, u.ns, u.name, guard)
		return result{key: key, removed: err == nil, err: err}
	}
	w := u.want
	if w.invalid != "" {
		// Nothing of a refused app is installed: what an earlier, valid
		// record installed goes.
		err := d.drv.Uninstall(ctx, u.ns, u.name, guard)
		return result{key: key, fp: w.fp, state: state.Release{Name: u.name, Namespace: u.ns, Status: apps.StatusInvalid}, err: err}
	}
	start := time.Now()
	st, err := d.ensure(ctx, lead, w, guard)
	d.m.actions.WithLabelValues(w.role, outcome(err)).Inc()
	d.m.seconds.WithLabelValues(w.role).Observe(time.Since(start).Seconds())
	return result{key: key, fp: w.fp, state: st, err: err}
}

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// ensure makes one wanted release exist: its namespace (a guid's), its
// chart loaded, its values put together, then the driver's Ensure.
func (d *Duty) ensure(ctx context.Context, lead etcd.Leader, w *want, guard helm.Guard) (state.Release, error) {
	empty := state.Release{Name: w.name, Namespace: w.ns, Status: state.Missing}
	if w.guid != "" {
		if err := guard(ctx, empty); err != nil {
			return empty, err
		}
		if _, err := d.drv.EnsureNamespace(ctx, w.guid, map[string]string{
			workload.LabelGUID: w.guid, workload.LabelCluster: d.cfg.Cluster, workload.LabelOwner: Owner,
		}); err != nil {
			return empty, err
		}
	}
	var ch helm.Chart
	var ref helm.ChartRef
	var err error
	if w.builtin {
		ref = helm.ChartRef{Path: "(built in)"}
		ch, err = helm.LoadFS(appChartFS, "appchart")
	} else {
		ref = helm.ChartRef{Repository: w.chart.Repository, Name: w.chart.Name, Version: w.chart.Version, Path: w.chart.Path}
		ch, err = d.drv.LoadChart(ctx, ref)
	}
	if err != nil {
		return empty, err
	}
	values, err := Values(w.values, w.chart, w.agentWins)
	if err != nil {
		return empty, fmt.Errorf("%s values: %w", w.name, err)
	}
	if values, err = roundTrip(values); err != nil {
		return empty, fmt.Errorf("%s values: %w", w.name, err)
	}
	labels := map[string]string{
		workload.LabelOwner: Owner, workload.LabelCluster: d.cfg.Cluster, workload.LabelRole: w.role,
	}
	if w.guid != "" {
		labels[workload.LabelGUID] = w.guid
	}
	return d.drv.Ensure(ctx, helm.Release{
		Name: w.name, Namespace: w.ns, Chart: ch, Ref: ref, Values: values, Labels: labels,
		Stamp: map[string]string{
			LabelTerm:        strconv.FormatInt(lead.Rev, 10),
			LabelEtcdCluster: strconv.FormatUint(lead.ClusterID, 16),
		},
	}, guard)
}

// guard is the fence of every Kubernetes write: right before it, a
// linearizable read of the term's election key (etcd.ErrFenced when the
// term is over), and a refusal of a release a later term of the same etcd
// has written (ErrStaleTerm).
func (d *Duty) guard(lead etcd.Leader) helm.Guard {
	return func(ctx context.Context, cur state.Release) error {
		now, err := lead.Revision(ctx)
		if err != nil {
			return err
		}
		if cur.Labels[LabelEtcdCluster] != strconv.FormatUint(lead.ClusterID, 16) {
			return nil // never written, or written in another etcd's history
		}
		rev, err := strconv.ParseInt(cur.Labels[LabelTerm], 10, 64)
		if err == nil && rev > lead.Rev && rev <= now {
			return fmt.Errorf("%w: %s/%s carries term %d, this master's is %d", ErrStaleTerm, cur.Namespace, cur.Name, rev, lead.Rev)
		}
		return nil
	}
}

// record applies one action's result to its unit.
func (d *Duty) record(ctx context.Context, t *term, r result) error {
	u := t.units[r.key]
	if u == nil {
		return nil
	}
	u.busy = false
	if errors.Is(r.err, etcd.ErrFenced) || errors.Is(r.err, ErrStaleTerm) {
		return r.err
	}
	if r.err != nil && ctx.Err() != nil {
		return nil // the term ended under the action
	}
	if r.removed {
		if u.nsOnly {
			d.log.Info("guid namespace deleted", "namespace", u.ns)
			delete(t.nss, u.ns)
		} else {
			d.log.Info("release uninstalled", "release", u.name, "namespace", u.ns)
		}
		delete(t.units, r.key)
		if !u.nsOnly && u.name == AppRelease {
			return d.deleteAppStatus(ctx, t, u.ns)
		}
		return nil
	}
	if r.err != nil {
		u.failures++
		u.next = time.Now().Add(d.backoff(u.failures))
		u.lastErr = r.err.Error()
		if r.state.Name != "" {
			u.state = r.state
		}
		d.log.Warn("release not as wanted, retrying", "release", u.name, "namespace", u.ns, "attempt", u.failures,
			"retry_in", time.Until(u.next).Round(time.Millisecond), "err", r.err)
	} else if u.want == nil {
		// Unwanted while it was applied (its app deleted): the next action
		// removes it.
		u.state, u.done, u.lastErr = r.state, "", ""
	} else {
		if u.want.invalid == "" && u.done != r.fp {
			d.log.Info("release as wanted", "release", u.name, "namespace", u.ns, "chart", r.state.Chart,
				"version", r.state.Version, "revision", r.state.Revision, "status", r.state.Status)
		}
		u.failures, u.next, u.lastErr = 0, time.Time{}, u.want.invalid
		u.done, u.checked, u.state = r.fp, time.Now(), r.state
		if u.want.guid != "" && u.want.invalid == "" {
			if _, ok := t.nss[u.want.guid]; !ok {
				t.nss[u.want.guid] = state.Namespace{Name: u.want.guid, Phase: "Active"}
			}
		}
	}
	if u.want != nil && u.name == AppRelease && u.want.guid != "" {
		return d.writeAppStatus(ctx, t, u)
	}
	return nil
}

func (d *Duty) backoff(n int) time.Duration {
	b := d.cfg.BackoffMin
	for i := 1; i < n && b < d.cfg.BackoffMax; i++ {
		b *= 2
	}
	return min(b, d.cfg.BackoffMax)
}

// startScan lists the releases and guid namespaces this cluster's master
// owns, aside: a slow API never holds the loop.
func (d *Duty) startScan(ctx context.Context, t *term) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		sel := map[string]string{workload.LabelOwner: Owner, workload.LabelCluster: d.cfg.Cluster}
		rels, err := d.drv.List(sctx, sel)
		var nss []state.Namespace
		if err == nil {
			nss, err = d.drv.Namespaces(sctx, sel)
		}
		select {
		case t.scans <- scan{releases: rels, nss: nss, err: err}:
		case <-ctx.Done():
		}
	}()
}

// scanned adds a unit for every owned release nobody wants (an orphan of
// an earlier term, or of an app deleted while no master ran) and keeps
// the namespaces for status and removal.
func (d *Duty) scanned(t *term, s scan) {
	if s.err != nil {
		d.log.Warn("list the agent's releases", "err", s.err)
		return
	}
	for _, r := range s.releases {
		key := r.Namespace + "/" + r.Name
		if _, ok := t.units[key]; !ok {
			t.units[key] = &unit{ns: r.Namespace, name: r.Name, state: r}
		}
	}
	clear(t.nss)
	for _, ns := range s.nss {
		if ns.Labels[workload.LabelGUID] == ns.Name {
			t.nss[ns.Name] = ns
		}
	}
}

// publish updates the status the agent reports.
func (d *Duty) publish(t *term) {
	st := state.Report{Releases: []state.ReleaseReport{}, Namespaces: []state.Namespace{}}
	for _, key := range slices.Sorted(maps.Keys(t.units)) {
		u := t.units[key]
		if u.nsOnly {
			continue
		}
		rs := state.ReleaseReport{Release: u.state, LastError: u.lastErr, NextTry: u.next}
		if rs.Name == "" {
			rs.Name, rs.Namespace, rs.Status = u.name, u.ns, "pending"
		}
		if u.want != nil {
			rs.GUID = u.want.guid
		} else if rs.Status != state.Missing {
			rs.Status = "removing"
		}
		rs.Labels = nil
		st.Releases = append(st.Releases, rs)
	}
	for _, name := range slices.Sorted(maps.Keys(t.nss)) {
		ns := t.nss[name]
		ns.Labels = nil
		st.Namespaces = append(st.Namespaces, ns)
	}
	d.m.releases.Set(float64(len(st.Releases)))
	d.mu.Lock()
	d.status = st
	d.mu.Unlock()
}

// writeAppStatus writes status/apps/<guid> (what `agent apps` shows) for
// an app's release, fenced and under the master's lease, when it changed.
func (d *Duty) writeAppStatus(ctx context.Context, t *term, u *unit) error {
	guid := u.ns
	s := apps.Status{Node: d.cfg.Node, Status: u.state.Status, LastError: u.lastErr, ExitCode: -1}
	if u.state.Revision > 0 {
		s.ID = fmt.Sprintf("release %s/%s revision %d", u.ns, u.name, u.state.Revision)
		s.Since = u.state.Updated
	}
	if u.want != nil && u.want.invalid != "" {
		s.Status = apps.StatusInvalid
	}
	b, _ := json.Marshal(s)
	if t.written[guid] == string(b) {
		return nil
	}
	if _, err := t.lead.Txn(ctx, clientv3.OpPut(d.cfg.Keys.AppStatus(guid), string(b), clientv3.WithLease(t.lead.Lease))); err != nil {
		if errors.Is(err, etcd.ErrFenced) {
			return err
		}
		d.log.Debug("write app status", "guid", guid, "err", err)
		return nil
	}
	t.written[guid] = string(b)
	return nil
}

func (d *Duty) deleteAppStatus(ctx context.Context, t *term, guid string) error {
	if _, ok := t.written[guid]; !ok {
		return nil
	}
	if _, err := t.lead.Txn(ctx, clientv3.OpDelete(d.cfg.Keys.AppStatus(guid))); err != nil {
		if errors.Is(err, etcd.ErrFenced) {
			return err
		}
		d.log.Debug("delete app status", "guid", guid, "err", err)
		return nil
	}
	delete(t.written, guid)
	return nil
}

var _ master.Duty = (*Duty)(nil)
