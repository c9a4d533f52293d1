package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/workload"
)

// Member is what an agent publishes about itself under members/<node>.
type Member struct {
	Node string `json:"node"`
	API  string `json:"api"`
	// APIScheme is "https" when the agent's API serves TLS; empty: http.
	APIScheme string            `json:"api_scheme,omitempty"`
	Version   string            `json:"version"`
	Labels    map[string]string `json:"labels,omitempty"`
	Started   time.Time         `json:"started"`
	// MasterSince is set while this agent is master.
	MasterSince *time.Time `json:"master_since,omitempty"`
}

// NodeStatus is what a node reports under status/nodes/<node>, under its
// lease: the workloads it runs and, where a relay runs, the relay's state.
type NodeStatus struct {
	Node    string           `json:"node"`
	Updated time.Time        `json:"updated"`
	Stack   []workload.State `json:"stack"`
	Relay   json.RawMessage  `json:"relay,omitempty"`
	// Kubernetes is the master's view of its Helm releases and guid
	// namespaces in Kubernetes mode (master/releases.Status).
	Kubernetes json.RawMessage `json:"kubernetes,omitempty"`
}

// MemberView is a member as the cluster sees it.
type MemberView struct {
	Member
	Master bool `json:"master"`
	// Status is the node's last report, if any.
	Status *NodeStatus `json:"status,omitempty"`
}

// MasterView says who is master.
type MasterView struct {
	Node  string     `json:"node"`
	Since *time.Time `json:"since,omitempty"`
	// Revision is the etcd create revision of the master's election key; it
	// grows with every new term.
	Revision int64 `json:"revision"`
}

// AppSummary is one application as `agent status` lists it: the assigned
// node and the state that node observes ("" before it reported).
type AppSummary struct {
	GUID   string `json:"guid"`
	Image  string `json:"image"`
	Node   string `json:"node"`
	Status string `json:"status,omitempty"`
}

// ClusterView is the cluster as read from etcd: the data behind
// `agent status` and GET /api/v1/status.
type ClusterView struct {
	Cluster string       `json:"cluster"`
	Master  *MasterView  `json:"master"`
	Members []MemberView `json:"members"`
	// Apps are the manager's applications, by guid.
	Apps []AppSummary `json:"apps"`
	// Targets counts the target group keys under targets/ (valid or not).
	Targets int `json:"targets"`
	// Skipped counts member and status records that did not parse.
	Skipped int `json:"skipped,omitempty"`
	// Revision is the etcd revision the view was read at.
	Revision int64 `json:"revision"`
	// Stale is set by an agent that answers from its snapshot while etcd
	// cannot be reached: the view is the last one it saw, StaleSince is
	// when it lost etcd.
	Stale      bool       `json:"stale,omitempty"`
	StaleSince *time.Time `json:"stale_since,omitempty"`
	// Etcd is the etcd the cluster runs on (nil: not read).
	Etcd *EtcdView `json:"etcd,omitempty"`
}

// Registry reads what agents publish.
type Registry struct {
	KV      clientv3.KV
	Keys    Keys
	Cluster string
}

// View reads members and the current master in one consistent revision.
func (r Registry) View(ctx context.Context) (ClusterView, error) {
	resp, err := r.KV.Txn(ctx).Then(
		clientv3.OpGet(r.Keys.Members(), clientv3.WithPrefix()),
		clientv3.OpGet(r.Keys.Election()+"/", clientv3.WithFirstCreate()...),
		clientv3.OpGet(r.Keys.NodeStatuses(), clientv3.WithPrefix()),
		clientv3.OpGet(r.Keys.Apps(), clientv3.WithPrefix()),
		clientv3.OpGet(r.Keys.AppStatuses(), clientv3.WithPrefix()),
		clientv3.OpGet(r.Keys.Targets(), clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return ClusterView{Cluster: r.Cluster, Members: []MemberView{}, Apps: []AppSummary{}}, fmt.Errorf("read cluster: %w", err)
	}
	var kvs []*mvccpb.KeyValue
	for _, op := range resp.Responses[:5] {
		kvs = append(kvs, op.GetResponseRange().Kvs...)
	}
	view := r.Keys.View(r.Cluster, resp.Header.Revision, kvs)
	view.Targets = int(resp.Responses[5].GetResponseRange().Count)
	return view, nil
}

// View builds the cluster view from kvs, the cluster's keys at revision
// rev, in any order: members/, election/ (the key created first is the
// master), status/nodes/, apps/ and status/apps/; other keys are ignored.
// Records that do not parse are counted in Skipped and left out. It reads
// no etcd, so that a cached copy of the keys can answer too.
func (k Keys) View(cluster string, rev int64, kvs []*mvccpb.KeyValue) ClusterView {
	view := ClusterView{Cluster: cluster, Members: []MemberView{}, Apps: []AppSummary{}, Revision: rev}
	var members, apps, appStatuses []*mvccpb.KeyValue
	var leader *mvccpb.KeyValue
	statuses := map[string]*NodeStatus{}
	for _, kv := range kvs {
		key := string(kv.Key)
		switch {
		case strings.HasPrefix(key, k.Members()):
			members = append(members, kv)
		case strings.HasPrefix(key, k.Election()+"/"):
			if leader == nil || kv.CreateRevision < leader.CreateRevision {
				leader = kv
			}
		case strings.HasPrefix(key, k.NodeStatuses()):
			var st NodeStatus
			if err := json.Unmarshal(kv.Value, &st); err != nil || st.Node == "" {
				view.Skipped++
				continue
			}
			statuses[st.Node] = &st
		case strings.HasPrefix(key, k.Apps()):
			apps = append(apps, kv)
		case strings.HasPrefix(key, k.AppStatuses()):
			appStatuses = append(appStatuses, kv)
		}
	}
	if leader != nil {
		view.Master = &MasterView{Node: string(leader.Value), Revision: leader.CreateRevision}
	}
	for _, kv := range members {
		var m Member
		if err := json.Unmarshal(kv.Value, &m); err != nil || m.Node == "" {
			view.Skipped++
			continue
		}
		mv := MemberView{Member: m, Status: statuses[m.Node]}
		if view.Master != nil && view.Master.Node == m.Node {
			mv.Master = true
			view.Master.Since = m.MasterSince
		}
		view.Members = append(view.Members, mv)
	}
	sort.Slice(view.Members, func(i, j int) bool { return view.Members[i].Node < view.Members[j].Node })
	view.Apps = k.apps(apps, appStatuses, &view.Skipped)
	return view
}

// apps summarizes app records and their statuses, sorted by guid; the
// records are validated in full by slave/apps, this only reads them.
func (k Keys) apps(records, statuses []*mvccpb.KeyValue, skipped *int) []AppSummary {
	state := map[string]string{}
	for _, kv := range statuses {
		var st struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(kv.Value, &st) == nil {
			state[strings.TrimPrefix(string(kv.Key), k.AppStatuses())] = st.Status
		}
	}
	out := []AppSummary{}
	for _, kv := range records {
		var rec struct {
			Spec struct {
				GUID  string `json:"guid"`
				Image string `json:"image"`
			} `json:"spec"`
			Node string `json:"node"`
		}
		if err := json.Unmarshal(kv.Value, &rec); err != nil || rec.Spec.GUID == "" {
			*skipped++
			continue
		}
		out = append(out, AppSummary{GUID: rec.Spec.GUID, Image: rec.Spec.Image, Node: rec.Node, Status: state[rec.Spec.GUID]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GUID < out[j].GUID })
	return out
}
