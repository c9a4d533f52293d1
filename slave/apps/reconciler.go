package apps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/slave"
	"github.com/agentproj/agent/slave/reload"
	"github.com/agentproj/agent/stackconfig"
)

// Supervisor keeps a desired set of workloads running;
// *workload.Supervisor is one.
type Supervisor interface {
	Set(specs []workload.Spec) error
	States() []workload.State
}

// TargetSetter publishes the target groups of one source, keyed
// "<job>/<id>"; *slave.TargetPublisher is one.
type TargetSetter interface {
	Set(source string, groups map[string]etcd.TargetGroup)
}

// TargetSource is the source name of the apps' groups in TargetSetter, and
// TargetJob their Prometheus job.
const (
	TargetSource = "apps"
	TargetJob    = "apps"
)

// LabelAppPrefix prefixes an app's own labels on its workload:
// io.agentproj.label.<name>.
const LabelAppPrefix = workload.LabelPrefix + "label."

// ReconcilerConfig configures the node's app reconciler.
type ReconcilerConfig struct {
	// Node and Cluster name this agent.
	Node, Cluster string
	Keys          etcd.Keys
	// OTLPEndpoint is the node trace agent's OTLP endpoint
	// ("http://127.0.0.1:14318"), given to every app as
	// OTEL_EXPORTER_OTLP_ENDPOINT; empty sets none.
	OTLPEndpoint string
	// Host is where Prometheus reaches this node's apps (the advertised
	// host); default 127.0.0.1.
	Host string
	// StatusInterval is how often the Supervisor's states are compared with
	// what was last written to status/apps/; default 1s.
	StatusInterval time.Duration
	// AllowedImages is this agent's api.allowed_images: an app assigned here
	// whose image matches none is not run, whoever wrote its record. Empty
	// refuses every image.
	AllowedImages []string
}

// Reconciler is a session worker that runs on this node the apps assigned
// to it in etcd:
//  1. read apps/ and keep the records whose node is this one (a record that
//     does not validate, is larger than MaxRecordBytes or, assigned here,
//     names an image outside AllowedImages is counted, logged once and not
//     run; when it names this node, its status says why: StatusInvalid);
//  2. hand their workload specs to the Supervisor and their metrics ports
//     to the TargetSetter;
//  3. follow a watch of apps/ and do 2 again on every change;
//  4. every StatusInterval, write each app's observed state to
//     status/apps/<guid> under the session lease when it changed (only
//     while the app record is still the one it acts on), and delete the
//     statuses it wrote of apps no longer assigned here.
//
// When the session ends the desired set stays with the Supervisor, so apps
// keep running through an etcd outage; their statuses and targets go with
// the lease.
type Reconciler struct {
	cli     *clientv3.Client
	cfg     ReconcilerConfig
	sup     Supervisor
	targets TargetSetter
	log     *slog.Logger
	m       *reconcilerMetrics
	bad     *invalidRecords
	allowed *reload.Pending[[]string] // a reloaded api.allowed_images

	synced     chan struct{}
	syncedOnce sync.Once

	// Owned by Run.
	policy  ImagePolicy
	apps    map[string]assigned // guid -> record assigned to this node
	lastSet string              // fingerprint of the last desired set handed over
	handed  bool                // a set was handed over at least once
}

type assigned struct {
	rec Record
	rev int64 // mod revision of apps/<guid>
	// invalid is why the record is not run; rec is empty then.
	invalid string
}

// NewReconciler returns the reconciler of cfg.Node. A nil reg registers no
// metrics.
func NewReconciler(cli *clientv3.Client, cfg ReconcilerConfig, sup Supervisor, targets TargetSetter, log *slog.Logger, reg prometheus.Registerer) *Reconciler {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = time.Second
	}
	m := newReconcilerMetrics(reg)
	return &Reconciler{
		cli: cli, cfg: cfg, sup: sup, targets: targets, log: log, m: m,
		bad:     newInvalidRecords(log, m.invalid),
		policy:  ImagePolicy(cfg.AllowedImages),
		allowed: reload.NewPending[[]string](),
		synced:  make(chan struct{}),
		apps:    map[string]assigned{},
	}
}

// Synced is closed once the first desired set read from etcd has been
// worked out and handed to the Supervisor (which reconciles only from its
// first set on).
func (r *Reconciler) Synced() <-chan struct{} { return r.synced }

// SetAllowedImages applies a reloaded api.allowed_images: every record
// assigned here is checked again, so an app whose image it now allows
// starts, and one it no longer allows is stopped and reported as refused.
func (r *Reconciler) SetAllowedImages(patterns []string) { r.allowed.Set(patterns) }

// errReloaded ends a follow to read the records again with a new policy.
var errReloaded = errors.New("api.allowed_images reloaded")

// Run follows apps/ for one session until ctx ends; see Reconciler.
func (r *Reconciler) Run(ctx context.Context, s *concurrency.Session) error {
	written := map[string]string{} // guid -> status JSON written under this lease
	for ctx.Err() == nil {
		if patterns, ok := r.allowed.Take(); ok {
			r.policy = ImagePolicy(patterns)
			r.log.Info("api.allowed_images reloaded: checking every app assigned here again", "allowed_images", patterns)
		}
		rev, err := r.load(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.m.etcdErrors.Inc()
				r.log.Warn("read apps, retrying", "err", err)
				wait(ctx, time.Second)
			}
			continue
		}
		r.report(ctx, s.Lease(), written)
		err = r.follow(ctx, s.Lease(), rev, written)
		if ctx.Err() == nil && !errors.Is(err, errReloaded) {
			r.m.etcdErrors.Inc()
			r.log.Warn("watch of apps ended, reading them again", "err", err)
		}
	}
	return nil
}

// load reads every record and applies the ones assigned here.
func (r *Reconciler) load(ctx context.Context) (int64, error) {
	resp, err := r.cli.Get(ctx, r.cfg.Keys.Apps(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read apps: %w", err)
	}
	clear(r.apps)
	for _, kv := range resp.Kvs {
		r.put(kv)
	}
	r.apply()
	return resp.Header.Revision, nil
}

// follow applies watch events after rev and reports states on a ticker.
func (r *Reconciler) follow(ctx context.Context, lease clientv3.LeaseID, rev int64, written map[string]string) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := r.cli.Watch(wctx, r.cfg.Keys.Apps(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	tick := time.NewTicker(r.cfg.StatusInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			r.report(ctx, lease, written)
		case <-r.allowed.Ready():
			return errReloaded
		case wr, ok := <-wch:
			if !ok {
				return fmt.Errorf("watch closed")
			}
			if err := wr.Err(); err != nil {
				return err
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					guid := strings.TrimPrefix(string(ev.Kv.Key), r.cfg.Keys.Apps())
					delete(r.apps, guid)
					r.bad.forget(string(ev.Kv.Key))
					continue
				}
				r.put(ev.Kv)
			}
			r.apply()
			r.report(ctx, lease, written)
		}
	}
}

// put keeps kv in r.apps if it is a record assigned to this node: to run
// when it validates and its image is allowed here, else to report why not.
func (r *Reconciler) put(kv *mvccpb.KeyValue) {
	guid := strings.TrimPrefix(string(kv.Key), r.cfg.Keys.Apps())
	delete(r.apps, guid)
	rec, err := ParseRecord(r.cfg.Keys, kv.Key, kv.Value)
	node := rec.Node
	switch {
	case err != nil:
		node = recordNode(kv.Value)
	case node == r.cfg.Node:
		// The API checked the image against its own list; a record written
		// around it, or by an agent with another list, is checked here,
		// where the workload would start.
		if perr := r.policy.Check(rec.Spec.Image); perr != nil {
			err = fmt.Errorf("value: spec.%w", perr)
		}
		if rec.Spec.Chart != "" {
			err = fmt.Errorf("value: spec.chart: an app that names a chart runs only in Kubernetes mode (stack.driver = helm), got %q", rec.Spec.Chart)
		}
	}
	if err != nil {
		r.bad.report(string(kv.Key), kv.ModRevision, err)
		if node == r.cfg.Node && stackconfig.ValidDNSLabel(guid) {
			r.apps[guid] = assigned{rev: kv.ModRevision, invalid: err.Error()}
		}
		return
	}
	r.bad.forget(string(kv.Key))
	if node == r.cfg.Node {
		r.apps[guid] = assigned{rec: rec, rev: kv.ModRevision}
	}
}

// recordNode is the node a record that does not validate names, if it
// names one, so that the node can say in its status why it does not run
// it.
func recordNode(value []byte) string {
	var v struct {
		Node string `json:"node"`
	}
	if json.Unmarshal(value, &v) != nil {
		return ""
	}
	return v.Node
}

// apply hands the desired set to the Supervisor and the targets to the
// publisher.
func (r *Reconciler) apply() {
	specs := make([]workload.Spec, 0, len(r.apps))
	groups := map[string]etcd.TargetGroup{}
	var fp strings.Builder
	for _, guid := range slices.Sorted(maps.Keys(r.apps)) {
		a := r.apps[guid]
		if a.invalid != "" {
			continue
		}
		spec := WorkloadSpec(a.rec, r.cfg.Cluster, r.cfg.OTLPEndpoint)
		if err := spec.Validate(); err != nil { // cannot happen after ParseRecord; never pass it on
			r.bad.report(r.cfg.Keys.App(guid), a.rev, err)
			continue
		}
		specs = append(specs, spec)
		fp.WriteString(guid + "=" + spec.Hash() + ";")
		if g, ok := TargetGroup(a.rec, r.cfg.Cluster, r.cfg.Host); ok {
			groups[TargetJob+"/"+guid] = g
		}
	}
	r.m.assigned.Set(float64(len(specs)))
	if !r.handed || fp.String() != r.lastSet {
		if err := r.sup.Set(specs); err != nil {
			r.log.Error("hand apps to the supervisor", "err", err)
		} else {
			r.lastSet, r.handed = fp.String(), true
			r.log.Info("apps assigned to this node", "count", len(specs))
		}
	}
	r.targets.Set(TargetSource, groups)
	r.syncedOnce.Do(func() { close(r.synced) })
}

// report writes the changed statuses of the apps assigned here and deletes
// the statuses this session wrote of apps no longer assigned here.
func (r *Reconciler) report(ctx context.Context, lease clientv3.LeaseID, written map[string]string) {
	states := map[string]workload.State{}
	for _, st := range r.sup.States() {
		states[st.Name] = st
	}
	for guid, a := range r.apps {
		val := statusJSON(r.cfg.Node, states, guid)
		if a.invalid != "" {
			val = invalidJSON(r.cfg.Node, a.invalid)
		}
		if written[guid] == val {
			continue
		}
		key := r.cfg.Keys.AppStatus(guid)
		// Only while the record is the one acted on: a deleted or moved app
		// gets no status from this node.
		resp, err := r.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(r.cfg.Keys.App(guid)), "=", a.rev)).
			Then(clientv3.OpPut(key, val, clientv3.WithLease(lease))).
			Commit()
		if err != nil {
			if ctx.Err() == nil {
				r.m.etcdErrors.Inc()
				r.log.Warn("write app status", "guid", guid, "err", err)
			}
			continue
		}
		if resp.Succeeded {
			r.m.statusWrites.Inc()
			written[guid] = val
		}
	}
	for guid := range written {
		if _, ok := r.apps[guid]; ok {
			continue
		}
		key := r.cfg.Keys.AppStatus(guid)
		// Only our own: the node the app moved to may have written its own.
		resp, err := r.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).
			Then(clientv3.OpDelete(key)).
			Commit()
		if err != nil {
			if ctx.Err() == nil {
				r.m.etcdErrors.Inc()
				r.log.Warn("delete app status", "guid", guid, "err", err)
			}
			continue
		}
		if resp.Succeeded {
			r.m.statusWrites.Inc()
		}
		delete(written, guid)
	}
}

func statusJSON(node string, states map[string]workload.State, guid string) string {
	s := Status{Node: node, Status: StatusPending}
	if st, ok := states[guid]; ok {
		s = Status{
			Node: node, Status: string(st.Status), ID: st.ID, Since: st.Since.UTC(),
			ExitCode: st.ExitCode, LastError: st.LastError, Restarts: st.Restarts,
		}
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func invalidJSON(node, reason string) string {
	b, _ := json.Marshal(Status{Node: node, Status: StatusInvalid, LastError: reason})
	return string(b)
}

// WorkloadSpec is the workload of an app record on this node: container
// name and host name are the guid, the workload carries the guid and role
// labels and the app's own labels under LabelAppPrefix, and the
// environment adds the OTEL_* variables that send traces, tagged with guid,
// node and cluster, to the node's trace agent at otlpEndpoint.
func WorkloadSpec(rec Record, cluster, otlpEndpoint string) workload.Spec {
	guid := rec.Spec.GUID
	env := make(map[string]string, len(rec.Spec.Env)+3)
	maps.Copy(env, rec.Spec.Env)
	if otlpEndpoint != "" {
		env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlpEndpoint
	}
	env["OTEL_RESOURCE_ATTRIBUTES"] = "guid=" + guid + ",node=" + rec.Node + ",cluster=" + cluster
	env["OTEL_SERVICE_NAME"] = guid
	labels := map[string]string{
		workload.LabelGUID:    guid,
		workload.LabelRole:    workload.RoleApp,
		workload.LabelNode:    rec.Node,
		workload.LabelCluster: cluster,
	}
	for k, v := range rec.Spec.Labels {
		labels[LabelAppPrefix+k] = v
	}
	return workload.Spec{
		Name:     guid,
		Hostname: guid,
		Image:    rec.Spec.Image,
		Args:     slices.Clone(rec.Spec.Args),
		Env:      env,
		Labels:   labels,
	}
}

// TargetGroup is the scrape target of an app with a metrics port:
// host:port, labelled guid, node and cluster, __metrics_path__ when not
// /metrics, and the app's own labels. ok is false for an app without
// metrics.
func TargetGroup(rec Record, cluster, host string) (etcd.TargetGroup, bool) {
	m := rec.Spec.Metrics
	if m == nil {
		return etcd.TargetGroup{}, false
	}
	ls := model.LabelSet{"guid": model.LabelValue(rec.Spec.GUID), "node": model.LabelValue(rec.Node), "cluster": model.LabelValue(cluster)}
	for k, v := range rec.Spec.Labels {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	if m.Path != "" && m.Path != DefaultMetricsPath {
		ls[model.MetricsPathLabel] = model.LabelValue(m.Path)
	}
	return etcd.TargetGroup{Targets: []string{net.JoinHostPort(host, strconv.Itoa(m.Port))}, Labels: ls}, true
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

var (
	_ slave.SessionWorker = (*Reconciler)(nil)
	_ Supervisor          = (*workload.Supervisor)(nil)
	_ TargetSetter        = (*slave.TargetPublisher)(nil)
)
