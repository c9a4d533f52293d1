package etcd

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/stackconfig"
)

// TargetGroup is the value of a targets/<node>/<job>/<id> key: one
// Prometheus file_sd group.
type TargetGroup = stackconfig.TargetGroup

// Target is a published target group with the coordinates of its key.
type Target struct {
	Node string `json:"node"`
	Job  string `json:"job"`
	ID   string `json:"id"`
	TargetGroup
}

// Key is the target's etcd key relative to Keys.Targets().
func (t Target) Key() string { return t.Node + "/" + t.Job + "/" + t.ID }

// Group is the target group as Prometheus gets it: normalized, with the
// job label from the key (a target's own job label wins over job_name in
// Prometheus, so one scrape config serves every job).
func (t Target) Group() TargetGroup {
	g := t.Normalize()
	g.Labels[model.JobLabel] = model.LabelValue(t.Job)
	return g
}

// Groups returns the Prometheus groups of ts.
func Groups(ts []Target) []TargetGroup {
	out := make([]TargetGroup, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Group())
	}
	return out
}

// ParseTargetKV checks one etcd key/value of the targets prefix against
// the rule every target group is held to, whoever wrote it: a key
// targets/<node>/<job>/<id> whose job is a safe file name
// (stackconfig.ValidJobName), and a value that stackconfig.ParseTargetGroup
// accepts (at most stackconfig.MaxTargetGroupBytes of strict JSON, UTF-8
// strings, host:port targets, legacy label names, no reserved __ label but
// __metrics_path__ and __scheme__). The error says what is wrong; callers
// skip and count the value, never fail on it. The master's file_sd and
// every agent's http_sd use this one function.
func (k Keys) ParseTargetKV(key, value []byte) (Target, error) {
	node, job, id, ok := k.ParseTarget(string(key))
	if !ok {
		return Target{}, errors.New("key is not targets/<node>/<job>/<id>")
	}
	if !stackconfig.ValidJobName(job) {
		return Target{}, fmt.Errorf("job %q: must be %s", job, stackconfig.JobNameRule)
	}
	g, err := stackconfig.ParseTargetGroup(value)
	if err != nil {
		return Target{}, err
	}
	return Target{Node: node, Job: job, ID: id, TargetGroup: g}, nil
}

// BadTarget is a target key whose value was skipped, with the reason.
type BadTarget struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// TargetSet is every target group of the cluster at one etcd revision.
type TargetSet struct {
	Targets  []Target    `json:"targets"`
	Skipped  []BadTarget `json:"skipped,omitempty"`
	Revision int64       `json:"revision"`
}

// Targets reads every published target group, sorted by job, node, id.
// Values that do not parse are skipped and listed, never fatal.
func (r Registry) Targets(ctx context.Context) (TargetSet, error) {
	resp, err := r.KV.Get(ctx, r.Keys.Targets(), clientv3.WithPrefix())
	if err != nil {
		return TargetSet{}, fmt.Errorf("read targets: %w", err)
	}
	set := TargetSet{Targets: []Target{}, Revision: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		t, err := r.Keys.ParseTargetKV(kv.Key, kv.Value)
		if err != nil {
			set.Skipped = append(set.Skipped, BadTarget{Key: string(kv.Key), Reason: err.Error()})
			continue
		}
		set.Targets = append(set.Targets, t)
	}
	SortTargets(set.Targets)
	return set, nil
}

// SortTargets orders targets by job, node and id.
func SortTargets(ts []Target) {
	sort.Slice(ts, func(i, j int) bool {
		a, b := ts[i], ts[j]
		if a.Job != b.Job {
			return a.Job < b.Job
		}
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		return a.ID < b.ID
	})
}
