package relay

import (
	"sync"
	"time"

	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

// protocolRetry is how long an upstream with protocol auto is sent the
// other version after it did not take one; then the relay tries again (the
// upstream may have been upgraded). Trying costs one request: a 1.0
// receiver answers a 2.0 request without storing anything, and the batch is
// sent again as 1.0 at once.
const protocolRetry = 10 * time.Minute

// protoState is what the relay learned about an upstream's remote-write
// versions (protocol auto). All shards of the upstream share it.
type protoState struct {
	retry time.Duration

	mu        sync.Mutex
	noV2Until time.Time // 2.0 is not sent before
	noV1Until time.Time // 1.0 is not sent before (a 2.0-only receiver)
	v2OK      bool      // answered 2.0 with the Written headers since the last fallback
}

func (p *protoState) confirm() {
	p.mu.Lock()
	p.v2OK = true
	p.mu.Unlock()
}

func (p *protoState) confirmed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.v2OK
}

// target is the version a batch that came in as in is sent in.
func (f *forwarder) target(in remotewrite.Version) remotewrite.Version {
	switch f.up.Protocol {
	case stackconfig.ProtocolV1:
		return remotewrite.V1
	case stackconfig.ProtocolV2:
		return remotewrite.V2
	}
	now := time.Now()
	p := &f.proto
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case in == remotewrite.V2 && now.Before(p.noV2Until):
		return remotewrite.V1
	case in == remotewrite.V1 && now.Before(p.noV1Until):
		return remotewrite.V2
	}
	return in
}

// fallback records that the upstream did not take version v: the other
// version is sent for a while. It reports false when the other version is
// known not to work either (then the batch is refused, like any 4xx).
func (f *forwarder) fallback(v remotewrite.Version, now time.Time) bool {
	if f.up.Protocol != stackconfig.ProtocolAuto {
		return false
	}
	p := &f.proto
	p.mu.Lock()
	defer p.mu.Unlock()
	other, until, otherUntil := remotewrite.V1, &p.noV2Until, p.noV1Until
	if v == remotewrite.V1 {
		other, until, otherUntil = remotewrite.V2, &p.noV1Until, p.noV2Until
	}
	if now.Before(otherUntil) {
		return false
	}
	if !now.Before(*until) {
		f.fallbacks.WithLabelValues(v.String()).Inc()
		f.logger.Warn("upstream does not take remote-write "+v.String()+": sending "+other.String()+", converting", "err", f.lastError(), "retry_in", p.retry)
	}
	*until = now.Add(p.retry)
	if v == remotewrite.V2 {
		p.v2OK = false
	}
	return true
}

// sending describes what goes out for data that came in as 2.0 and as 1.0,
// for Stats.
func (f *forwarder) sending() (v2, v1 string) {
	return f.target(remotewrite.V2).String(), f.target(remotewrite.V1).String()
}
