package slave

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/stackconfig"
)

// SnapshotConfig configures a Snapshot.
type SnapshotConfig struct {
	Keys    etcd.Keys
	Cluster string
	// TTL is the agents' lease TTL (default DefaultSnapshotTTL). It sets
	// the rule of etcd.RemovalHold, the same as the master's file_sd
	// follows: how long target groups removed around an etcd outage are
	// still served (etcd.HoldFor), and how long etcd may stay silent
	// before the answers are marked stale (TTL/2).
	TTL time.Duration
}

// DefaultSnapshotTTL is SnapshotConfig.TTL when unset: the agent's default
// lease TTL.
const DefaultSnapshotTTL = 5 * time.Second

// ErrNotSynced is answered (503) before the first read of etcd succeeded.
var ErrNotSynced = errors.New("no snapshot of etcd yet: the agent has not read the cluster since it started")

// etcdWatcher is what the Snapshot needs of etcd; *clientv3.Client is one.
type etcdWatcher interface {
	clientv3.KV
	clientv3.Watcher
}

// Snapshot is the cluster as the read endpoints (GET /sd/http,
// /api/v1/targets, /api/v1/status) answer it: one paged read of the
// cluster's prefix, then one watch, kept in memory. Answers are rendered
// once per change, on the first request that needs them, and shared by
// every request until the next change: a request never reads etcd and
// never encodes the target set itself, so API load costs etcd nothing and
// memory does not grow with concurrent requests.
//
// Each target group is kept in one form, the fragment the master writes to
// file_sd (stackconfig.GroupJSON): /sd/http joins the fragments as they
// are, /api/v1/targets compacts them (renderListing).
//
// Through an etcd outage the Snapshot follows etcd.RemovalHold, the rule
// of the master's file_sd: besides the watch, etcd is asked for a count of
// the members every Heartbeat, so a quiet etcd is told from a silent one
// (etcd.Heartbeats); once etcd is
// silent for longer than the hold's Gap the answers are marked stale (what
// was seen last, "stale since" the last answer); and target groups removed
// in the first hold after etcd answers again are still served until the
// hold ends, or until their node publishes them again.
type Snapshot struct {
	cli       etcdWatcher
	cfg       SnapshotConfig
	log       *slog.Logger
	m         *snapshotMetrics
	heartbeat time.Duration

	mu      sync.Mutex
	synced  bool
	rev     int64
	other   map[string]*mvccpb.KeyValue // every key outside targets/
	targets map[string]*targetEntry     // targets/ keys, valid or not
	held    map[string]*targetEntry     // valid groups whose removal the hold keeps back
	hold    *etcd.RemovalHold
	stale   bool   // etcd silent for longer than the hold's Gap
	lastErr error  // why the last read or watch of etcd failed
	warned  bool   // the first read's failure is logged
	tgen    uint64 // bumped by every change of what the target answers show
	vgen    uint64 // bumped by every change of what the status shows
	tcur    *targetState
	vcur    *viewState
	etcd    *etcd.EtcdView // the status' etcd part (FollowEtcd)
}

// targetEntry is one targets/ key, parsed once per mod revision and kept in
// one compact form. Its node, job and id are parts of key.
type targetEntry struct {
	key    string
	modRev int64
	sd     []byte  // stackconfig.GroupJSON of its group as Prometheus gets it, exact size; nil when invalid
	ownJob *string // the group's own job label, which sd shows replaced by the key's job; nil: none
	reason string  // why it is skipped; "" when valid
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
			Name: "agent_api_snapshot_stale", Help: "1 while etcd is silent and the read endpoints answer from the last snapshot, else 0.",
		}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_api_snapshot_revision", Help: "etcd revision of the snapshot the read endpoints answer from.",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_api_targets_held", Help: "Target groups removed after an etcd outage, still served until their nodes had time to re-register.",
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
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultSnapshotTTL
	}
	hold := etcd.NewRemovalHold(cfg.TTL)
	return &Snapshot{
		cli: cli, cfg: cfg, log: log, m: newSnapshotMetrics(reg), heartbeat: hold.Heartbeat(),
		other: map[string]*mvccpb.KeyValue{}, targets: map[string]*targetEntry{}, held: map[string]*targetEntry{},
		hold: hold,
	}
}

// Run keeps the snapshot in step with etcd until ctx ends: a full read,
// then a watch from its revision; when the watch fails (no leader,
// compaction) it reads again, with backoff while reads fail.
func (s *Snapshot) Run(ctx context.Context) error {
	bo := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	for ctx.Err() == nil {
		rev, err := s.load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.failed(err)
			sleep(ctx, bo.next())
			continue
		}
		bo.reset()
		err = s.follow(ctx, rev)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Debug("watch of the cluster ended, reading it again", "err", err)
		s.failed(err)
	}
	return nil
}

// load reads the whole cluster prefix, a page at a time, and makes it the
// snapshot; target groups that are gone are held if the hold says so.
// Values are parsed as the pages come, outside the lock: only Run writes
// the maps, so it may read them unlocked.
func (s *Snapshot) load(ctx context.Context) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	prefix := s.cfg.Keys.Targets()
	old := s.targets
	fresh := make(map[string]*targetEntry, len(old))
	other := map[string]*mvccpb.KeyValue{}
	rev, err := etcd.ReadPrefix(lctx, s.cli, s.cfg.Keys.Root(), func(kv *mvccpb.KeyValue) {
		key := string(kv.Key)
		if !strings.HasPrefix(key, prefix) {
			other[key] = kv
			return
		}
		if e := old[key]; e != nil && e.modRev == kv.ModRevision {
			fresh[key] = e
			return
		}
		fresh[key] = s.parse(key, kv)
	})
	if err != nil {
		return 0, fmt.Errorf("read cluster: %w", err)
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.contactLocked(now)
	s.m.reloads.Inc()
	for key := range fresh {
		s.hold.Put(key)
		delete(s.held, key)
	}
	for key, e := range old {
		if _, ok := fresh[key]; !ok {
			s.goneLocked(now, e)
		}
	}
	s.targets, s.other = fresh, other
	s.synced = true
	s.rev = rev
	s.changedLocked(true, true)
	return rev, nil
}

// follow applies the watch from rev+1 until it fails or ctx ends, keeps
// etcd talking (etcd.Heartbeats), marks the answers stale when it is
// silent, and drops held groups when their hold ends.
func (s *Snapshot) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wch := s.cli.Watch(wctx, s.cfg.Keys.Root(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	beats := make(chan time.Time, 1)
	wg.Go(func() { etcd.Heartbeats(wctx, s.cli, s.cfg.Keys.Members(), s.heartbeat, beats) })
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.arm(timer)
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
		case at := <-beats:
			s.mu.Lock()
			s.contactLocked(at)
			s.mu.Unlock()
		case now := <-timer.C:
			s.tick(now)
		}
	}
}

// arm sets timer to the next moment something changes without etcd
// saying so: a held removal comes due, or etcd's silence makes the
// answers stale.
func (s *Snapshot) arm(timer *time.Timer) {
	s.mu.Lock()
	next, ok := s.hold.Next()
	if !s.stale {
		if silent := s.hold.LastContact().Add(s.hold.Gap() + time.Millisecond); !ok || silent.Before(next) {
			next, ok = silent, true
		}
	}
	s.mu.Unlock()
	if !ok {
		next = time.Now().Add(time.Hour)
	}
	timer.Reset(time.Until(next))
}

// apply applies one watch response: events, or none for a progress
// notification. Either way etcd answered.
func (s *Snapshot) apply(evs []*clientv3.Event, rev int64) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.contactLocked(now)
	if len(evs) == 0 {
		return
	}
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
		s.hold.Put(key)
		delete(s.held, key)
		s.targets[key] = s.parse(key, ev.Kv)
	}
	s.rev = rev
	// The status counts the targets, so a target change is a status change.
	s.changedLocked(targets, targets || other)
}

// goneLocked removes a target group whose key went away, or holds it.
func (s *Snapshot) goneLocked(now time.Time, e *targetEntry) {
	if e.sd != nil && s.hold.Remove(e.key, now) {
		s.held[e.key] = e
	}
}

// tick drops the held groups whose hold ended and notices a silent etcd.
func (s *Snapshot) tick(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gone := 0
	for _, key := range s.hold.Due(now) {
		if _, ok := s.held[key]; ok {
			delete(s.held, key)
			gone++
		}
	}
	if gone > 0 {
		s.log.Info("target groups not published again within the hold after an etcd outage are gone", "count", gone, "hold", s.hold.Hold())
		s.changedLocked(true, false)
	}
	s.silenceLocked(now)
}

// failed records why etcd could not be read or watched; the answers turn
// stale once etcd has been silent for the hold's Gap.
func (s *Snapshot) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err
	if !s.synced && !s.warned {
		s.warned = true
		s.log.Warn("etcd cannot be read; the read endpoints answer 503 until a first read succeeds", "err", err)
	}
	s.silenceLocked(time.Now())
}

// silenceLocked marks the answers stale when etcd has not answered for
// longer than the hold's Gap. Readers call it too, so an answer is marked
// as soon as that is true, whatever Run is waiting for.
func (s *Snapshot) silenceLocked(now time.Time) {
	if !s.synced || s.stale || s.hold.Healthy(now) {
		return
	}
	s.stale = true
	s.log.Warn("etcd is silent; the read endpoints answer from the last snapshot", "revision", s.rev,
		"since", s.hold.LastContact().Format(time.RFC3339Nano), "err", s.lastErr)
	s.m.stale.Set(1)
	s.changedLocked(true, true)
}

// contactLocked records an answer of etcd.
func (s *Snapshot) contactLocked(now time.Time) {
	recovered := s.hold.Contact(now)
	if recovered {
		s.log.Info("etcd answers again; target groups removed meanwhile are held while the nodes re-register",
			"until", now.Add(s.hold.Hold()).Format(time.RFC3339Nano))
	}
	if s.stale {
		s.stale, s.lastErr = false, nil
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
// file_sd writer (etcd.Keys.ParseTargetKV) and keeps its fragment. A bad
// value is counted and logged once per key and revision: it is parsed
// again only when its revision changes. key is kv.Key, the string the map
// holds too: one copy of it.
func (s *Snapshot) parse(key string, kv *mvccpb.KeyValue) *targetEntry {
	e := &targetEntry{key: key, modRev: kv.ModRevision}
	t, err := s.cfg.Keys.ParseTargetKV(kv.Key, kv.Value)
	if err != nil {
		e.reason = err.Error()
		s.m.invalid.Inc()
		s.log.Warn("skipping invalid target value", "key", e.key, "revision", kv.ModRevision, "err", err)
		return e
	}
	if v, ok := t.Labels[model.JobLabel]; ok {
		own := string(v)
		e.ownJob = &own
	}
	// An exact-size copy: GroupJSON's buffer has spare capacity, and
	// 10,000 of them are kept.
	e.sd = bytes.Clone(stackconfig.GroupJSON(t.Group()))
	return e
}

// snapshotMeta is what every answer says about its snapshot.
type snapshotMeta struct {
	rev        int64
	stale      bool
	staleSince time.Time
}

func (s *Snapshot) metaLocked() snapshotMeta {
	return snapshotMeta{rev: s.rev, stale: s.stale, staleSince: s.hold.LastContact()}
}

// targetState is the target set of one generation, immutable once built;
// its answers are rendered on first use.
type targetState struct {
	gen     uint64
	meta    snapshotMeta
	keys    etcd.Keys
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
	s.silenceLocked(time.Now())
	if s.tcur != nil && s.tcur.gen == s.tgen {
		return s.tcur, nil
	}
	st := &targetState{gen: s.tgen, meta: s.metaLocked(), keys: s.cfg.Keys, jobs: map[string][2]int{}, byJob: map[string]*rendered{}}
	st.groups = make([]*targetEntry, 0, len(s.targets)+len(s.held))
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
	// The order of the master's file_sd files (etcd.Keys.CompareTargets),
	// so that an unchanged set renders the same bytes (and ETag) as the
	// file, and a job is one range.
	slices.SortFunc(st.groups, func(a, b *targetEntry) int { return s.cfg.Keys.CompareTargets(a.key, b.key) })
	for i, e := range st.groups {
		_, job, _, _ := s.cfg.Keys.ParseTarget(e.key)
		r, ok := st.jobs[job]
		if !ok {
			r[0] = i
		}
		r[1] = i + 1
		st.jobs[job] = r
	}
	st.all = s.newRendered("sd_http", func(w io.Writer) { writeSD(w, st.groups) })
	st.listing = s.newRendered("targets", st.writeListing)
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
		r = s.newRendered("sd_http_job", func(w io.Writer) { writeSD(w, st.groups[span[0]:span[1]]) })
		st.byJob[job] = r
	}
	return r
}

// writeSD writes the http_sd array of es, in the file_sd format the
// master writes.
func writeSD(w io.Writer, es []*targetEntry) {
	_ = stackconfig.WriteGroups(w, func(yield func([]byte) bool) {
		for _, e := range es {
			if !yield(e.sd) {
				return
			}
		}
	})
}

// TargetListing is the answer of GET /api/v1/targets: etcd.TargetSet's
// fields, and what the snapshot adds.
type TargetListing struct {
	Targets  []etcd.Target    `json:"targets"`
	Skipped  []etcd.BadTarget `json:"skipped,omitempty"`
	Revision int64            `json:"revision"`
	// Held are the keys of groups still served although their key went
	// away after an etcd outage (until their nodes had time to publish
	// them again: etcd.RemovalHold).
	Held []string `json:"held,omitempty"`
	// Stale: etcd is silent; this is the snapshot as of StaleSince, its
	// last answer.
	Stale      bool       `json:"stale,omitempty"`
	StaleSince *time.Time `json:"stale_since,omitempty"`
}

// writeListing writes a TargetListing from the kept fragments.
func (st *targetState) writeListing(w io.Writer) {
	tail := TargetListing{Skipped: st.skipped, Revision: st.meta.rev, Held: st.held, Stale: st.meta.stale}
	if st.meta.stale {
		tail.StaleSince = &st.meta.staleSince
	}
	rest, _ := json.Marshal(tail) // {"targets":null,...}
	rest = bytes.TrimPrefix(rest, []byte(`{"targets":null`))
	_, _ = io.WriteString(w, `{"targets":[`)
	var scratch bytes.Buffer
	var entry []byte
	for i, e := range st.groups {
		entry = entry[:0]
		if i > 0 {
			entry = append(entry, ',')
		}
		entry = appendTarget(entry, &scratch, st.keys, e)
		_, _ = w.Write(entry)
	}
	_, _ = io.WriteString(w, "]")
	_, _ = w.Write(rest)
	_, _ = io.WriteString(w, "\n")
}

// appendTarget appends e as JSON of etcd.Target, made from its file_sd
// fragment: the key's node, job and id, then the fragment compacted, with
// the group's own job label in place of the key's (or none), as it was
// published.
func appendTarget(out []byte, scratch *bytes.Buffer, keys etcd.Keys, e *targetEntry) []byte {
	node, job, id, _ := keys.ParseTarget(e.key)
	head, _ := json.Marshal(struct {
		Node string `json:"node"`
		Job  string `json:"job"`
		ID   string `json:"id"`
	}{node, job, id})
	out = append(out, head[:len(head)-1]...) // without its '}'
	out = append(out, ',')
	scratch.Reset()
	if err := json.Compact(scratch, e.sd); err != nil {
		panic(err) // GroupJSON's output is JSON
	}
	group := scratch.Bytes() // {"targets":[...],"labels":{...}}
	start, end, ok := jobLabelMember(group)
	if !ok {
		return append(out, group[1:]...)
	}
	if e.ownJob != nil {
		v, _ := json.Marshal(*e.ownJob)
		out = append(out, group[1:start]...)
		out = append(out, `"job":`...)
		out = append(out, v...)
		return append(out, group[end:]...)
	}
	// Drop the member and one comma next to it.
	switch {
	case group[end] == ',':
		end++
	case group[start-1] == ',':
		start--
	}
	out = append(out, group[1:start]...)
	return append(out, group[end:]...)
}

// jobLabelMember finds the "job" member of the labels object in the
// compact JSON of a stackconfig.TargetGroup, {"targets":[S,...],
// "labels":{S:S,...}} with S JSON strings; [start, end) is the member
// without commas. Member names are only found where a name can be, never
// inside a string.
func jobLabelMember(b []byte) (start, end int, ok bool) {
	i := 0
	expect := func(c byte) bool {
		if i < len(b) && b[i] == c {
			i++
			return true
		}
		return false
	}
	str := func() ([]byte, bool) {
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		from := i
		for i++; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				i++
				return b[from:i], true
			}
		}
		return nil, false
	}
	if !expect('{') {
		return 0, 0, false
	}
	if name, ok := str(); !ok || string(name) != `"targets"` || !expect(':') || !expect('[') {
		return 0, 0, false
	}
	for !expect(']') {
		if _, ok := str(); !ok {
			return 0, 0, false
		}
		expect(',')
	}
	if !expect(',') {
		return 0, 0, false
	}
	if name, ok := str(); !ok || string(name) != `"labels"` || !expect(':') || !expect('{') {
		return 0, 0, false
	}
	for !expect('}') {
		from := i
		name, ok := str()
		if !ok || !expect(':') {
			return 0, 0, false
		}
		if _, ok := str(); !ok {
			return 0, 0, false
		}
		if string(name) == `"job"` {
			return from, i, true
		}
		expect(',')
	}
	return 0, 0, false
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
	s.silenceLocked(time.Now())
	if s.vcur != nil && s.vcur.gen == s.vgen {
		return s.vcur, nil
	}
	kvs := make([]*mvccpb.KeyValue, 0, len(s.other))
	for _, kv := range s.other {
		kvs = append(kvs, kv)
	}
	meta, ntargets, etcdView := s.metaLocked(), len(s.targets), s.etcd
	s.vcur = &viewState{gen: s.vgen, meta: meta, status: s.newRendered("status", func(w io.Writer) {
		view := s.cfg.Keys.View(s.cfg.Cluster, meta.rev, kvs)
		view.Targets = ntargets
		view.Etcd = etcdView
		if meta.stale {
			view.Stale, view.StaleSince = true, &meta.staleSince
		}
		b, _ := json.MarshalIndent(view, "", "  ")
		_, _ = w.Write(append(b, '\n'))
	})}
	return s.vcur, nil
}
