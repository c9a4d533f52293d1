package slave

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is a capped exponential delay with jitter, for retries against etcd.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

// next returns the delay to wait now, with ±20% jitter but never more
// than max, and doubles the following one up to max. The cap holds with
// the jitter: the node's max is etcd.RejoinMax, which the master's hold of
// removed targets counts on.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	}
	d := b.cur + time.Duration((rand.Float64()*0.4-0.2)*float64(b.cur))
	b.cur = min(2*b.cur, b.max)
	return min(d, b.max)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
