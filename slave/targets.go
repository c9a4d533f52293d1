package slave

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/stackconfig"
)

// TargetPublisher keeps this node's target groups in etcd under
// targets/<node>/, under the session lease, so they vanish with the agent.
// Several sources (the configured exporters, the applications) each set
// their groups; the publisher writes the union.
type TargetPublisher struct {
	node string
	keys etcd.Keys
	cli  *clientv3.Client
	log  *slog.Logger

	mu      sync.Mutex
	sources map[string]map[string]etcd.TargetGroup // source -> job/id -> group
	nudge   chan struct{}

	published prometheus.Gauge
	errors    prometheus.Counter
}

// NewTargetPublisher returns a publisher for node.
func NewTargetPublisher(node string, keys etcd.Keys, cli *clientv3.Client, log *slog.Logger, reg prometheus.Registerer) *TargetPublisher {
	p := &TargetPublisher{
		node: node, keys: keys, cli: cli, log: log,
		sources: map[string]map[string]etcd.TargetGroup{},
		nudge:   make(chan struct{}, 1),
		published: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_targets_published", Help: "Target groups this agent publishes in etcd.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_targets_publish_errors_total", Help: "Failed attempts to write this agent's targets to etcd.",
		}),
	}
	reg.MustRegister(p.published, p.errors)
	return p
}

// Set replaces the groups of one source, keyed "<job>/<id>", and nudges Run.
func (p *TargetPublisher) Set(source string, groups map[string]etcd.TargetGroup) {
	p.mu.Lock()
	p.sources[source] = maps.Clone(groups)
	p.mu.Unlock()
	select {
	case p.nudge <- struct{}{}:
	default:
	}
}

// ExporterGroups turns [[exporters]] into groups keyed "<job>/<id>", id
// counting the exporters of one job from 0. Each group gets node and
// cluster labels, and __metrics_path__ / __scheme__ where not the default.
func ExporterGroups(node, cluster string, exps []stackconfig.Exporter) map[string]etcd.TargetGroup {
	out := map[string]etcd.TargetGroup{}
	seen := map[string]int{}
	for _, e := range exps {
		ls := model.LabelSet{"node": model.LabelValue(node), "cluster": model.LabelValue(cluster)}
		for k, v := range e.Labels {
			ls[model.LabelName(k)] = model.LabelValue(v)
		}
		if e.MetricsPath != "" && e.MetricsPath != "/metrics" {
			ls[model.MetricsPathLabel] = model.LabelValue(e.MetricsPath)
		}
		if e.Scheme != "" && e.Scheme != "http" {
			ls[model.SchemeLabel] = model.LabelValue(e.Scheme)
		}
		targets := e.Targets()
		sort.Strings(targets)
		out[e.Job+"/"+strconv.Itoa(seen[e.Job])] = etcd.TargetGroup{Targets: targets, Labels: ls}
		seen[e.Job]++
	}
	return out
}

// Run writes the groups under every new session and after every Set, and
// retries failed writes; it returns when ctx ends.
func (p *TargetPublisher) Run(ctx context.Context, s *concurrency.Session) error {
	bo := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	for {
		var retry <-chan time.Time
		if err := p.sync(ctx, s.Lease()); err != nil && ctx.Err() == nil {
			p.errors.Inc()
			d := bo.next()
			p.log.Warn("publish targets, retrying", "err", err, "retry_in", d)
			retry = time.After(d)
		} else {
			bo.reset()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.nudge:
		case <-retry:
		}
	}
}

// sync makes targets/<node>/ hold exactly the desired groups, under lease,
// in one transaction.
func (p *TargetPublisher) sync(ctx context.Context, lease clientv3.LeaseID) error {
	want := map[string]string{}
	p.mu.Lock()
	for _, groups := range p.sources {
		for k, g := range groups {
			b, err := json.Marshal(g)
			if err != nil {
				p.mu.Unlock()
				return err
			}
			want[p.keys.NodeTargets(p.node)+k] = string(b)
		}
	}
	p.mu.Unlock()

	resp, err := p.cli.Get(ctx, p.keys.NodeTargets(p.node), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read own targets: %w", err)
	}
	var ops []clientv3.Op
	have := map[string]bool{}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		have[k] = true
		if v, ok := want[k]; !ok {
			ops = append(ops, clientv3.OpDelete(k))
		} else if v != string(kv.Value) || clientv3.LeaseID(kv.Lease) != lease {
			ops = append(ops, clientv3.OpPut(k, v, clientv3.WithLease(lease)))
		}
	}
	for k, v := range want {
		if !have[k] {
			ops = append(ops, clientv3.OpPut(k, v, clientv3.WithLease(lease)))
		}
	}
	// etcd limits the operations of one transaction (128 by default).
	for len(ops) > 0 {
		n := min(len(ops), 100)
		if _, err := p.cli.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			return fmt.Errorf("write own targets: %w", err)
		}
		ops = ops[n:]
	}
	p.published.Set(float64(len(want)))
	return nil
}

var _ SessionWorker = (*TargetPublisher)(nil)
