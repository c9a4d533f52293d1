package targetsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
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

// Sync is the target-sync duty.
type Sync struct {
	cli    *clientv3.Client
	keys   etcd.Keys
	writer *filesd.Writer
	log    *slog.Logger
	m      *metrics

	// OnWrite, when set, is called after a job file was renamed into place
	// (nil content: removed). Benchmarks measure latency with it.
	OnWrite func(job string, content []byte)

	bad map[string]int64 // key -> mod revision already reported as invalid
}

type metrics struct {
	targets  prometheus.Gauge
	invalid  prometheus.Counter
	writes   prometheus.Counter
	resyncs  prometheus.Counter
	duration prometheus.Histogram
}

// New returns the duty; it writes into w.
func New(cli *clientv3.Client, keys etcd.Keys, w *filesd.Writer, log *slog.Logger, reg prometheus.Registerer) *Sync {
	m := &metrics{
		targets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_master_target_groups", Help: "Valid target groups the master writes to file_sd.",
		}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_target_values_invalid_total", Help: "Target values in etcd skipped because they do not parse or carry invalid labels.",
		}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_filesd_writes_total", Help: "file_sd files written or removed.",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_target_resyncs_total", Help: "Full re-reads of the targets prefix (term start, compaction, watch loss).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "agent_master_filesd_apply_seconds", Help: "Time to render and write the files of one etcd change batch.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
	}
	reg.MustRegister(m.targets, m.invalid, m.writes, m.resyncs, m.duration)
	return &Sync{cli: cli, keys: keys, writer: w, log: log, m: m, bad: map[string]int64{}}
}

// Run keeps the files in step until the term ends. It returns ctx's end as
// nil, and an error (filesd.ErrStaleLeader among them) that ends the term.
func (s *Sync) Run(ctx context.Context, lead etcd.Leader) error {
	for ctx.Err() == nil {
		state, rev, err := s.load(ctx, lead.Rev)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, filesd.ErrStaleLeader) {
				return err
			}
			s.log.Warn("target sync: full read failed, retrying", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		err = s.follow(ctx, lead.Rev, state, rev)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, filesd.ErrStaleLeader) {
			return err
		}
		s.log.Warn("target sync: watch ended, reading everything again", "err", err)
	}
	return nil
}

// state holds the rendered group of every valid target by key, grouped by
// job; a job file is the sorted concatenation of its fragments.
type state map[string]map[string]entry // job -> etcd key -> group

type entry struct {
	order string // stackconfig.GroupOrder: the order RenderFileSD uses
	json  []byte // stackconfig.GroupJSON
}

// load reads the whole prefix, rewrites every job file and removes files of
// jobs that no longer exist.
func (s *Sync) load(ctx context.Context, leaderRev int64) (state, int64, error) {
	s.m.resyncs.Inc()
	s.m.targets.Set(0)
	resp, err := s.cli.Get(ctx, s.keys.Targets(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	st := state{}
	for _, kv := range resp.Kvs {
		s.apply(st, kv)
	}
	files := map[string][]byte{}
	for job := range st {
		files[job] = render(st[job])
	}
	onDisk, err := s.writer.Jobs()
	if err != nil {
		return nil, 0, err
	}
	for _, job := range onDisk {
		if _, ok := st[job]; !ok {
			files[job] = nil
		}
	}
	if err := s.write(leaderRev, files); err != nil {
		return nil, 0, err
	}
	return st, resp.Header.Revision, nil
}

// follow applies watch events from rev+1 on.
func (s *Sync) follow(ctx context.Context, leaderRev int64, st state, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.cli.Watch(wctx, s.keys.Targets(), clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV()) {
		if err := wr.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return fmt.Errorf("watch compacted at %d: %w", wr.CompactRevision, err)
			}
			return err
		}
		start := time.Now()
		dirty := map[string]bool{}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				if job := s.remove(st, ev.Kv.Key); job != "" {
					dirty[job] = true
				}
				continue
			}
			// A put may move a key from valid to invalid: drop the old first.
			if job := s.remove(st, ev.Kv.Key); job != "" {
				dirty[job] = true
			}
			if job := s.apply(st, ev.Kv); job != "" {
				dirty[job] = true
			}
		}
		if len(dirty) == 0 {
			continue
		}
		files := map[string][]byte{}
		for job := range dirty {
			if len(st[job]) == 0 {
				delete(st, job)
				files[job] = nil
				continue
			}
			files[job] = render(st[job])
		}
		if err := s.write(leaderRev, files); err != nil {
			return err
		}
		s.m.duration.Observe(time.Since(start).Seconds())
	}
	return ctx.Err()
}

// apply adds a valid target to st and returns its job; an invalid value is
// counted and logged once per key and revision.
func (s *Sync) apply(st state, kv *mvccpb.KeyValue) string {
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
	if st[t.Job] == nil {
		st[t.Job] = map[string]entry{}
	}
	g := t.Group()
	st[t.Job][key] = entry{order: stackconfig.GroupOrder(g), json: stackconfig.GroupJSON(g)}
	s.m.targets.Inc()
	return t.Job
}

// remove drops key from st and returns the job it was in, or "".
func (s *Sync) remove(st state, k []byte) string {
	key := string(k)
	delete(s.bad, key)
	_, job, _, ok := s.keys.ParseTarget(key)
	if !ok {
		return ""
	}
	if _, ok := st[job][key]; !ok {
		return ""
	}
	delete(st[job], key)
	s.m.targets.Dec()
	return job
}

func (s *Sync) write(leaderRev int64, files map[string][]byte) error {
	changed, err := s.writer.Apply(leaderRev, files)
	s.m.writes.Add(float64(len(changed)))
	if s.OnWrite != nil {
		for _, job := range changed {
			s.OnWrite(job, files[job])
		}
	}
	return err
}

// render joins one job's groups into file_sd JSON in RenderFileSD's order,
// so file_sd and http_sd give the same bytes for the same targets.
func render(groups map[string]entry) []byte {
	es := slices.SortedFunc(maps.Values(groups), func(a, b entry) int { return strings.Compare(a.order, b.order) })
	frags := make([][]byte, len(es))
	for i, e := range es {
		frags[i] = e.json
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
