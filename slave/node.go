package slave

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"golang.org/x/sync/errgroup"

	"github.com/agentproj/agent/drivers/etcd"
)

// ErrNodeTaken means another live agent already holds this node name.
var ErrNodeTaken = errors.New("node name already taken by a live agent")

// probeTimeout bounds the dial that tells why etcd did not answer.
const probeTimeout = 2 * time.Second

// SessionWorker is a piece of work bound to one etcd session, such as a
// publisher of leased keys. Run blocks until ctx ends; it is started anew for
// every session, so it must re-publish everything it owns.
type SessionWorker interface {
	Run(ctx context.Context, s *concurrency.Session) error
}

// MasterDuties is what the agent does while elected. Run blocks until ctx
// ends; returning early, with ErrFenced or any other error, makes the agent
// step down and campaign again.
type MasterDuties interface {
	Run(ctx context.Context, lead etcd.Leader) error
}

// NodeConfig identifies the agent in the cluster.
type NodeConfig struct {
	Node string
	API  string // advertised API address
	// APIScheme is "https" when the API serves TLS; "" or "http" otherwise.
	APIScheme string
	Version   string
	Labels    map[string]string
	TTL       time.Duration
	Keys      etcd.Keys
	// LeaseFile, in the agent's data dir, keeps the id of the lease the
	// agent holds, so that the next run after a crash recognises its own
	// member record and revokes that lease at once instead of waiting for
	// it to expire. Empty: kept nowhere (a crash-restart waits).
	LeaseFile string
	// EtcdTLS is the etcd client's TLS config (nil: none): it lets a
	// refused TLS session be named when etcd does not answer.
	EtcdTLS *tls.Config
}

// Node keeps the agent in the cluster; see the package documentation for
// its lifecycle.
type Node struct {
	cfg     NodeConfig
	cli     *clientv3.Client
	duties  MasterDuties
	workers []SessionWorker
	log     *slog.Logger
	m       *metrics
	started time.Time

	ready  atomic.Bool
	master atomic.Bool

	// prevRun is the lease of this node's previous run, read from the
	// lease file at start; 0 once taken over, or when there is none.
	prevRun clientv3.LeaseID
}

// NewNode returns a Node; duties may be nil (an agent that only campaigns).
func NewNode(cfg NodeConfig, cli *clientv3.Client, duties MasterDuties, workers []SessionWorker, log *slog.Logger, reg prometheus.Registerer) *Node {
	return &Node{
		cfg: cfg, cli: cli, duties: duties, workers: workers, log: log,
		m: newMetrics(reg, cfg.Version), started: time.Now().UTC().Truncate(time.Millisecond),
	}
}

// Ready reports whether the agent is joined: a live session and its member
// record in place.
func (n *Node) Ready() bool { return n.ready.Load() }

// Master reports whether the agent runs the master duties right now.
func (n *Node) Master() bool { return n.master.Load() }

// Run keeps the agent in the cluster until ctx ends, across etcd outages.
// It returns ErrNodeTaken (wrapped) if the node name is held by another
// live agent when it starts, and nil after a clean shutdown.
func (n *Node) Run(ctx context.Context) error {
	// At most etcd.RejoinMax between attempts: after an outage the node is
	// back within the time the read endpoints and the master hold its
	// targets (etcd.RemovalHold).
	bo := backoff{min: 200 * time.Millisecond, max: etcd.RejoinMax}
	key := n.cfg.Keys.Member(n.cfg.Node)
	lf := leaseFile{path: n.cfg.LeaseFile}
	prevRun, err := lf.read(key)
	if err != nil {
		n.log.Warn("cannot read the lease of this node's previous run; if it crashed, joining waits for that lease to expire", "err", err)
	}
	n.prevRun = prevRun
	var prevLease clientv3.LeaseID
	first := true
	for ctx.Err() == nil {
		sess, err := n.newSession(ctx)
		if err != nil {
			if ctx.Err() != nil {
				continue // shutting down, not an outage
			}
			n.m.etcdErrors.WithLabelValues("grant").Inc()
			d := bo.next()
			n.log.Warn("cannot start etcd session, retrying", "err", etcd.Explain(ctx, n.cli.Endpoints(), n.cfg.EtcdTLS, probeTimeout, err), "retry_in", d)
			sleep(ctx, d)
			continue
		}
		if prevLease != 0 {
			// The lease of a lost session may still be alive on the server
			// (its TTL restarts when etcd does). Revoke it so its keys, the
			// election key above all, do not linger for another TTL.
			n.revoke(prevLease)
		}
		prevLease = sess.Lease()
		if err := lf.write(key, sess.Lease()); err != nil {
			n.log.Warn("cannot record the lease in the data dir; after a crash, the next run waits for it to expire", "err", err)
		}
		if err := n.register(ctx, sess, first); err != nil {
			n.closeSession(sess)
			if errors.Is(err, ErrNodeTaken) && first {
				return err
			}
			if ctx.Err() == nil {
				n.m.etcdErrors.WithLabelValues("register").Inc()
				d := bo.next()
				n.log.Warn("cannot register member, retrying", "err", etcd.Explain(ctx, n.cli.Endpoints(), n.cfg.EtcdTLS, probeTimeout, err), "retry_in", d)
				sleep(ctx, d)
			}
			continue
		}
		first = false
		bo.reset()
		n.m.sessions.Inc()
		n.m.sessionUp.Set(1)
		n.ready.Store(true)
		n.log.Info("joined cluster", "lease", fmt.Sprintf("%x", sess.Lease()), "ttl", n.cfg.TTL)

		n.runSession(ctx, sess)

		n.ready.Store(false)
		n.m.sessionUp.Set(0)
		if ctx.Err() != nil {
			n.closeSession(sess) // revoke: our keys go at once
			if err := lf.remove(); err != nil {
				n.log.Debug("remove lease file", "err", err)
			}
			n.log.Info("left cluster")
			return nil
		}
		sess.Orphan()
		n.log.Warn("etcd session lost; rejoining")
	}
	return nil
}

func (n *Node) newSession(ctx context.Context) (*concurrency.Session, error) {
	gctx, cancel := context.WithTimeout(ctx, n.cfg.TTL+time.Second)
	defer cancel()
	lease, err := n.cli.Grant(gctx, int64(n.cfg.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	// The session's own context must outlive ctx, so that Close can still
	// revoke the lease after shutdown has begun.
	return concurrency.NewSession(n.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(int(n.cfg.TTL/time.Second)), concurrency.WithContext(context.WithoutCancel(ctx)))
}

func (n *Node) closeSession(s *concurrency.Session) {
	if err := s.Close(); err != nil {
		n.log.Debug("revoke lease", "err", err)
	}
}

func (n *Node) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.TTL)
	defer cancel()
	if _, err := n.cli.Revoke(ctx, id); err != nil {
		n.log.Debug("revoke previous lease", "lease", fmt.Sprintf("%x", id), "err", err)
	}
}

// revokePrevRun revokes the lease of this node's previous run, which
// deletes every key it held (member record, election key, targets, status).
func (n *Node) revokePrevRun(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, n.cfg.TTL+time.Second)
	defer cancel()
	if _, err := n.cli.Revoke(rctx, n.prevRun); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("revoke lease %x of this node's previous run: %w", n.prevRun, err)
	}
	n.prevRun = 0
	return nil
}

// register writes the member record under the session lease. A record held
// under the lease of this node's previous run (from the lease file) is taken
// over at once: that lease is revoked. A record held under another lease
// belongs to a live agent, or to a previous incarnation whose lease file was
// lost: wait up to TTL+1s for it to go.
func (n *Node) register(ctx context.Context, s *concurrency.Session, first bool) error {
	key := n.cfg.Keys.Member(n.cfg.Node)
	val, err := json.Marshal(n.member(nil))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(n.cfg.TTL + time.Second)
	for {
		resp, err := n.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(val), clientv3.WithLease(s.Lease()))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return fmt.Errorf("register %s: %w", key, err)
		}
		if resp.Succeeded {
			return nil
		}
		holder := resp.Responses[0].GetResponseRange().Kvs[0]
		if n.prevRun != 0 && clientv3.LeaseID(holder.Lease) == n.prevRun {
			n.log.Info("taking over from this node's previous run: revoking its lease", "key", key, "lease", fmt.Sprintf("%x", holder.Lease))
			if err := n.revokePrevRun(ctx); err != nil {
				return err
			}
			continue
		}
		if time.Now().After(deadline) {
			var other etcd.Member
			_ = json.Unmarshal(holder.Value, &other)
			return fmt.Errorf("%w: node %q is registered by an agent at %s (started %s, lease %x); stop it or choose another --node",
				ErrNodeTaken, n.cfg.Node, other.API, other.Started.Format(time.RFC3339), holder.Lease)
		}
		if first {
			n.log.Info("node name is held by another lease; waiting for it to expire", "key", key, "lease", fmt.Sprintf("%x", holder.Lease))
		}
		if err := waitDeleted(ctx, n.cli, key, holder.ModRevision, time.Until(deadline)); err != nil {
			return err
		}
	}
}

// waitDeleted returns once key is deleted after rev, or after max.
func waitDeleted(ctx context.Context, cli *clientv3.Client, key string, rev int64, max time.Duration) error {
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), max)
	defer cancel()
	for wr := range cli.Watch(wctx, key, clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
	}
	return ctx.Err()
}

func (n *Node) member(masterSince *time.Time) etcd.Member {
	return etcd.Member{
		Node: n.cfg.Node, API: n.cfg.API, APIScheme: apiScheme(n.cfg.APIScheme), Version: n.cfg.Version,
		Labels: n.cfg.Labels, Started: n.started, MasterSince: masterSince,
	}
}

// runSession runs the workers and the campaign loop until the session is
// lost or ctx ends.
func (n *Node) runSession(ctx context.Context, s *concurrency.Session) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(sctx)
	g.Go(func() error {
		select {
		case <-s.Done():
			// Not ready the moment the lease is no longer refreshed; the
			// master duties end with sctx.
			n.ready.Store(false)
			n.m.sessionUp.Set(0)
			cancel()
		case <-gctx.Done():
		}
		return nil
	})
	for _, w := range n.workers {
		g.Go(func() error {
			if err := w.Run(gctx, s); err != nil && gctx.Err() == nil {
				n.log.Error("session worker failed", "err", err)
				return err
			}
			return nil
		})
	}
	g.Go(func() error { n.campaignLoop(gctx, s); return nil })
	_ = g.Wait()
}

func (n *Node) campaignLoop(ctx context.Context, s *concurrency.Session) {
	bo := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	for ctx.Err() == nil {
		e := concurrency.NewElection(s, n.cfg.Keys.Election())
		if err := n.campaign(ctx, e); err != nil {
			if ctx.Err() == nil {
				n.m.etcdErrors.WithLabelValues("campaign").Inc()
				n.log.Warn("campaign failed, retrying", "err", err)
				sleep(ctx, bo.next())
			}
			continue
		}
		bo.reset()
		err := n.lead(ctx, s, e)
		if ctx.Err() != nil {
			return
		}
		n.m.electionsLost.Inc()
		n.log.Warn("stepped down as master", "err", err)
		sleep(ctx, bo.next())
	}
}

// campaign waits until e is won or ctx ends. Campaign itself, when its
// context ends, resigns with the client's context, which blocks for as long
// as etcd is unreachable; so it runs aside and is abandoned on ctx.Done. The
// abandoned call ends when etcd answers or the client is closed, and its
// late resign is harmless: it deletes only a key of this dead session.
func (n *Node) campaign(ctx context.Context, e *concurrency.Election) error {
	errc := make(chan error, 1)
	go func() { errc <- e.Campaign(ctx, n.cfg.Node) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lead runs the master duties for one term and resigns afterwards.
func (n *Node) lead(ctx context.Context, s *concurrency.Session, e *concurrency.Election) error {
	lead := etcd.Leader{Node: n.cfg.Node, Key: e.Key(), Rev: e.Rev(), ClusterID: e.Header().ClusterId, Lease: s.Lease(), KV: n.cli}
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go n.watchTerm(lctx, cancel, lead)

	n.m.electionsWon.Inc()
	n.m.isMaster.Set(1)
	n.master.Store(true)
	since := time.Now().UTC().Truncate(time.Millisecond)
	n.putMember(lctx, s, &since)
	n.log.Info("became master", "election_key", lead.Key, "revision", lead.Rev)

	var err error
	if n.duties != nil {
		err = n.duties.Run(lctx, lead)
		if err == nil && lctx.Err() == nil {
			err = errors.New("master duties ended")
		}
	} else {
		<-lctx.Done()
	}
	cancel(err)
	if err == nil {
		err = context.Cause(lctx)
	}

	n.master.Store(false)
	n.m.isMaster.Set(0)
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), min(n.cfg.TTL, 2*time.Second))
	defer rcancel()
	if rerr := e.Resign(rctx); rerr != nil {
		n.log.Debug("resign", "err", rerr)
	}
	if ctx.Err() == nil {
		n.putMember(rctx, s, nil)
	}
	return err
}

// watchTerm ends the term when the election key is deleted or replaced,
// which session.Done alone would miss (a deleted key with a live lease).
func (n *Node) watchTerm(ctx context.Context, end context.CancelCauseFunc, lead etcd.Leader) {
	for wr := range n.cli.Watch(ctx, lead.Key, clientv3.WithRev(lead.Rev)) {
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete || ev.Kv.CreateRevision != lead.Rev {
				end(etcd.ErrFenced)
				return
			}
		}
		if wr.Canceled {
			end(fmt.Errorf("watch of election key: %w", wr.Err()))
			return
		}
	}
}

func (n *Node) putMember(ctx context.Context, s *concurrency.Session, since *time.Time) {
	val, err := json.Marshal(n.member(since))
	if err != nil {
		return
	}
	if _, err := n.cli.Put(ctx, n.cfg.Keys.Member(n.cfg.Node), string(val), clientv3.WithLease(s.Lease())); err != nil && ctx.Err() == nil {
		n.m.etcdErrors.WithLabelValues("put").Inc()
		n.log.Warn("update member record", "err", err)
	}
}

// apiScheme is the scheme a member record carries: only https, so that
// the records of agents without TLS stay as they were.
func apiScheme(s string) string {
	if s == "https" {
		return s
	}
	return ""
}
