package collectors_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/master/collectors"
	"github.com/agentproj/agent/slave"
)

var keys = etcd.NewKeys("/agent", "test")

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The master publishes, nodes see it; a new master's URLs replace the old
// ones; the old master's late write is fenced off.
func TestCollectorsTravelThroughEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()

	var mu sync.Mutex
	var seen map[string]string
	watch := slave.NewCollectorWatch(cli, keys, func(u map[string]string) { mu.Lock(); seen = u; mu.Unlock() }, quiet())
	ctx, cancel := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() { wdone <- watch.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-wdone })
	sees := func(want map[string]string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return maps.Equal(seen, want) }
	}

	term := func(node string) (*concurrency.Session, etcd.Leader) {
		return etcdtest.Campaign(t, cli, keys, node, 2)
	}
	run := func(p *collectors.Publisher, lead etcd.Leader) (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, lead) }()
		return cancel, done
	}

	sessA, leadA := term("a")
	urlsA := map[string]string{collectors.Prometheus: "http://127.0.0.1:9090", collectors.Relay: "http://127.0.0.1:9464/api/v1/write"}
	pubA := collectors.NewPublisher(keys, urlsA, quiet())
	stopA, doneA := run(pubA, leadA)
	etcdtest.Eventually(t, 5*time.Second, sees(urlsA), "nodes do not see a's URLs")

	// a's term ends (its lease expires); b takes over and publishes.
	sessA.Orphan()
	sessB, leadB := term("b")
	defer sessB.Close()
	urlsB := map[string]string{collectors.Prometheus: "http://127.0.0.2:9090", collectors.JaegerOTLPGRPC: "127.0.0.2:4317"}
	stopB, doneB := run(collectors.NewPublisher(keys, urlsB, quiet()), leadB)
	defer func() { stopB(); <-doneB }()
	etcdtest.Eventually(t, 10*time.Second, sees(urlsB), "nodes do not see b's URLs")

	// a, unaware, tries again: fenced.
	pubA.Set(map[string]string{collectors.Prometheus: "http://stale:9090"})
	select {
	case err := <-doneA:
		if !errors.Is(err, etcd.ErrFenced) {
			t.Fatalf("stale publisher: %v, want ErrFenced", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stale publisher did not stop")
	}
	stopA()
	if !sees(urlsB)() {
		t.Fatal("stale master changed the URLs")
	}
}
