package slave

import (
	"context"
	"reflect"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
)

// FollowEtcd reads the etcd's members (etcd.ReadEtcdView) every interval
// until ctx ends, for the status to show them. A read that fails keeps
// the last view.
func (s *Snapshot) FollowEtcd(ctx context.Context, read func(context.Context) (etcd.EtcdView, error), every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, every)
		v, err := read(rctx)
		cancel()
		if err == nil {
			s.setEtcd(v)
		} else {
			s.log.Debug("etcd members not read", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Snapshot) setEtcd(v etcd.EtcdView) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.etcd != nil && reflect.DeepEqual(*s.etcd, v) {
		return
	}
	s.etcd = &v
	s.changedLocked(false, true)
}
