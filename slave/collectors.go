package slave

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
)

// CollectorWatch follows collectors/ in etcd, where the master publishes
// its services' URLs, and tells its subscriber whenever the set changes
// (the node's trace agent re-renders its exporter endpoint from it).
type CollectorWatch struct {
	cli      *clientv3.Client
	keys     etcd.Keys
	log      *slog.Logger
	onChange func(map[string]string)

	mu   sync.Mutex
	urls map[string]string
}

// NewCollectorWatch returns a watch; onChange (may be nil) gets every new set.
func NewCollectorWatch(cli *clientv3.Client, keys etcd.Keys, onChange func(map[string]string), log *slog.Logger) *CollectorWatch {
	return &CollectorWatch{cli: cli, keys: keys, log: log, onChange: onChange, urls: map[string]string{}}
}

// URLs returns the current set (name -> URL).
func (w *CollectorWatch) URLs() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.urls)
}

// Run follows the prefix until ctx ends, reading it whole again after any
// watch failure.
func (w *CollectorWatch) Run(ctx context.Context) error {
	bo := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	for ctx.Err() == nil {
		resp, err := w.cli.Get(ctx, w.keys.Collectors(), clientv3.WithPrefix())
		if err != nil {
			if ctx.Err() == nil {
				sleep(ctx, bo.next())
			}
			continue
		}
		bo.reset()
		urls := map[string]string{}
		for _, kv := range resp.Kvs {
			w.put(urls, string(kv.Key), kv.Value)
		}
		w.set(urls)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range w.cli.Watch(wctx, w.keys.Collectors(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					delete(urls, strings.TrimPrefix(string(ev.Kv.Key), w.keys.Collectors()))
				} else {
					w.put(urls, string(ev.Kv.Key), ev.Kv.Value)
				}
			}
			w.set(urls)
		}
		cancel()
	}
	return nil
}

func (w *CollectorWatch) put(urls map[string]string, key string, value []byte) {
	name := strings.TrimPrefix(key, w.keys.Collectors())
	var rec struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(value, &rec); err != nil || rec.URL == "" {
		w.log.Warn("skipping invalid collector record", "key", key, "err", err)
		delete(urls, name)
		return
	}
	urls[name] = rec.URL
}

func (w *CollectorWatch) set(urls map[string]string) {
	w.mu.Lock()
	same := maps.Equal(w.urls, urls)
	w.urls = maps.Clone(urls)
	w.mu.Unlock()
	if !same && w.onChange != nil {
		w.onChange(maps.Clone(urls))
	}
}
