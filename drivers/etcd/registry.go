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
	Node    string            `json:"node"`
	API     string            `json:"api"`
	Version string            `json:"version"`
	Labels  map[string]string `json:"labels,omitempty"`
	Started time.Time         `json:"started"`
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
	// Skipped counts member and status records that did not parse.
	Skipped int `json:"skipped,omitempty"`
	// Revision is the etcd revision the view was read at.
	Revision int64 `json:"revision"`
}

// Registry reads what agents publish.
type Registry struct {
	KV      clientv3.KV
	Keys    Keys
	Cluster string
}

// View reads members and the current master in one consistent revision.
func (r Registry) View(ctx context.Context) (ClusterView, error) {
	view := ClusterView{Cluster: r.Cluster, Members: []MemberView{}, Apps: []AppSummary{}}
	resp, err := r.KV.Txn(ctx).Then(
		clientv3.OpGet(r.Keys.Members(), clientv3.WithPrefix()),
		clientv3.OpGet(r.Keys.Election()+"/", clientv3.WithFirstCreate()...),
		clientv3.OpGet(r.Keys.NodeStatuses(), clientv3.WithPrefix()),
		clientv3.OpGet(r.Keys.Apps(), clientv3.WithPrefix()),
		clientv3.OpGet(r.Keys.AppStatuses(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return view, fmt.Errorf("read cluster: %w", err)
	}
	view.Revision = resp.Header.Revision
	statuses := map[string]*NodeStatus{}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		var st NodeStatus
		if err := json.Unmarshal(kv.Value, &st); err != nil || st.Node == "" {
			view.Skipped++
			continue
		}
		statuses[st.Node] = &st
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		view.Master = &MasterView{Node: string(kvs[0].Value), Revision: kvs[0].CreateRevision}
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
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
	view.Apps = r.apps(resp.Responses[3].GetResponseRange().Kvs, resp.Responses[4].GetResponseRange().Kvs, &view.Skipped)
	return view, nil
}

// apps summarizes app records and their statuses, sorted by guid; the
// records are validated in full by slave/apps, this only reads them.
func (r Registry) apps(records, statuses []*mvccpb.KeyValue, skipped *int) []AppSummary {
	state := map[string]string{}
	for _, kv := range statuses {
		var st struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(kv.Value, &st) == nil {
			state[strings.TrimPrefix(string(kv.Key), r.Keys.AppStatuses())] = st.Status
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
