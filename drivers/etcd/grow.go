package etcd

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/agentproj/agent/stackconfig"
)

// An etcd cluster started by an agent (the embedded etcd) grows: the
// founding agent records how many members it should have (GrowthKey), and
// each agent that joins it adds itself as a member until it has that many
// (Grower). Clusters the agents did not start have no such key and are
// never changed.

// Growth is the value at GrowthKey.
type Growth struct {
	// Members is the number of etcd members the cluster grows to (1, 3
	// or 5).
	Members int `json:"members"`
	// ReplaceDeadAfter is how long a voting member may be dead (its
	// client URL does not answer, and no agent of its name is registered
	// in any cluster) before an agent that joins, or a client agent, takes
	// its place: it removes the member and adds itself. 0: never.
	ReplaceDeadAfter Seconds `json:"replace_dead_after_seconds,omitempty"`
}

// Seconds is a duration kept in JSON as whole seconds.
type Seconds int64

// Duration is s as a time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(s) * time.Second }

// GrowthKey is where the founding agent records the cluster's Growth:
// <prefix>/_etcd/growth, beside the agent clusters (whose names cannot
// start with "_").
func GrowthKey(prefix string) string { return path.Join(prefix, "_etcd", "growth") }

func growthLock(prefix string) string { return path.Join(prefix, "_etcd", "grow-lock") }

// SetGrowth records how the cluster grows. The founding agent writes it
// at every start, so its configuration decides.
func SetGrowth(ctx context.Context, cli clientv3.KV, prefix string, g Growth) error {
	v, err := json.Marshal(g)
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, GrowthKey(prefix), string(v)); err != nil {
		return fmt.Errorf("record etcd growth at %s: %w", GrowthKey(prefix), err)
	}
	return nil
}

// RecordGrowth is SetGrowth asked again (1 s, doubling to 30 s) until etcd
// takes it or ctx ends: the founding agent starts while its etcd may not
// have a quorum yet (two of three members down), which is no reason to
// stop it.
func RecordGrowth(ctx context.Context, cli clientv3.KV, prefix string, g Growth, log *slog.Logger) error {
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := SetGrowth(sctx, cli, prefix, g)
		cancel()
		if err == nil || ctx.Err() != nil {
			return nil
		}
		log.Warn("etcd growth not recorded yet; asking again", "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// ErrBadGrowth is a growth value that does not parse.
var ErrBadGrowth = errors.New("malformed etcd growth")

// ReadGrowth returns the cluster's Growth; ok is false for a cluster the
// agents did not start (no key). A malformed value is an error.
func ReadGrowth(ctx context.Context, cli clientv3.KV, prefix string) (g Growth, ok bool, err error) {
	resp, err := cli.Get(ctx, GrowthKey(prefix))
	if err != nil {
		return g, false, fmt.Errorf("read %s: %w", GrowthKey(prefix), err)
	}
	if len(resp.Kvs) == 0 {
		return g, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &g); err != nil || g.Members < 1 {
		return Growth{}, false, fmt.Errorf("%w: %s: want {\"members\": <1, 3 or 5>}, got %q", ErrBadGrowth, GrowthKey(prefix), resp.Kvs[0].Value)
	}
	return g, true, nil
}

// EtcdView is the etcd the agents run on: its members and, for one they
// started, how many members it grows to.
type EtcdView struct {
	GrowsTo int `json:"grows_to,omitempty"` // 0: an etcd the agents did not start
	// ReplaceDeadAfter is Growth.ReplaceDeadAfter (0: never).
	ReplaceDeadAfter Seconds      `json:"replace_dead_after_seconds,omitempty"`
	Members          []EtcdMember `json:"members"`
}

// EtcdMember is one member of the etcd.
type EtcdMember struct {
	ID         string   `json:"id"`   // hex
	Name       string   `json:"name"` // "": added, never started
	ClientURLs []string `json:"client_urls"`
	PeerURLs   []string `json:"peer_urls"`
	Learner    bool     `json:"learner,omitempty"`
}

// State is "voting", "learner" or "not started".
func (m EtcdMember) State() string {
	switch {
	case m.Name == "":
		return "not started"
	case m.Learner:
		return "learner"
	}
	return "voting"
}

// etcdReader is what ReadEtcdView needs; *clientv3.Client is one.
type etcdReader interface {
	clientv3.Cluster
	clientv3.KV
}

// ReadEtcdView reads the etcd's members and growth. A malformed growth
// value is left out (GrowsTo 0), not an error: the members still show.
func ReadEtcdView(ctx context.Context, cli etcdReader, prefix string) (EtcdView, error) {
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return EtcdView{}, fmt.Errorf("etcd members: %w", err)
	}
	v := EtcdView{Members: []EtcdMember{}}
	for _, m := range resp.Members {
		v.Members = append(v.Members, EtcdMember{
			ID: fmt.Sprintf("%x", m.ID), Name: m.Name, Learner: m.IsLearner,
			ClientURLs: slices.Clone(m.ClientURLs), PeerURLs: slices.Clone(m.PeerURLs),
		})
	}
	slices.SortFunc(v.Members, func(a, b EtcdMember) int { return strings.Compare(a.Name, b.Name) })
	if g, ok, err := ReadGrowth(ctx, cli, prefix); err == nil && ok {
		v.GrowsTo, v.ReplaceDeadAfter = g.Members, g.ReplaceDeadAfter
	}
	return v, nil
}

// Grower adds the agent as a member of the cluster its Client is connected
// to, when that cluster grows (see GrowthKey) and has fewer members than it
// should: one agent at a time (an etcd lock), first as a learner, which is
// promoted to a voting member once it has caught up with the leader.
type Grower struct {
	Client *clientv3.Client
	Prefix string
	Member EmbedConfig // this agent's member: name, data directory, URLs
	Logger *slog.Logger
	// PromoteTimeout is how long the learner may take to catch up (0: a
	// minute). After it, the member is removed again and the agent stays a
	// client.
	PromoteTimeout time.Duration
	// SyncInterval is how often the client's endpoints follow the members
	// (0: 30s; see SyncEndpoints).
	SyncInterval time.Duration
	// EndpointsFile, when set, keeps the endpoints the client follows
	// (the agent's EndpointsFile).
	EndpointsFile string
}

// Run makes the agent a member as Join does, and asks again every
// SyncInterval while it is not one, so that an agent that started while
// etcd could not be asked, or a client agent when a member was removed
// (etcdctl member remove) or the founder asked for more, becomes one. While
// the etcd grows it keeps the client's endpoints at the members'
// (SyncEndpoints). It runs the member it became until ctx ends; a failure
// of that member is returned. An etcd the agents did not start is only
// looked at (one read every SyncInterval).
func (g Grower) Run(ctx context.Context) error {
	every := cmp.Or(g.SyncInterval, 30*time.Second)
	var srv *Embedded
	var failed <-chan error
	defer func() {
		if srv != nil {
			srv.Close()
		}
	}()
	var endpoints []string
	dead := newDeadMembers()
	var told string        // the reason to stay a client logged last
	retryIn := time.Second // after etcd could not be asked
	againIn := every       // after an attempt to become a member failed
	for {
		next := every
		// No growth key: an etcd the agents did not start, or one whose
		// founder has not recorded it yet (both started at once): look
		// again later.
		growth, _, err := ReadGrowth(ctx, g.Client, g.Prefix)
		if errors.Is(err, ErrBadGrowth) { // logged once, as a reason to stay a client
			err = &client{msg: "not becoming an etcd member: " + err.Error()}
		}
		if err == nil && srv == nil && growth.Members > 1 {
			srv, err = g.grow(ctx, growth, dead)
			if srv != nil {
				failed = srv.Err()
				g.Client.SetEndpoints(append(srv.Endpoints(), g.Client.Endpoints()...)...)
			}
		}
		var c *client
		switch {
		case errors.As(err, &c):
			if c.failed {
				c.log(g.Logger)
				next, againIn = againIn, min(2*againIn, 10*time.Minute)
			} else if c.msg != told {
				c.log(g.Logger)
			}
			told, err = c.msg, nil
		case err != nil && srv != nil: // a member: etcd may be electing a leader
			g.Logger.Debug("etcd growth not read", "err", err)
		case err != nil:
			g.Logger.Warn("cannot ask etcd whether this agent becomes a member; asking again", "in", retryIn, "err", err)
			next, retryIn = retryIn, min(2*retryIn, every)
		default:
			retryIn = time.Second
		}
		if err == nil && growth.Members > 1 {
			endpoints = g.sync(ctx, endpoints)
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return fmt.Errorf("etcd member: %w", err)
		case <-time.After(next):
		}
	}
}

// Join makes the agent a member if the etcd grows (GrowthKey) and has
// fewer members than it should, and returns the running member, or nil
// when the agent stays a client (the etcd does not grow, has its members,
// or this agent's peer URL cannot be reached from them). An error means
// etcd could not be asked; a member that could not be started or promoted
// is removed again, logged, and the agent stays a client.
func (g Grower) Join(ctx context.Context) (*Embedded, error) {
	growth, ok, err := ReadGrowth(ctx, g.Client, g.Prefix)
	if err != nil || !ok || growth.Members <= 1 {
		return nil, err
	}
	srv, err := g.grow(ctx, growth, nil)
	if c := (*client)(nil); errors.As(err, &c) {
		c.log(g.Logger)
		return nil, nil
	}
	return srv, err
}

// client is why an agent stays a client of the etcd: not an error of
// asking etcd, but what the agent logs (Warn when an attempt failed, or
// when its config is at odds with the members').
type client struct {
	msg    string
	attrs  []any
	failed bool
	warn   bool
}

func (c *client) Error() string { return c.msg }

func (c *client) log(l *slog.Logger) {
	if c.failed || c.warn {
		l.Warn(c.msg, c.attrs...)
	} else {
		l.Info(c.msg, c.attrs...)
	}
}

// grow adds this agent's member under the growth lock, or says why not
// (*client). With dead (Run's), a full etcd with a member dead for
// growth.ReplaceDeadAfter has that member replaced by this agent's.
func (g Grower) grow(ctx context.Context, growth Growth, dead *deadMembers) (*Embedded, error) {
	peer, err := g.Member.peerURL()
	if err != nil {
		return nil, err
	}
	if isUnspecified(g.Member.ClientURL) || isUnspecified(peer) {
		return nil, &client{msg: "not becoming an etcd member: members advertise their URLs to each other, and this agent's are on an unspecified address (0.0.0.0 or ::); set etcd.embedded_listen (and embedded_peer_listen) to an address the other hosts reach",
			attrs: []any{"client_url", g.Member.ClientURL, "peer_url", peer}}
	}
	full := func(members []*etcdserverpb.Member) error {
		if len(members) < growth.Members {
			return nil
		}
		return &client{msg: "etcd has its members: this agent is a client", attrs: []any{"members", len(members), "grows_to", growth.Members}}
	}
	// A look without the lock first: most agents of a grown etcd stay
	// clients, and ask again every SyncInterval.
	list, err := g.Client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd members: %w", err)
	}
	var replace *etcdserverpb.Member
	if err := full(list.Members); err != nil && !slices.ContainsFunc(list.Members, func(m *etcdserverpb.Member) bool { return slices.Contains(m.PeerURLs, peer) }) {
		if replace = dead.candidate(ctx, g, list.Members, growth.ReplaceDeadAfter.Duration(), peer); replace == nil {
			return nil, err
		}
	}

	sess, err := concurrency.NewSession(g.Client, concurrency.WithTTL(10), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("etcd growth lock: %w", err)
	}
	defer sess.Close()
	lock := concurrency.NewMutex(sess, growthLock(g.Prefix))
	if err := lock.Lock(ctx); err != nil {
		return nil, fmt.Errorf("etcd growth lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = lock.Unlock(uctx)
	}()

	list, err = g.Client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd members: %w", err)
	}
	members, err := g.forgetEarlierSelf(ctx, list.Members, peer)
	if err != nil {
		return nil, err
	}
	if err := full(members); err != nil {
		// The member to replace must still be there, and still silent.
		if replace == nil || !slices.ContainsFunc(members, func(m *etcdserverpb.Member) bool { return m.ID == replace.ID }) || answers(ctx, g.Client, replace) {
			return nil, err
		}
	} else {
		replace = nil // room without replacing anyone
	}
	if remote := remotePeer(members); isLoopback(peer) && remote != "" {
		return nil, &client{msg: "not becoming an etcd member: this agent's peer URL is a loopback address the other members cannot reach; set etcd.embedded_listen (or embedded_peer_listen) to an address they can",
			attrs: []any{"peer_url", peer, "member_peer_url", remote}}
	}
	if other := otherScheme(members, peer); other != "" {
		return nil, &client{msg: "not becoming an etcd member: the members' peer URLs and this agent's differ in TLS (https:// needs etcd.embedded_cert_file); give this agent the members' kind",
			attrs: []any{"peer_url", peer, "member_peer_url", other}, warn: true}
	}

	if replace != nil {
		if _, err := g.Client.MemberRemove(ctx, replace.ID); err != nil {
			return nil, &client{msg: "could not remove the dead etcd member to take its place; this agent stays a client",
				attrs: []any{"member", replace.Name, "id", fmt.Sprintf("%x", replace.ID), "err", err}, failed: true}
		}
		g.Logger.Warn("removed a dead etcd member to take its place", "member", replace.Name, "id", fmt.Sprintf("%x", replace.ID),
			"peer_urls", strings.Join(replace.PeerURLs, ","), "dead_for_at_least", growth.ReplaceDeadAfter.Duration())
	}
	// etcd refuses a new member for a few seconds after another joined
	// (every voting member must have been connected for 5 s), and the ID
	// of one removed within the same second.
	var added *clientv3.MemberAddResponse
	err = retry(ctx, 30*time.Second, func(ctx context.Context) (err error) {
		added, err = g.Client.MemberAddAsLearner(ctx, []string{peer})
		return err
	}, rpctypes.ErrUnhealthy, rpctypes.ErrMemberNotFound, rpctypes.ErrTooManyLearners)
	if err != nil {
		return nil, fmt.Errorf("add etcd member %s: %w", peer, err)
	}
	id := added.Member.ID
	cfg := g.Member
	cfg.InitialCluster = initialCluster(added.Members, id, g.Member.Name)
	srv, err := g.start(ctx, cfg, id)
	if err != nil {
		g.remove(ctx, id)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &client{msg: "could not become an etcd member; this agent stays a client", attrs: []any{"peer_url", peer, "err", err}, failed: true}
	}
	g.Logger.Info("became an etcd member", "peer_url", peer, "client_url", g.Member.ClientURL, "members", len(added.Members))
	WarnIfExposed(g.Logger, g.Member)
	return srv, nil
}

// start starts the member and promotes it; on failure it is stopped and
// its new data removed.
func (g Grower) start(ctx context.Context, cfg EmbedConfig, id uint64) (*Embedded, error) {
	srv, err := StartEmbedded(ctx, cfg)
	if err != nil {
		_ = os.RemoveAll(cfg.Dir)
		return nil, err
	}
	// The member fails the promotion until it has caught up with the
	// leader; a member that fails meanwhile ends it at once.
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case err := <-srv.Err():
			cancel(fmt.Errorf("member failed while catching up: %w", err))
		case <-pctx.Done():
		}
	}()
	err = retry(pctx, cmp.Or(g.PromoteTimeout, time.Minute), func(ctx context.Context) error {
		_, err := g.Client.MemberPromote(ctx, id)
		return err
	}, rpctypes.ErrMemberLearnerNotReady, rpctypes.ErrUnhealthy)
	if err != nil {
		srv.Close()
		_ = os.RemoveAll(cfg.Dir)
		if cause := context.Cause(pctx); cause != nil && ctx.Err() == nil {
			err = cause
		}
		return nil, fmt.Errorf("promote the learner: %w", err)
	}
	return srv, nil
}

// retry calls fn every 200 ms while it fails with one of the transient
// errors, for at most timeout.
func retry(ctx context.Context, timeout time.Duration, fn func(context.Context) error, transient ...error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := fn(ctx)
		if err == nil || !slices.ContainsFunc(transient, func(t error) bool { return errors.Is(err, t) }) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still after %s: %w", timeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (g Grower) remove(ctx context.Context, id uint64) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := g.Client.MemberRemove(rctx, id); err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
		g.Logger.Warn("could not remove the etcd member again; the next start of this agent removes it", "id", fmt.Sprintf("%x", id), "err", err)
	}
}

// forgetEarlierSelf removes a member with this agent's peer URL that has
// no data here any more (an attempt that did not finish, or a data
// directory that was deleted), and returns the others. A member of this
// agent's name with another peer URL is an error: two agents with one
// name.
func (g Grower) forgetEarlierSelf(ctx context.Context, members []*etcdserverpb.Member, peer string) ([]*etcdserverpb.Member, error) {
	var others []*etcdserverpb.Member
	for _, m := range members {
		switch {
		case slices.Contains(m.PeerURLs, peer):
			g.Logger.Info("removing this agent's earlier etcd member, whose data is gone", "id", fmt.Sprintf("%x", m.ID), "peer_url", peer)
			if _, err := g.Client.MemberRemove(ctx, m.ID); err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
				return nil, fmt.Errorf("remove earlier etcd member %x (%s): %w", m.ID, peer, err)
			}
		case m.Name == g.Member.Name:
			return nil, &client{msg: "not becoming an etcd member: etcd already has a member of this agent's name with another peer URL (node names must be unique)",
				attrs: []any{"name", m.Name, "member_peer_url", strings.Join(m.PeerURLs, ","), "peer_url", peer}, failed: true}
		default:
			others = append(others, m)
		}
	}
	return others, nil
}

// initialCluster is name=peerURL for every member, the added one (which has
// no name yet) under name.
func initialCluster(members []*etcdserverpb.Member, added uint64, name string) string {
	var parts []string
	for _, m := range members {
		n := m.Name
		if m.ID == added {
			n = name
		}
		if n == "" {
			continue // another learner that never started
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ",")
}

// remotePeer returns a member's peer URL that is not a loopback address
// ("" when all are, as on one host).
func remotePeer(members []*etcdserverpb.Member) string {
	for _, m := range members {
		for _, u := range m.PeerURLs {
			if !isLoopback(u) {
				return u
			}
		}
	}
	return ""
}

// otherScheme returns a member's peer URL whose scheme (http or https) is
// not peer's ("" when all match).
func otherScheme(members []*etcdserverpb.Member, peer string) string {
	scheme, _, _ := strings.Cut(peer, "://")
	for _, m := range members {
		for _, u := range m.PeerURLs {
			if s, _, _ := strings.Cut(u, "://"); s != scheme {
				return u
			}
		}
	}
	return ""
}

// isUnspecified: a URL on 0.0.0.0 or :: (or one that does not parse).
func isUnspecified(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err != nil || stackconfig.UnspecifiedHost(u.Hostname())
}

func isLoopback(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && stackconfig.LoopbackHost(u.Hostname())
}

// SyncEndpoints keeps the client's endpoints at the client URLs of the
// etcd's voting members, every interval until ctx ends, while the etcd
// grows (GrowthKey above 1), so that an agent keeps reaching etcd when the
// member it was given is down. For agents that run a member from the
// start; Grower.Run does the same for the others.
// The endpoints are kept in file (EndpointsFile) when it is not empty.
func SyncEndpoints(ctx context.Context, cli *clientv3.Client, prefix, file string, every time.Duration, log *slog.Logger) error {
	g := Grower{Client: cli, Logger: log, EndpointsFile: file}
	var endpoints []string
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if growth, ok, err := ReadGrowth(ctx, cli, prefix); err == nil && ok && growth.Members > 1 {
			endpoints = g.sync(ctx, endpoints)
		}
	}
}

// sync sets the client's endpoints to the voting members' client URLs
// (as clientv3's Client.Sync, but leaving out URLs on unspecified
// addresses such as 0.0.0.0, which mean another host's listener, not an
// address to dial) and logs when they change from last.
func (g Grower) sync(ctx context.Context, last []string) []string {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := g.Client.MemberList(sctx)
	if err != nil {
		g.Logger.Debug("etcd endpoints not synced", "err", err)
		return last
	}
	var eps []string
	for _, m := range resp.Members {
		if m.Name == "" || m.IsLearner {
			continue
		}
		for _, u := range m.ClientURLs {
			if !isUnspecified(u) {
				eps = append(eps, u)
			}
		}
	}
	slices.Sort(eps)
	if len(eps) == 0 || slices.Equal(eps, last) {
		return last
	}
	g.Client.SetEndpoints(eps...)
	g.Logger.Info("etcd endpoints follow the members", "endpoints", strings.Join(eps, ","))
	if g.EndpointsFile != "" {
		if err := rememberEndpoints(g.EndpointsFile, eps); err != nil {
			g.Logger.Warn("etcd endpoints not kept for the next start", "file", g.EndpointsFile, "err", err)
		}
	}
	return eps
}
