package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// deadMembers follows, for one client agent (Grower.Run), which voting
// members of a full etcd do not answer, and since when: a member dead for
// Growth.ReplaceDeadAfter, whose agent is registered in no cluster, is
// one this agent may take the place of. Only the agent's own
// observations count, so a member is never replaced sooner than that
// after this agent first saw it silent.
type deadMembers struct {
	since map[uint64]time.Time // member ID -> first seen not answering
	told  map[uint64]string    // member ID -> the state last logged
	now   func() time.Time
}

func newDeadMembers() *deadMembers {
	return &deadMembers{since: map[uint64]time.Time{}, told: map[uint64]string{}, now: time.Now}
}

// candidate looks at every voting member but the one with peer URL own
// and returns one that has been dead long enough to be replaced, or nil.
func (d *deadMembers) candidate(ctx context.Context, g Grower, members []*etcdserverpb.Member, after time.Duration, own string) *etcdserverpb.Member {
	if d == nil || after <= 0 {
		return nil
	}
	seen := map[uint64]bool{}
	var dead *etcdserverpb.Member
	for _, m := range members {
		if m.IsLearner || m.Name == "" || slices.Contains(m.PeerURLs, own) {
			continue
		}
		seen[m.ID] = true
		if answers(ctx, g.Client, m) {
			if _, ok := d.since[m.ID]; ok {
				d.tell(g.Logger, m, "answers", slog.LevelInfo, "etcd member answers again")
			}
			delete(d.since, m.ID)
			delete(d.told, m.ID)
			continue
		}
		since, ok := d.since[m.ID]
		if !ok {
			d.since[m.ID] = d.now()
			d.tell(g.Logger, m, "silent", slog.LevelWarn, "etcd member does not answer; a client agent takes its place if it stays away",
				"replace_after", after)
			continue
		}
		if d.now().Sub(since) < after || dead != nil {
			continue
		}
		registered, err := agentRegistered(ctx, g.Client, g.Prefix, m.Name)
		switch {
		case err != nil:
			g.Logger.Debug("cannot tell whether a silent member's agent is registered", "member", m.Name, "err", err)
		case registered:
			d.tell(g.Logger, m, "registered", slog.LevelWarn, "etcd member does not answer, but an agent of its name is registered: not replacing it",
				"silent_for", d.now().Sub(since).Round(time.Second))
		default:
			dead = m
		}
	}
	for id := range d.since {
		if !seen[id] {
			delete(d.since, id)
			delete(d.told, id)
		}
	}
	return dead
}

// tell logs msg once for m in state.
func (d *deadMembers) tell(log *slog.Logger, m *etcdserverpb.Member, state string, level slog.Level, msg string, attrs ...any) {
	if d.told[m.ID] == state {
		return
	}
	d.told[m.ID] = state
	log.Log(context.Background(), level, msg, append([]any{"member", m.Name, "id", fmt.Sprintf("%x", m.ID), "client_urls", strings.Join(m.ClientURLs, ",")}, attrs...)...)
}

// answers reports whether one of m's client URLs answers a status request
// within 2 s.
func answers(ctx context.Context, cli *clientv3.Client, m *etcdserverpb.Member) bool {
	for _, u := range m.ClientURLs {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Status(sctx, u)
		cancel()
		if err == nil {
			return true
		}
	}
	return false
}

// agentRegistered reports whether an agent named node holds a member
// record (<prefix>/<cluster>/members/<node>) in any cluster.
func agentRegistered(ctx context.Context, cli clientv3.KV, prefix, node string) (bool, error) {
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return false, err
	}
	for _, kv := range resp.Kvs {
		cluster, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), prefix+"/"), "/")
		if string(kv.Key) == NewKeys(prefix, cluster).Member(node) {
			return true, nil
		}
	}
	return false, nil
}
