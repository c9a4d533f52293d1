package etcd

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrFenced is returned by Leader.Txn when the election key that made this
// agent master is gone or was re-created: leadership is lost and the caller
// must stop every master duty at once.
var ErrFenced = errors.New("etcd: fenced write refused, leadership lost")

// Leader is proof of one term of mastership: the election key this agent
// created and its create revision. A later term, even of the same agent, has
// a different revision, so a write fenced on an old term is always refused.
type Leader struct {
	Node  string
	Key   string           // election key of this term
	Rev   int64            // create revision of Key; orders terms
	Lease clientv3.LeaseID // the master's session lease, for its own keys
	KV    clientv3.KV
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
