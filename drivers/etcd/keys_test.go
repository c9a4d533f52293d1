package etcd

import (
	"slices"
	"testing"
)

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

// Groups are ordered by job, node and id, not by the key's text: "a-b" sorts
// after "a" although "a-b/" sorts before "a/".
func TestCompareTargets(t *testing.T) {
	k := NewKeys("/agent", "prod")
	keys := []string{
		k.Target("a-b", "node", "0"),
		k.Target("a", "node", "1"),
		k.Target("a", "app", "0"),
		k.Target("a", "node", "0"),
		"/agent/prod/targets/short",
	}
	slices.SortFunc(keys, k.CompareTargets)
	want := []string{
		"/agent/prod/targets/short",
		k.Target("a", "app", "0"),
		k.Target("a", "node", "0"),
		k.Target("a", "node", "1"),
		k.Target("a-b", "node", "0"),
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("sorted\n%q\nwant\n%q", keys, want)
	}
	if n := testing.AllocsPerRun(100, func() { k.CompareTargets(keys[1], keys[4]) }); n != 0 {
		t.Fatalf("CompareTargets allocates %v times; it runs in sorts of 10,000 groups", n)
	}
}
