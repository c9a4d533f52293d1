package collectors

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/master"
)

// Names of the published services.
const (
	Prometheus     = "prometheus"
	JaegerOTLPGRPC = "jaeger-otlp-grpc"
	JaegerOTLPHTTP = "jaeger-otlp-http"
	Relay          = "relay"
)

// Record is the value of a collectors/<name> key.
type Record struct {
	URL string `json:"url"`
}

// Publisher is the duty. Set changes the published URLs (the cluster stack
// calls it when its endpoints change); Run writes them for one term.
type Publisher struct {
	keys etcd.Keys
	log  *slog.Logger

	mu    sync.Mutex
	urls  map[string]string
	nudge chan struct{}
}

// NewPublisher returns a publisher of urls (name -> URL).
func NewPublisher(keys etcd.Keys, urls map[string]string, log *slog.Logger) *Publisher {
	return &Publisher{keys: keys, log: log, urls: maps.Clone(urls), nudge: make(chan struct{}, 1)}
}

// Set replaces the published URLs and nudges Run.
func (p *Publisher) Set(urls map[string]string) {
	p.mu.Lock()
	p.urls = maps.Clone(urls)
	p.mu.Unlock()
	select {
	case p.nudge <- struct{}{}:
	default:
	}
}

// Run publishes at the start of the term and after every Set, until the
// term ends. A refused fence ends the term with etcd.ErrFenced.
func (p *Publisher) Run(ctx context.Context, lead etcd.Leader) error {
	for {
		if err := p.publish(ctx, lead); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.nudge:
		}
	}
}

// publish makes collectors/ hold exactly the current URLs, in one fenced
// transaction under the master's lease.
func (p *Publisher) publish(ctx context.Context, lead etcd.Leader) error {
	p.mu.Lock()
	urls := maps.Clone(p.urls)
	p.mu.Unlock()
	resp, err := lead.KV.Get(ctx, p.keys.Collectors(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("read collectors: %w", err)
	}
	var ops []clientv3.Op
	for _, kv := range resp.Kvs {
		if _, ok := urls[string(kv.Key)[len(p.keys.Collectors()):]]; !ok {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	for name, url := range urls {
		v, _ := json.Marshal(Record{URL: url})
		ops = append(ops, clientv3.OpPut(p.keys.Collector(name), string(v), clientv3.WithLease(lead.Lease)))
	}
	if _, err := lead.Txn(ctx, ops...); err != nil {
		return fmt.Errorf("publish collectors: %w", err)
	}
	p.log.Info("published collector URLs", "urls", urls)
	return nil
}

var _ master.Duty = (*Publisher)(nil)
