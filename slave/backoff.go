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

// next returns the delay the following wait will use.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	}
	return b.cur
}

// wait sleeps the current delay (with ±20% jitter) or until ctx ends, then
// doubles the delay up to max.
func (b *backoff) wait(ctx context.Context) {
	d := b.next()
	d += time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	b.cur = min(2*b.cur, b.max)
}

func (b *backoff) reset() { b.cur = 0 }
