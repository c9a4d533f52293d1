package slave

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/stackconfig"
)

// Groups as large as the master accepts, many of them: one transaction of
// them all would pass etcd's request size limit (1.5 MiB by default), so
// the publisher must split by bytes, not only by operation count.
func TestPublisherSplitsLargeGroupsWithinEtcdLimits(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close() })

	groups := map[string]etcd.TargetGroup{}
	for i := range 100 {
		g := etcd.TargetGroup{Targets: []string{fmt.Sprintf("127.0.0.1:%d", 10000+i)}, Labels: model.LabelSet{}}
		g.Labels["pad"] = model.LabelValue(strings.Repeat("x", stackconfig.MaxTargetGroupBytes-200))
		groups[fmt.Sprintf("big/%d", i)] = g
	}
	p := NewTargetPublisher("n1", testKeys, cli, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	p.Set("test", groups)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, sess) }()
	t.Cleanup(func() { cancel(); <-done })

	etcdtest.Eventually(t, 30*time.Second, func() bool {
		resp, err := cli.Get(context.Background(), testKeys.NodeTargets("n1"), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 100
	}, "the 100 large target groups were not all published")
	set, err := etcd.Registry{KV: cli, Keys: testKeys, Cluster: "test"}.Targets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Targets) != 100 || len(set.Skipped) != 0 {
		t.Fatalf("registry reads %d targets and %d invalid values, want 100 valid", len(set.Targets), len(set.Skipped))
	}
}
