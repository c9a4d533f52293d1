package etcd_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

func TestRegistryViewSkipsMalformedMembers(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	ctx := context.Background()
	keys := etcd.NewKeys("/agent", "c1")
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, m := range []etcd.Member{{Node: "b", API: "127.0.0.1:2"}, {Node: "a", API: "127.0.0.1:1", MasterSince: &since}} {
		v, _ := json.Marshal(m)
		if _, err := cli.Put(ctx, keys.Member(m.Node), string(v)); err != nil {
			t.Fatal(err)
		}
	}
	for key, value := range map[string]string{
		keys.Member("broken"):    "{not json",
		keys.App("shop-1"):       `{"spec":{"guid":"shop-1","image":"registry.local/shop:1"},"node":"b"}`,
		keys.App("bad"):          `[]`,
		keys.AppStatus("shop-1"): `{"node":"b","status":"running"}`,
	} {
		if _, err := cli.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	reg := etcd.Registry{KV: cli, Keys: keys, Cluster: "c1"}

	view, err := reg.View(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if view.Master != nil {
		t.Fatalf("master before any election: %+v", view.Master)
	}
	if len(view.Members) != 2 || view.Members[0].Node != "a" || view.Members[1].Node != "b" || view.Skipped != 2 {
		t.Fatalf("members %+v skipped %d: want a, b sorted and 2 skipped (a member, an app)", view.Members, view.Skipped)
	}
	if want := (etcd.AppSummary{GUID: "shop-1", Image: "registry.local/shop:1", Node: "b", Status: "running"}); len(view.Apps) != 1 || view.Apps[0] != want {
		t.Fatalf("apps %+v, want [%+v]", view.Apps, want)
	}

	s, err := concurrency.NewSession(cli)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := concurrency.NewElection(s, keys.Election()).Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	view, err = reg.View(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if view.Master == nil || view.Master.Node != "a" || view.Master.Since == nil || !view.Master.Since.Equal(since) || !view.Members[0].Master || view.Members[1].Master {
		t.Fatalf("after a won: master %+v members %+v", view.Master, view.Members)
	}
}
