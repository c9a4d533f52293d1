package slave

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/workload"
)

// StatusSources are what a node reports about itself: the states of its
// supervisors' workloads, and the relay's stats where one runs.
type StatusSources struct {
	Stack []func() []workload.State
	Relay func() any
	// Kubernetes reports the master's releases in Kubernetes mode; nil
	// (or a func returning nil) reports none.
	Kubernetes func() any
}

// StatusPublisher writes status/nodes/<node> under the session lease every
// Interval when the report changed, so `agent status` shows every node's
// stack components and relay.
type StatusPublisher struct {
	node     string
	keys     etcd.Keys
	cli      *clientv3.Client
	sources  StatusSources
	interval time.Duration
	log      *slog.Logger
}

// NewStatusPublisher returns a publisher that reports every interval.
func NewStatusPublisher(node string, keys etcd.Keys, cli *clientv3.Client, sources StatusSources, interval time.Duration, log *slog.Logger) *StatusPublisher {
	return &StatusPublisher{node: node, keys: keys, cli: cli, sources: sources, interval: interval, log: log}
}

// Run reports until ctx ends.
func (p *StatusPublisher) Run(ctx context.Context, s *concurrency.Session) error {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	var last []byte
	for {
		body := p.report()
		if !bytes.Equal(body, last) {
			var st etcd.NodeStatus
			_ = json.Unmarshal(body, &st)
			st.Node, st.Updated = p.node, time.Now().UTC().Truncate(time.Millisecond)
			val, _ := json.Marshal(st)
			if _, err := p.cli.Put(ctx, p.keys.NodeStatus(p.node), string(val), clientv3.WithLease(s.Lease())); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				p.log.Debug("write node status", "err", err)
			} else {
				last = body
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// report is the status without its time stamp, to compare reports.
func (p *StatusPublisher) report() []byte {
	st := etcd.NodeStatus{Stack: []workload.State{}}
	for _, f := range p.sources.Stack {
		st.Stack = append(st.Stack, f()...)
	}
	slices.SortFunc(st.Stack, func(a, b workload.State) int { return strings.Compare(a.Name, b.Name) })
	if p.sources.Relay != nil {
		if b, err := json.Marshal(p.sources.Relay()); err == nil {
			st.Relay = b
		}
	}
	if p.sources.Kubernetes != nil {
		if v := p.sources.Kubernetes(); v != nil {
			if b, err := json.Marshal(v); err == nil {
				st.Kubernetes = b
			}
		}
	}
	b, _ := json.Marshal(st)
	return b
}

var _ SessionWorker = (*StatusPublisher)(nil)
