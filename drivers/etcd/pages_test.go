package etcd_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// pageCounter is the real client, counting the pages it returns and
// writing a key into the prefix after the first one.
type pageCounter struct {
	clientv3.KV
	pages []int
	put   func()
}

func (p *pageCounter) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := p.KV.Get(ctx, key, opts...)
	if err == nil {
		p.pages = append(p.pages, len(resp.Kvs))
		if len(p.pages) == 1 {
			p.put()
		}
	}
	return resp, err
}

// ReadPrefix reads a prefix larger than a page in pages of PageSize, every
// key once and in order, nothing outside the prefix, and all at the
// revision of the first page: a key written meanwhile is not in the read.
func TestReadPrefixPages(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	ctx := context.Background()
	n := etcd.PageSize*2 + 500
	var want []string
	var ops []clientv3.Op
	for i := range n {
		k := fmt.Sprintf("/p/in/%05d", i)
		want = append(want, k)
		ops = append(ops, clientv3.OpPut(k, "v"))
		if len(ops) == 100 {
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	for _, k := range []string{"/p/im", "/p/in", "/p/io/0"} { // outside "/p/in/"
		if _, err := cli.Put(ctx, k, "x"); err != nil {
			t.Fatal(err)
		}
	}
	kv := &pageCounter{KV: cli, put: func() {
		if _, err := cli.Put(ctx, "/p/in/99999", "late"); err != nil {
			t.Error(err)
		}
	}}
	head, err := cli.Get(ctx, "/p/none")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	rev, err := etcd.ReadPrefix(ctx, kv, "/p/in/", func(kv *mvccpb.KeyValue) { got = append(got, string(kv.Key)) })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("read %d keys (first %q, last %q), want the %d keys of the prefix in order at the first page's revision", len(got), got[0], got[len(got)-1], n)
	}
	if rev != head.Header.Revision {
		t.Fatalf("revision %d, want %d (before the late write)", rev, head.Header.Revision)
	}
	if !slices.Equal(kv.pages, []int{etcd.PageSize, etcd.PageSize, 500}) {
		t.Fatalf("pages of %v keys, want %d, %d, 500", kv.pages, etcd.PageSize, etcd.PageSize)
	}
}
