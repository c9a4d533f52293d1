package slave

import (
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
)

// The node's retry delay never exceeds etcd.RejoinMax, jitter included:
// the hold of removed targets after an outage counts on it.
func TestBackoffNeverExceedsMax(t *testing.T) {
	bo := backoff{min: 200 * time.Millisecond, max: etcd.RejoinMax}
	longest := time.Duration(0)
	for range 1000 {
		longest = max(longest, bo.next())
	}
	if longest > etcd.RejoinMax || longest < etcd.RejoinMax*8/10 {
		t.Fatalf("longest delay %s, want at most RejoinMax %s and near it", longest, etcd.RejoinMax)
	}
}
