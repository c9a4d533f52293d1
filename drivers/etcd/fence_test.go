package etcd_test

import (
	"context"
	"errors"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// A master that lost its term must not be able to write, even though its
// process and client are alive and it still believes it leads.
func TestStaleLeaderWriteIsFenced(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	ctx := context.Background()
	keys := etcd.NewKeys("/agent", "test")

	campaign := func(node string) (*concurrency.Session, etcd.Leader) {
		return etcdtest.Campaign(t, cli, keys, node, 5)
	}

	oldSess, old := campaign("a")
	if _, err := old.Txn(ctx, clientv3.OpPut(keys.Collector("prometheus"), `{"url":"a"}`)); err != nil {
		t.Fatalf("current leader's write refused: %v", err)
	}
	// The old master's lease is revoked (as when it expires): its term ends.
	if err := oldSess.Close(); err != nil {
		t.Fatal(err)
	}
	newSess, cur := campaign("b")
	defer newSess.Close()
	if _, err := cur.Txn(ctx, clientv3.OpPut(keys.Collector("prometheus"), `{"url":"b"}`)); err != nil {
		t.Fatalf("new leader's write refused: %v", err)
	}

	_, err := old.Txn(ctx, clientv3.OpPut(keys.Collector("prometheus"), `{"url":"stale"}`))
	if !errors.Is(err, etcd.ErrFenced) {
		t.Fatalf("stale leader's write: got %v, want ErrFenced", err)
	}
	// What the log shows says what happened, with no package prefix.
	if want := "leadership lost: etcd refused a fenced write"; err.Error() != want {
		t.Fatalf("stale leader's write: %q, want %q", err, want)
	}
	resp, err := cli.Get(ctx, keys.Collector("prometheus"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.Kvs[0].Value); got != `{"url":"b"}` {
		t.Fatalf("value after stale write = %s, want the new leader's", got)
	}

	// The same node winning again is a new term: its old proof is stale too.
	if err := newSess.Close(); err != nil {
		t.Fatal(err)
	}
	againSess, _ := campaign("b")
	defer againSess.Close()
	if _, err := cur.Txn(ctx, clientv3.OpPut(keys.Collector("prometheus"), `{"url":"old-term"}`)); !errors.Is(err, etcd.ErrFenced) {
		t.Fatalf("write with a previous term of the same node: got %v, want ErrFenced", err)
	}
}
