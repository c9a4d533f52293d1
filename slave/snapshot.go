package slave

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/stackconfig"
)

// SnapshotConfig configures a Snapshot.
type SnapshotConfig struct {
	Keys    etcd.Keys
	Cluster string
	// Grace is how long after an etcd outage a target group whose key went
	// away is still served (see outageGrace); default DefaultGrace.
	Grace time.Duration
	// Probe is how often etcd is asked whether it is reachable (a count of
	// the members, timeout two Probes); default 1s.
	Probe time.Duration
}

// DefaultGrace is SnapshotConfig.Grace when unset: the default TTL (5 s,
// also the nodes' longest retry delay) plus a second.
const DefaultGrace = 6 * time.Second

// ErrNotSynced is answered (503) before the first read of etcd succeeded.
var ErrNotSynced = errors.New("no snapshot of etcd yet: the agent has not read the cluster since it started")

// etcdWatcher is what the Snapshot needs of etcd; *clientv3.Client is one.
type etcdWatcher interface {
	clientv3.KV
	clientv3.Watcher
}

// Snapshot is the cluster as the read endpoints (GET /sd/http,
// /api/v1/targets, /api/v1/status) answer it: one read of the cluster's
// prefix, then one watch, kept in memory. Answers are rendered once per
// change, on the first request that needs them, and shared by every
// request until the next change: a request never reads etcd and never
// encodes the target set itself, so API load costs etcd nothing and memory
// does not grow with concurrent requests.
//
// While etcd cannot be reached the Snapshot keeps answering with what it
// saw last, marked stale; target groups whose keys go away around an
// outage are held for Grace (outageGrace).
type Snapshot struct {
	cli etcdWatcher
	cfg SnapshotConfig
	log *slog.Logger
	m   *snapshotMetrics

	mu      sync.Mutex
	synced  bool
	rev     int64
	other   map[string]*mvccpb.KeyValue // every key outside targets/
	targets map[string]*targetEntry     // targets/ keys, valid or not
	held    map[string]*targetEntry     // valid groups whose key went away within the grace
	grace   outageGrace
	tgen    uint64 // bumped by every change of what the target answers show
	vgen    uint64 // bumped by every change of what the status shows
	tcur    *targetState
	vcur    *viewState
}

// targetEntry is one targets/ key, parsed once per mod revision, with the
// JSON fragments the answers are concatenated from.
type targetEntry struct {
	key, node, job, id string
	modRev             int64
	sd                 []byte // stackconfig.GroupJSON of its group
	api                []byte // JSON of its etcd.Target
	reason             string // why it is skipped; "" when valid
}

type snapshotMetrics struct {
	stale    prometheus.Gauge
	revision prometheus.Gauge
	held     prometheus.Gauge
	reloads  prometheus.Counter
	renders  *prometheus.CounterVec
	invalid  prometheus.Counter
}

func newSnapshotMetrics(reg prometheus.Registerer) *snapshotMetrics {
	m := &snapshotMetrics{
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_api_snapshot_stale", Help: "1 while etcd cannot be reached and the read endpoints answer from the last snapshot, else 0.",
		}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_api_snapshot_revision", Help: "etcd revision of the snapshot the read endpoints answer from.",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_api_targets_held", Help: "Target groups whose keys went away around an etcd outage, still served until the grace ends.",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_api_snapshot_reloads_total", Help: "Full reads of the cluster prefix (start, watch loss, compaction).",
		}),
		renders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_api_snapshot_renders_total", Help: "Answers rendered from the snapshot (once per change and variant), by endpoint.",
		}, []string{"endpoint"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_api_target_values_invalid_total", Help: "Target values in etcd the read endpoints skip (each key and revision counted once).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.stale, m.revision, m.held, m.reloads, m.renders, m.invalid)
	}
	return m
}

// NewSnapshot returns a Snapshot of cfg.Cluster; nothing is read before
// Run. A nil reg registers no metrics.
func NewSnapshot(cli etcdWatcher, cfg SnapshotConfig, log *slog.Logger, reg prometheus.Registerer) *Snapshot {
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Probe <= 0 {
		cfg.Probe = time.Second
	}
	return &Snapshot{
		cli: cli, cfg: cfg, log: log, m: newSnapshotMetrics(reg),
		other: map[string]*mvccpb.KeyValue{}, targets: map[string]*targetEntry{}, held: map[string]*targetEntry{},
		grace: outageGrace{grace: cfg.Grace},
	}
}

// Run keeps the snapshot in step with etcd until ctx ends: a full read,
// then a watch from its revision; when the watch fails (etcd gone,
// compaction, leader lost) it reads again, with backoff.
func (s *Snapshot) Run(ctx context.Context) error {
	bo := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	for ctx.Err() == nil {
		rev, err := s.load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.down(err)
			sleep(ctx, bo.next())
			continue
		}
		bo.reset()
		err = s.follow(ctx, rev)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Debug("watch of the cluster ended, reading it again", "err", err)
		if !errors.Is(err, rpctypes.ErrCompacted) {
			// Lost, not merely behind: what went away meanwhile is held.
			s.down(err)
		}
	}
	return nil
}

// load reads the whole cluster prefix and makes it the snapshot; target
// keys that are gone are held if the grace says so.
func (s *Snapshot) load(ctx context.Context) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := s.cli.Get(lctx, s.cfg.Keys.Root(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read cluster: %w", err)
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upLocked(now)
	s.m.reloads.Inc()
	old := s.targets
	s.targets = make(map[string]*targetEntry, len(old))
	clear(s.other)
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		if !strings.HasPrefix(key, s.cfg.Keys.Targets()) {
			s.other[key] = kv
			continue
		}
		if e := old[key]; e != nil && e.modRev == kv.ModRevision {
			s.targets[key] = e
		} else {
			s.targets[key] = s.parse(kv)
		}
		delete(s.held, key)
	}
	for key, e := range old {
		if _, ok := s.targets[key]; !ok {
			s.goneLocked(now, e)
		}
	}
	s.synced = true
	s.rev = resp.Header.Revision
	s.changedLocked(true, true)
	return resp.Header.Revision, nil
}

// follow applies the watch from rev+1 until it fails or ctx ends, probes
// etcd, and drops held groups when the grace ends.
func (s *Snapshot) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, s.cfg.Keys.Root(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	probe := time.NewTicker(s.cfg.Probe)
	defer probe.Stop()
	for {
		if err := s.step(ctx, wch, probe.C); err != nil {
			return err
		}
	}
}

// step waits for one thing to do: a watch batch, a probe, or the end of
// the grace of the held groups.
func (s *Snapshot) step(ctx context.Context, wch clientv3.WatchChan, probe <-chan time.Time) error {
	var expire <-chan time.Time
	if d, ok := s.holdUntil(); ok {
		t := time.NewTimer(time.Until(d))
		defer t.Stop()
		expire = t.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case wr, ok := <-wch:
		if !ok {
			return errors.New("watch closed")
		}
		if err := wr.Err(); err != nil {
			return err
		}
		s.apply(wr.Events, wr.Header.Revision)
	case <-probe:
		s.probe(ctx)
	case <-expire:
		s.expire()
	}
	return nil
}

// probe asks etcd for a count of the members, every Probe: a watch that
// says nothing cannot tell a quiet cluster from an unreachable one. The
// timeout is two Probes, so that a slow answer on a loaded machine is not
// taken for an outage.
func (s *Snapshot) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 2*s.cfg.Probe)
	defer cancel()
	if _, err := s.cli.Get(pctx, s.cfg.Keys.Members(), clientv3.WithCountOnly()); err != nil {
		if ctx.Err() == nil {
			s.down(err)
		}
		return
	}
	s.mu.Lock()
	s.upLocked(time.Now())
	s.mu.Unlock()
}

// apply applies one watch batch; events mean etcd is reachable.
func (s *Snapshot) apply(evs []*clientv3.Event, rev int64) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upLocked(now)
	targets, other := false, false
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		if !strings.HasPrefix(key, s.cfg.Keys.Targets()) {
			other = true
			if ev.Type == clientv3.EventTypeDelete {
				delete(s.other, key)
			} else {
				s.other[key] = ev.Kv
			}
			continue
		}
		targets = true
		if ev.Type == clientv3.EventTypeDelete {
			if e := s.targets[key]; e != nil {
				delete(s.targets, key)
				s.goneLocked(now, e)
			}
			continue
		}
		delete(s.held, key)
		s.targets[key] = s.parse(ev.Kv)
	}
	s.rev = rev
	// The status counts the targets, so a target change is a status change.
	s.changedLocked(targets, targets || other)
}

// goneLocked removes a target group whose key went away, or holds it.
func (s *Snapshot) goneLocked(now time.Time, e *targetEntry) {
	if e.reason == "" && s.grace.Holding(now) {
		s.held[e.key] = e
	}
}

// expire drops the held groups once the grace has passed.
func (s *Snapshot) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.grace.Until()
	if !ok || time.Now().Before(until) || len(s.held) == 0 {
		return
	}
	s.log.Info("target groups not re-registered within the grace after an etcd outage are gone", "count", len(s.held), "grace", s.cfg.Grace)
	clear(s.held)
	s.changedLocked(true, false)
}

func (s *Snapshot) holdUntil() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.held) == 0 {
		return time.Time{}, false
	}
	return s.grace.Until()
}

// down marks the snapshot stale: etcd did not answer.
func (s *Snapshot) down(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grace.Down(time.Now()) {
		if s.synced {
			s.log.Warn("etcd cannot be reached; the read endpoints answer from the last snapshot", "revision", s.rev, "err", err)
		} else {
			s.log.Warn("etcd cannot be reached; the read endpoints answer 503 until a first read succeeds", "err", err)
		}
		s.m.stale.Set(1)
		s.changedLocked(true, true)
	}
}

func (s *Snapshot) upLocked(now time.Time) {
	if s.grace.Up(now) {
		s.log.Info("etcd reachable again; held target groups are kept while nodes re-register", "grace", s.cfg.Grace)
		s.m.stale.Set(0)
		s.changedLocked(true, true)
	}
}

func (s *Snapshot) changedLocked(targets, view bool) {
	if targets {
		s.tgen++
	}
	if view {
		s.vgen++
	}
	s.m.revision.Set(float64(s.rev))
	s.m.held.Set(float64(len(s.held)))
}

// parse checks one targets/ value with the same rule as the master's
// file_sd writer (etcd.Keys.ParseTargetKV) and keeps its fragments. A bad
// value is counted and logged once per key and revision: it is parsed
// again only when its revision changes.
func (s *Snapshot) parse(kv *mvccpb.KeyValue) *targetEntry {
	e := &targetEntry{key: string(kv.Key), modRev: kv.ModRevision}
	t, err := s.cfg.Keys.ParseTargetKV(kv.Key, kv.Value)
	if err != nil {
		e.reason = err.Error()
		s.m.invalid.Inc()
		s.log.Warn("skipping invalid target value", "key", e.key, "revision", kv.ModRevision, "err", err)
		return e
	}
	e.node, e.job, e.id = t.Node, t.Job, t.ID
	// Exact-size copies: GroupJSON's buffer has spare capacity, and 10,000
	// of them are kept.
	e.sd = bytes.Clone(stackconfig.GroupJSON(t.Group()))
	t.TargetGroup = t.Normalize()
	e.api, _ = json.Marshal(t) // strings and maps of strings always encode
	return e
}

// snapshotMeta is what every answer says about its snapshot.
type snapshotMeta struct {
	rev        int64
	stale      bool
	staleSince time.Time
}

func (s *Snapshot) metaLocked() snapshotMeta {
	down, since := s.grace.IsDown()
	return snapshotMeta{rev: s.rev, stale: down, staleSince: since}
}

// targetState is the target set of one generation, immutable once built;
// its answers are rendered on first use.
type targetState struct {
	gen     uint64
	meta    snapshotMeta
	groups  []*targetEntry    // valid and held, by job, node, id
	jobs    map[string][2]int // job -> its range in groups
	skipped []etcd.BadTarget
	held    []string

	all     *rendered
	listing *rendered
	mu      sync.Mutex
	byJob   map[string]*rendered
}

func (s *Snapshot) targetState() (*targetState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		return nil, ErrNotSynced
	}
	if s.tcur != nil && s.tcur.gen == s.tgen {
		return s.tcur, nil
	}
	st := &targetState{gen: s.tgen, meta: s.metaLocked(), jobs: map[string][2]int{}, byJob: map[string]*rendered{}}
	for _, m := range []map[string]*targetEntry{s.targets, s.held} {
		for _, e := range m {
			if e.reason != "" {
				st.skipped = append(st.skipped, etcd.BadTarget{Key: e.key, Reason: e.reason})
				continue
			}
			st.groups = append(st.groups, e)
		}
	}
	for k := range s.held {
		st.held = append(st.held, k)
	}
	slices.Sort(st.held)
	slices.SortFunc(st.skipped, func(a, b etcd.BadTarget) int { return strings.Compare(a.Key, b.Key) })
	// One deterministic order for both answers, so that an unchanged set
	// renders the same bytes (and ETag), and a job is one range.
	slices.SortFunc(st.groups, func(a, b *targetEntry) int {
		return cmp.Or(strings.Compare(a.job, b.job), strings.Compare(a.node, b.node), strings.Compare(a.id, b.id))
	})
	for i, e := range st.groups {
		r, ok := st.jobs[e.job]
		if !ok {
			r[0] = i
		}
		r[1] = i + 1
		st.jobs[e.job] = r
	}
	st.all = s.newRendered("sd_http", func() []byte { return joinSD(st.groups) })
	st.listing = s.newRendered("targets", st.renderListing)
	s.tcur = st
	return st, nil
}

// sdJob is the /sd/http answer of one job; a job with no groups is "[]".
func (st *targetState) sdJob(s *Snapshot, job string) *rendered {
	span, ok := st.jobs[job]
	if !ok {
		return emptyList
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	r := st.byJob[job]
	if r == nil {
		r = s.newRendered("sd_http_job", func() []byte { return joinSD(st.groups[span[0]:span[1]]) })
		st.byJob[job] = r
	}
	return r
}

// joinSD is the http_sd array of es, in the file_sd format the master
// writes.
func joinSD(es []*targetEntry) []byte {
	frags := make([][]byte, len(es))
	for i, e := range es {
		frags[i] = e.sd
	}
	return stackconfig.JoinGroups(frags)
}

// TargetListing is the answer of GET /api/v1/targets: etcd.TargetSet's
// fields, and what the snapshot adds.
type TargetListing struct {
	Targets  []etcd.Target    `json:"targets"`
	Skipped  []etcd.BadTarget `json:"skipped,omitempty"`
	Revision int64            `json:"revision"`
	// Held are the keys of groups still served although their key went
	// away around an etcd outage (until the grace ends).
	Held []string `json:"held,omitempty"`
	// Stale: etcd cannot be reached; this is the last snapshot, taken
	// before StaleSince.
	Stale      bool       `json:"stale,omitempty"`
	StaleSince *time.Time `json:"stale_since,omitempty"`
}

// renderListing writes a TargetListing from the kept fragments.
func (st *targetState) renderListing() []byte {
	tail := TargetListing{Skipped: st.skipped, Revision: st.meta.rev, Held: st.held, Stale: st.meta.stale}
	if st.meta.stale {
		tail.StaleSince = &st.meta.staleSince
	}
	rest, _ := json.Marshal(tail) // {"targets":null,...}
	rest = bytes.TrimPrefix(rest, []byte(`{"targets":null`))
	n := len(rest) + 16
	for _, e := range st.groups {
		n += len(e.api) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, `{"targets":[`...)
	for i, e := range st.groups {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, e.api...)
	}
	out = append(out, ']')
	out = append(out, rest...)
	return append(out, '\n')
}

// viewState is the cluster view of one generation.
type viewState struct {
	gen    uint64
	meta   snapshotMeta
	status *rendered
}

func (s *Snapshot) viewState() (*viewState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		return nil, ErrNotSynced
	}
	if s.vcur != nil && s.vcur.gen == s.vgen {
		return s.vcur, nil
	}
	kvs := make([]*mvccpb.KeyValue, 0, len(s.other))
	for _, kv := range s.other {
		kvs = append(kvs, kv)
	}
	meta, ntargets := s.metaLocked(), len(s.targets)
	s.vcur = &viewState{gen: s.vgen, meta: meta, status: s.newRendered("status", func() []byte {
		view := s.cfg.Keys.View(s.cfg.Cluster, meta.rev, kvs)
		view.Targets = ntargets
		if meta.stale {
			view.Stale, view.StaleSince = true, &meta.staleSince
		}
		b, _ := json.MarshalIndent(view, "", "  ")
		return append(b, '\n')
	})}
	return s.vcur, nil
}

// rendered is one answer, rendered once on first use and shared by every
// request of its generation. Most clients (Prometheus, Go clients) accept
// gzip, so only the compressed form is kept; the identity body is rendered
// again, once, and kept only when a client without gzip asks for it.
// Bodies too small to gain from gzip are kept as they are.
type rendered struct {
	render func() []byte

	once sync.Once
	etag string
	gz   []byte // nil: not compressed, see plain

	plainOnce sync.Once
	plain     []byte
}

// emptyList answers a job that has no groups.
var emptyList = func() *rendered {
	r := &rendered{render: func() []byte { return []byte("[]\n") }}
	r.init()
	return r
}()

func (s *Snapshot) newRendered(endpoint string, f func() []byte) *rendered {
	return &rendered{render: func() []byte {
		s.m.renders.WithLabelValues(endpoint).Inc()
		return f()
	}}
}

// minGzip is the smallest body worth compressing.
const minGzip = 1024

func (r *rendered) init() {
	r.once.Do(func() {
		body := r.render()
		h := fnv.New64a()
		_, _ = h.Write(body)
		r.etag = fmt.Sprintf(`"%016x"`, h.Sum64())
		if len(body) < minGzip {
			r.plainOnce.Do(func() { r.plain = body })
			return
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		_, _ = zw.Write(body)
		_ = zw.Close()
		r.gz = bytes.Clone(buf.Bytes())
	})
}

// ETag is the answer's entity tag.
func (r *rendered) ETag() string {
	r.init()
	return r.etag
}

// gzipped is the compressed body, or nil for a body kept uncompressed.
func (r *rendered) gzipped() []byte {
	r.init()
	return r.gz
}

// body is the uncompressed body.
func (r *rendered) body() []byte {
	r.init()
	r.plainOnce.Do(func() { r.plain = r.render() })
	return r.plain
}
