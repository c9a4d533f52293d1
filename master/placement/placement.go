package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/master"
	"github.com/agentproj/agent/slave/apps"
)

// DefaultGrace is how long a node must be gone before its apps move.
const DefaultGrace = 10 * time.Second

// Config configures the duty.
type Config struct {
	Keys etcd.Keys
	// Grace is how long a member record must be absent before the node's
	// apps move; zero means DefaultGrace. Make it at least twice the
	// session TTL: a restarting agent registers again within TTL + 1s.
	Grace time.Duration
}

// Placer is the duty.
type Placer struct {
	cli *clientv3.Client
	cfg Config
	log *slog.Logger
	m   *metrics

	// Owned by Run.
	bad    map[string]int64  // key -> mod revision reported invalid
	warned map[string]string // guid -> dead node a pinned app waits for, logged
}

type metrics struct {
	moves    prometheus.Counter
	stranded prometheus.Gauge
	invalid  prometheus.Counter
}

// New returns the duty. A nil reg registers no metrics.
func New(cli *clientv3.Client, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Placer {
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	m := &metrics{
		moves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_app_replacements_total", Help: "Apps moved from a dead node to a live one.",
		}),
		stranded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_master_apps_stranded", Help: "Apps assigned to a node that has no member record (within the grace period, pinned, or with no live node to go to).",
		}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_master_app_records_invalid_total", Help: "Records under apps/ the placement duty skipped because they do not parse or validate.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.moves, m.stranded, m.invalid)
	}
	return &Placer{cli: cli, cfg: cfg, log: log, m: m, bad: map[string]int64{}, warned: map[string]string{}}
}

// state is the duty's view of the cluster.
type state struct {
	live map[string]bool
	gone map[string]time.Time // node -> first seen without a member record
	apps map[string]app       // guid -> valid record
}

type app struct {
	rec apps.Record
	rev int64 // mod revision of apps/<guid>
}

// Run follows members and apps until the term ends. It returns nil when
// ctx ends and etcd.ErrFenced when a move finds the term over.
func (p *Placer) Run(ctx context.Context, lead etcd.Leader) error {
	gone := map[string]time.Time{} // kept across re-reads of one term
	for ctx.Err() == nil {
		st, rev, err := p.load(ctx, gone)
		if err == nil {
			err = p.follow(ctx, lead, st, rev)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, etcd.ErrFenced):
			return err
		}
		p.log.Warn("placement: reading members and apps again", "err", err)
		wait(ctx, time.Second)
	}
	return nil
}

// load reads members and apps at one revision.
func (p *Placer) load(ctx context.Context, gone map[string]time.Time) (*state, int64, error) {
	resp, err := p.cli.Txn(ctx).Then(
		clientv3.OpGet(p.cfg.Keys.Members(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(p.cfg.Keys.Apps(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("read members and apps: %w", err)
	}
	st := &state{live: map[string]bool{}, gone: gone, apps: map[string]app{}}
	for _, n := range apps.MemberNodes(p.cfg.Keys, resp.Responses[0].GetResponseRange().Kvs) {
		st.live[n] = true
		delete(gone, n)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		p.putApp(st, kv)
	}
	return st, resp.Header.Revision, nil
}

// follow applies member and app events after rev, and moves apps when
// something changed or a grace period ran out.
func (p *Placer) follow(ctx context.Context, lead etcd.Leader, st *state, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	members := p.cli.Watch(wctx, p.cfg.Keys.Members(), clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithKeysOnly())
	records := p.cli.Watch(wctx, p.cfg.Keys.Apps(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		next, err := p.place(ctx, lead, st)
		if err != nil {
			return err
		}
		timer.Stop()
		var fire <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-fire:
		case wr, ok := <-members:
			if !ok {
				return errors.New("members watch closed")
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("watch members: %w", err)
			}
			for _, ev := range wr.Events {
				node, ok := apps.MemberNode(p.cfg.Keys, ev.Kv.Key)
				if !ok {
					continue
				}
				if ev.Type == clientv3.EventTypeDelete {
					delete(st.live, node)
					st.gone[node] = time.Now()
				} else {
					st.live[node] = true
					delete(st.gone, node)
				}
			}
		case wr, ok := <-records:
			if !ok {
				return errors.New("apps watch closed")
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("watch apps: %w", err)
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					p.deleteApp(st, ev.Kv.Key)
				} else {
					p.putApp(st, ev.Kv)
				}
			}
		}
	}
}

// place moves every movable app whose node's grace period is over and
// returns when the next grace period ends (zero: none pending).
func (p *Placer) place(ctx context.Context, lead etcd.Leader, st *state) (time.Time, error) {
	now := time.Now()
	live := slices.Sorted(maps.Keys(st.live))
	counts := map[string]int{}
	for _, a := range st.apps {
		counts[a.rec.Node]++
	}
	var next time.Time
	stranded := 0
	for _, guid := range slices.Sorted(maps.Keys(st.apps)) {
		a := st.apps[guid]
		node := a.rec.Node
		if st.live[node] {
			delete(p.warned, guid)
			continue
		}
		since, ok := st.gone[node]
		if !ok { // gone before this term began: the grace starts now
			since = now
			st.gone[node] = now
		}
		if a.rec.Pinned {
			stranded++
			if p.warned[guid] != node {
				p.warned[guid] = node
				p.log.Warn("pinned app waits for its node", "guid", guid, "node", node)
			}
			continue
		}
		if due := since.Add(p.cfg.Grace); now.Before(due) {
			stranded++
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		target := apps.LeastLoaded(live, counts)
		if target == "" {
			stranded++
			continue // no live member: a member event wakes us
		}
		rec := a.rec
		rec.Node = target
		rev, err := p.move(ctx, lead, rec, a.rev)
		if errors.Is(err, errChanged) {
			continue // the watch brings the new record
		}
		if err != nil {
			return time.Time{}, err
		}
		st.apps[guid] = app{rec: rec, rev: rev}
		counts[node]--
		counts[target]++
		p.m.moves.Inc()
		p.log.Info("moved app from a dead node", "guid", guid, "from", node, "to", target, "gone_for", now.Sub(since).Round(time.Millisecond))
	}
	p.m.stranded.Set(float64(stranded))
	return next, nil
}

var errChanged = errors.New("placement: app record changed since it was read")

// move writes rec if the term is current and the record is still at rev;
// it returns the record's new mod revision.
func (p *Placer) move(ctx context.Context, lead etcd.Leader, rec apps.Record, rev int64) (int64, error) {
	val, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	key := p.cfg.Keys.App(rec.Spec.GUID)
	resp, err := lead.KV.Txn(ctx).
		If(
			clientv3.Compare(clientv3.CreateRevision(lead.Key), "=", lead.Rev),
			clientv3.Compare(clientv3.ModRevision(key), "=", rev),
		).
		Then(clientv3.OpPut(key, string(val))).
		Else(clientv3.OpGet(lead.Key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("fenced move of %s: %w", key, err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || kvs[0].CreateRevision != lead.Rev {
			return 0, etcd.ErrFenced
		}
		return 0, errChanged
	}
	return resp.Header.Revision, nil
}

func (p *Placer) putApp(st *state, kv *mvccpb.KeyValue) {
	key := string(kv.Key)
	rec, err := apps.ParseRecord(p.cfg.Keys, kv.Key, kv.Value)
	if err != nil {
		p.deleteApp(st, kv.Key)
		if p.bad[key] != kv.ModRevision {
			p.bad[key] = kv.ModRevision
			p.m.invalid.Inc()
			p.log.Warn("placement: skipping invalid app record", "key", key, "err", err)
		}
		return
	}
	delete(p.bad, key)
	st.apps[rec.Spec.GUID] = app{rec: rec, rev: kv.ModRevision}
}

func (p *Placer) deleteApp(st *state, key []byte) {
	delete(p.bad, string(key))
	guid := strings.TrimPrefix(string(key), p.cfg.Keys.Apps())
	delete(st.apps, guid)
	delete(p.warned, guid)
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

var _ master.Duty = (*Placer)(nil)
