package slave

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// The status shows the etcd's members and growth, and follows a change.
func TestStatusShowsTheEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	n := startNodeWith(t, cli, "n1", nil)
	base, snap := serveAPI(t, n.Node, cli, n.reg, nodeConfig("").TTL)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		read := func(ctx context.Context) (etcd.EtcdView, error) { return etcd.ReadEtcdView(ctx, cli, "/agent") }
		if err := snap.FollowEtcd(ctx, read, 50*time.Millisecond); err != nil {
			t.Errorf("FollowEtcd: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })

	status := func() etcd.ClusterView {
		var v etcd.ClusterView
		if code, body := get(t, base+"/api/v1/status"); code != 200 || json.Unmarshal([]byte(body), &v) != nil {
			t.Fatalf("status %d: %s", code, body)
		}
		return v
	}
	var v etcd.ClusterView
	etcdtest.Eventually(t, 10*time.Second, func() bool { v = status(); return v.Etcd != nil }, "status without its etcd")
	if len(v.Etcd.Members) != 1 || v.Etcd.GrowsTo != 0 || v.Etcd.Members[0].State() != "voting" ||
		!slices.Contains(v.Etcd.Members[0].ClientURLs, srv.Endpoint()) {
		t.Fatalf("etcd in the status: %+v; want the one voting member at %s, growth unknown", v.Etcd, srv.Endpoint())
	}
	if err := etcd.SetGrowth(context.Background(), cli, "/agent", etcd.Growth{Members: 3}); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool { v = status(); return v.Etcd.GrowsTo == 3 },
		"the status to say the etcd grows to 3 (it says %+v)", v.Etcd)
}
