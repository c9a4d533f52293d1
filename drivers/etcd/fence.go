package etcd

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrFenced is returned by Leader.Txn when the election key that made this
// agent master is gone or was re-created: leadership is lost and the caller
// must stop every master duty at once. Its text reaches the agent's log,
// without a package prefix.
var ErrFenced = errors.New("leadership lost: etcd refused a fenced write")

// Leader is proof of one term of mastership: the election key this agent
// created and its create revision. A later term, even of the same agent, has
// a different revision, so a write fenced on an old term is always refused.
//
// Revisions order the terms of one etcd history only: an etcd replaced or
// restored empty counts from 1 again. ClusterID names the etcd the term was
// won in, for fences kept outside etcd (the file_sd directory's record).
type Leader struct {
	Node      string
	Key       string           // election key of this term
	Rev       int64            // create revision of Key; orders terms
	ClusterID uint64           // etcd cluster ID from the campaign's response header
	Lease     clientv3.LeaseID // the master's session lease, for its own keys
	KV        clientv3.KV
}

// Revision returns the revision etcd is at now, read linearizably, so that
// it is at least that of every term already won. It returns ErrFenced when
// this term's election key is gone or re-created.
func (l Leader) Revision(ctx context.Context) (int64, error) {
	resp, err := l.KV.Get(ctx, l.Key)
	if err != nil {
		return 0, fmt.Errorf("read etcd revision: %w", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.Rev {
		return 0, ErrFenced
	}
	return resp.Header.Revision, nil
}

// Txn applies ops atomically if and only if this term is still current:
// the transaction is guarded by CreateRevision(Key) == Rev. It returns
// ErrFenced when the guard fails.
func (l Leader) Txn(ctx context.Context, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := l.KV.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(l.Key), "=", l.Rev)).
		Then(ops...).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("fenced txn: %w", err)
	}
	if !resp.Succeeded {
		return nil, ErrFenced
	}
	return resp, nil
}
