package targetsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/master"
	"github.com/agentproj/agent/master/filesd"
	"github.com/agentproj/agent/stackconfig"
)

// DefaultTTL is the agents' lease TTL assumed when New is given none.
const DefaultTTL = 5 * time.Second

// Sync is the target-sync duty. One Sync serves every term of the agent:
// what the files show is kept across terms, for the holdover after an
// outage (see Run).
type Sync struct {
	cli    *clientv3.Client
	keys   etcd.Keys
	writer *filesd.Writer
	log    *slog.Logger
	m      *metrics

	// OnWrite, when set, is called after a job file was renamed into place
	// (nil content: removed). Benchmarks measure latency with it.
	OnWrite func(job string, content []byte)

	bad  map[string]int64 // key -> mod revision already reported as invalid
	st   state            // what the files show; nil: nothing known
	hold *etcd.RemovalHold

	retry   map[string]bool   // jobs whose file could not be written
	retryAt time.Time         // when to try them again
	failing map[string]string // job -> the write error last logged
}

type metrics struct {
	targets     prometheus.Gauge
	invalid     prometheus.Counter
	writes      prometheus.Counter
	writeErrors prometheus.Counter
	resyncs     prometheus.Counter
	held        prometheus.Counter
	duration    prometheus.Histogram
}

// Option configures a Sync.
type Option func(*Sync)

// WithTTL sets the agents' lease TTL (default DefaultTTL): removals seen in
// the first etcd.HoldFor(ttl) after etcd comes back are held.
func WithTTL(ttl time.Duration) Option {
	return func(s *Sync) { s.hold = etcd.NewRemovalHold(ttl) }
}

// New returns the duty; it writes into w.
func New(cli *clientv3.Client, keys etcd.Keys, w *filesd.Writer, log *slog.Logger, reg prometheus.Registerer, opts ...Option) *Sync {
	m := &metrics{
		targets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_master_target_groups", Help: "Target groups the master writes to file_sd (held ones included).",
		}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_target_values_invalid_total", Help: "Target values in etcd skipped because they break the target group rule (job name, JSON, UTF-8, labels, size).",
		}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_filesd_writes_total", Help: "file_sd files written or removed.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_filesd_write_errors_total", Help: "file_sd files that could not be written or removed (retried every second; other jobs go on).",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_target_resyncs_total", Help: "Full re-reads of the targets prefix (term start, compaction, watch loss).",
		}),
		held: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_target_removals_held_total", Help: "Target removals held after etcd came back, while the agents re-register.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "agent_master_filesd_apply_seconds", Help: "Time to render and write the files of one etcd change batch.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
	}
	reg.MustRegister(m.targets, m.invalid, m.writes, m.writeErrors, m.resyncs, m.held, m.duration)
	s := &Sync{
		cli: cli, keys: keys, writer: w, log: log, m: m,
		bad: map[string]int64{}, hold: etcd.NewRemovalHold(DefaultTTL),
		retry: map[string]bool{}, failing: map[string]string{},
	}
	for _, o := range opts {
		o(s)
	}
	w.OnNewSequence = func(cluster uint64, rev int64) {
		log.Info("file_sd directory was written under another etcd history; starting a new leader sequence",
			"old_cluster_id", fmt.Sprintf("%x", cluster), "old_revision", rev)
	}
	return s
}

// Run keeps the files in step until the term ends. It returns ctx's end as
// nil, and an error (filesd.ErrStaleLeader, etcd.ErrFenced) that ends the
// term.
//
// The files are the last-known set and are never emptied because etcd is
// away: during an outage nothing is written, and after it removals are
// held (etcd.RemovalHold) until the agents had a TTL to re-register. When
// a term ends while etcd is silent (the session expired in the outage),
// the set is kept for the next term of this agent to hold removals
// against; when it ends while etcd answers, the next term starts from etcd
// alone.
func (s *Sync) Run(ctx context.Context, lead etcd.Leader) error {
	term := filesd.Term{ClusterID: lead.ClusterID, Rev: lead.Rev, Revision: func() (int64, error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		rev, err := lead.Revision(rctx)
		if errors.Is(err, etcd.ErrFenced) {
			err = fmt.Errorf("%w: %w", filesd.ErrStaleLeader, err)
		}
		return rev, err
	}}
	defer s.endTerm()
	for ctx.Err() == nil {
		rev, err := s.load(ctx, term)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if termOver(err) {
				return err
			}
			s.log.Warn("target sync: full read failed, retrying", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		err = s.follow(ctx, term, rev)
		if ctx.Err() != nil {
			return nil
		}
		if termOver(err) {
			return err
		}
		s.log.Warn("target sync: watch ended, reading everything again", "err", err)
	}
	return nil
}

func termOver(err error) bool {
	return errors.Is(err, filesd.ErrStaleLeader) || errors.Is(err, etcd.ErrFenced)
}

// endTerm keeps the set for the next term only if etcd is silent.
func (s *Sync) endTerm() {
	if s.hold.Healthy(time.Now()) {
		s.st = nil
		s.hold.Reset()
	}
}

// state holds every target the files show, by job and etcd key, each as
// its group's file_sd fragment (stackconfig.GroupJSON, exact size): the
// one form kept, so a job file is the fragments joined in
// etcd.Keys.CompareTargets order.
type state map[string]map[string][]byte // job -> etcd key -> fragment

func (st state) put(job, key string, frag []byte) {
	if st[job] == nil {
		st[job] = map[string][]byte{}
	}
	st[job][key] = frag
}

func (st state) count() int {
	n := 0
	for _, es := range st {
		n += len(es)
	}
	return n
}

// load reads the whole prefix, rewrites every job file and removes files of
// jobs that no longer exist. Targets of the last-known set that are gone
// stay while their removal is held.
func (s *Sync) load(ctx context.Context, term filesd.Term) (int64, error) {
	s.m.resyncs.Inc()
	prev := s.st
	s.st = state{}
	seen := map[string]bool{}
	rev, err := etcd.ReadPrefix(ctx, s.cli, s.keys.Targets(), func(kv *mvccpb.KeyValue) {
		seen[string(kv.Key)] = true
		s.hold.Put(string(kv.Key))
		s.apply(kv)
	})
	if err != nil {
		s.st = prev // what the files show
		return 0, err
	}
	now := time.Now()
	s.contact(now)
	held := 0
	for job, es := range prev {
		for key, frag := range es {
			if !seen[key] && s.hold.Remove(key, now) {
				s.st.put(job, key, frag)
				held++
			}
		}
	}
	s.m.held.Add(float64(held))
	s.m.targets.Set(float64(s.st.count()))
	files := map[string][]byte{}
	for job := range s.st {
		files[job] = s.render(s.st[job])
	}
	onDisk, err := s.writer.Jobs()
	if err != nil {
		return 0, err
	}
	for _, job := range onDisk {
		if _, ok := s.st[job]; !ok {
			files[job] = nil
		}
	}
	clear(s.retry)
	if err := s.write(term, files); err != nil {
		return 0, err
	}
	return rev, nil
}

// contact tells the hold that etcd answered.
func (s *Sync) contact(now time.Time) {
	if s.hold.Contact(now) {
		s.log.Info("etcd answers again; target removals are held while the agents re-register",
			"until", now.Add(s.hold.Hold()).Format(time.RFC3339Nano))
	}
}

// follow applies watch events from rev+1 on, the held removals that come
// due, and retries of files that failed.
func (s *Sync) follow(ctx context.Context, term filesd.Term, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wch := s.cli.Watch(wctx, s.keys.Targets(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	beats := make(chan time.Time, 1)
	wg.Add(1)
	go func() { defer wg.Done(); etcd.Heartbeats(wctx, s.cli, s.keys.Members(), s.hold.Heartbeat(), beats) }()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.arm(timer)
		var dirty map[string]bool
		var start time.Time
		select {
		case at := <-beats:
			s.contact(at)
			continue
		case wr, ok := <-wch:
			if !ok {
				return ctx.Err()
			}
			if err := wr.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					return fmt.Errorf("watch compacted at %d: %w", wr.CompactRevision, err)
				}
				return err
			}
			start = time.Now()
			s.contact(start)
			dirty = s.events(wr.Events, start)
		case now := <-timer.C:
			start = now
			dirty = s.due(now)
		}
		if len(dirty) == 0 {
			continue
		}
		files := map[string][]byte{}
		for job := range dirty {
			if len(s.st[job]) == 0 {
				delete(s.st, job)
				files[job] = nil
				continue
			}
			files[job] = s.render(s.st[job])
		}
		s.m.targets.Set(float64(s.st.count()))
		if err := s.write(term, files); err != nil {
			return err
		}
		s.m.duration.Observe(time.Since(start).Seconds())
	}
}

// arm sets timer to the next held removal or retry.
func (s *Sync) arm(timer *time.Timer) {
	next, ok := s.hold.Next()
	if len(s.retry) > 0 && (!ok || s.retryAt.Before(next)) {
		next, ok = s.retryAt, true
	}
	if !ok {
		timer.Stop()
		return
	}
	timer.Reset(time.Until(next))
}

// events applies one watch batch and returns the jobs it touched.
func (s *Sync) events(evs []*clientv3.Event, now time.Time) map[string]bool {
	dirty := map[string]bool{}
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		if ev.Type == clientv3.EventTypeDelete {
			if s.has(key) && s.hold.Remove(key, now) {
				s.m.held.Inc()
				continue
			}
			if job := s.remove(key); job != "" {
				dirty[job] = true
			}
			continue
		}
		s.hold.Put(key)
		// A put may move a key from valid to invalid: drop the old first.
		if job := s.remove(key); job != "" {
			dirty[job] = true
		}
		if job := s.apply(ev.Kv); job != "" {
			dirty[job] = true
		}
	}
	return dirty
}

// due removes the held targets whose hold ended and picks up the jobs to
// retry.
func (s *Sync) due(now time.Time) map[string]bool {
	dirty := map[string]bool{}
	for _, key := range s.hold.Due(now) {
		if job := s.remove(key); job != "" {
			dirty[job] = true
		}
	}
	if len(s.retry) > 0 && !now.Before(s.retryAt) {
		for job := range s.retry {
			dirty[job] = true
		}
	}
	return dirty
}

// apply adds a valid target to the state and returns its job; an invalid
// value is counted and logged once per key and revision.
func (s *Sync) apply(kv *mvccpb.KeyValue) string {
	t, err := s.keys.ParseTargetKV(kv.Key, kv.Value)
	key := string(kv.Key)
	if err != nil {
		if s.bad[key] != kv.ModRevision {
			s.bad[key] = kv.ModRevision
			s.m.invalid.Inc()
			s.log.Warn("skipping invalid target value", "key", key, "err", err)
		}
		return ""
	}
	delete(s.bad, key)
	// An exact-size copy: GroupJSON's buffer has spare capacity, and
	// 10,000 of them are kept.
	s.st.put(t.Job, key, bytes.Clone(stackconfig.GroupJSON(t.Group())))
	return t.Job
}

// has reports whether the files show key.
func (s *Sync) has(key string) bool {
	_, job, _, ok := s.keys.ParseTarget(key)
	if !ok {
		return false
	}
	_, ok = s.st[job][key]
	return ok
}

// remove drops key from the state and returns the job it was in, or "".
func (s *Sync) remove(key string) string {
	delete(s.bad, key)
	_, job, _, ok := s.keys.ParseTarget(key)
	if !ok {
		return ""
	}
	if _, ok := s.st[job][key]; !ok {
		return ""
	}
	delete(s.st[job], key)
	return job
}

// write applies files; a job that fails is counted, logged once and
// retried a second later without holding up the others. Only an error
// for the whole directory is returned.
func (s *Sync) write(term filesd.Term, files map[string][]byte) error {
	changed, failed, err := s.writer.Apply(term, files)
	s.m.writes.Add(float64(len(changed)))
	if s.OnWrite != nil {
		for _, job := range changed {
			s.OnWrite(job, files[job])
		}
	}
	if err != nil {
		return err
	}
	for job := range files {
		ferr, bad := failed[job]
		if !bad {
			delete(s.retry, job)
			if _, was := s.failing[job]; was {
				delete(s.failing, job)
				s.log.Info("file_sd file written again", "job", job)
			}
			continue
		}
		s.m.writeErrors.Inc()
		s.retry[job] = true
		if s.failing[job] != ferr.Error() {
			s.failing[job] = ferr.Error()
			s.log.Error("cannot write file_sd file; retrying every second, other jobs go on", "job", job, "err", ferr)
		}
	}
	if len(failed) > 0 {
		s.retryAt = time.Now().Add(time.Second)
	}
	return nil
}

// render joins one job's groups into file_sd JSON, ordered by node and id
// (etcd.Keys.CompareTargets), the order of every agent's http_sd answer:
// file_sd and http_sd give the same bytes for the same targets.
func (s *Sync) render(groups map[string][]byte) []byte {
	keys := slices.SortedFunc(maps.Keys(groups), s.keys.CompareTargets)
	frags := make([][]byte, len(keys))
	for i, key := range keys {
		frags[i] = groups[key]
	}
	return stackconfig.JoinGroups(frags)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

var _ master.Duty = (*Sync)(nil)
