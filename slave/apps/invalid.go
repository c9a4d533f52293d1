package apps

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// invalidRecords reports each bad record once per key and revision: it
// is counted and logged the first time it is seen, then skipped quietly.
type invalidRecords struct {
	log     *slog.Logger
	counter prometheus.Counter

	mu   sync.Mutex
	seen map[string]int64 // key -> mod revision reported
}

func newInvalidRecords(log *slog.Logger, c prometheus.Counter) *invalidRecords {
	return &invalidRecords{log: log, counter: c, seen: map[string]int64{}}
}

func (b *invalidRecords) report(key string, modRev int64, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen[key] == modRev {
		return
	}
	b.seen[key] = modRev
	b.counter.Inc()
	b.log.Warn("skipping invalid app record", "key", key, "revision", modRev, "err", err)
}

// forget drops a key that is valid again or deleted.
func (b *invalidRecords) forget(key string) {
	b.mu.Lock()
	delete(b.seen, key)
	b.mu.Unlock()
}
