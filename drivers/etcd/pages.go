package etcd

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// PageSize is how many keys ReadPrefix asks etcd for in one request.
const PageSize = 1000

// ReadPrefix reads every key under prefix at one revision, PageSize keys a
// request, and calls f with each, in key order. It returns that revision,
// from which a watch continues. The consumers that read a whole cluster
// (the read endpoints' snapshot, the master's target sync) use it so that
// the memory a read takes is one page of responses, not the prefix: with
// 10,000 target groups one response would be about 3 MB of values decoded
// at once, twice on the master, at start-up.
//
// f may keep kv. The pages are one consistent view: all are read at the
// revision of the first, so a compaction past it in the middle of a read
// fails the read (rpctypes.ErrCompacted), and the caller reads again.
func ReadPrefix(ctx context.Context, kv clientv3.KV, prefix string, f func(kv *mvccpb.KeyValue)) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	key, rev := prefix, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(PageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := kv.Get(ctx, key, opts...)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			f(kv)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
