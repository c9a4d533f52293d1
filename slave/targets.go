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
	var b txnBatches
	have := map[string]bool{}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		have[k] = true
		if v, ok := want[k]; !ok {
			b.add(clientv3.OpDelete(k), len(k))
		} else if v != string(kv.Value) || clientv3.LeaseID(kv.Lease) != lease {
			b.add(clientv3.OpPut(k, v, clientv3.WithLease(lease)), len(k)+len(v))
		}
	}
	for k, v := range want {
		if !have[k] {
			b.add(clientv3.OpPut(k, v, clientv3.WithLease(lease)), len(k)+len(v))
		}
	}
	for _, ops := range b.txns {
		if _, err := p.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("write own targets: %w", err)
		}
	}
	p.published.Set(float64(len(want)))
	return nil
}

// etcd refuses a transaction of more than 128 operations or 1.5 MiB (its
// defaults); a batch stays well below both, whatever the size of the groups
// (each at most stackconfig.MaxTargetGroupBytes).
const (
	maxTxnOps   = 100
	maxTxnBytes = 1 << 20
)

// txnBatches splits operations into transactions within etcd's limits.
type txnBatches struct {
	txns  [][]clientv3.Op
	bytes int // of the last transaction
}

func (b *txnBatches) add(op clientv3.Op, size int) {
	n := len(b.txns)
	if n == 0 || len(b.txns[n-1]) >= maxTxnOps || b.bytes+size > maxTxnBytes {
		b.txns = append(b.txns, nil)
		b.bytes = 0
		n++
	}
	b.txns[n-1] = append(b.txns[n-1], op)
	b.bytes += size
}

var _ SessionWorker = (*TargetPublisher)(nil)
