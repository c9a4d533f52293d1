package etcd

import "testing"

func TestKeys(t *testing.T) {
	k := NewKeys("/agent", "prod")
	for got, want := range map[string]string{
		k.Member("n1"):              "/agent/prod/members/n1",
		k.Election():                "/agent/prod/election",
		k.Target("n1", "node", "0"): "/agent/prod/targets/n1/node/0",
		k.Collector("relay"):        "/agent/prod/collectors/relay",
		k.App("shop-1"):             "/agent/prod/apps/shop-1",
		k.AppStatus("shop-1"):       "/agent/prod/status/apps/shop-1",
	} {
		if got != want {
			t.Errorf("key %q, want %q", got, want)
		}
	}
	node, job, id, ok := k.ParseTarget("/agent/prod/targets/n1/node/0")
	if !ok || node != "n1" || job != "node" || id != "0" {
		t.Errorf("ParseTarget = %q %q %q %v", node, job, id, ok)
	}
	for _, bad := range []string{"/agent/prod/targets/n1/node", "/agent/prod/targets/n1//0", "/agent/other/targets/a/b/c", "/agent/prod/targets/a/b/c/d"} {
		if _, _, _, ok := k.ParseTarget(bad); ok {
			t.Errorf("ParseTarget(%q) accepted a malformed key", bad)
		}
	}
}
