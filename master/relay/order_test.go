package relay

import (
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

// seriesInShard returns n series names (label sets __name__=<name>,
// job=node) that r puts in shard.
func seriesInShard(t *testing.T, r *Relay, shard, n int) []string {
	t.Helper()
	var names []string
	for i := 0; len(names) < n; i++ {
		if name := fmt.Sprintf("s%d", i); shardOf(t, r.rw, name) == shard {
			names = append(names, name)
		}
	}
	return names
}

// shardOf returns the shard rw puts series name in.
func shardOf(t *testing.T, rw *remotewrite.Rewriter, name string) int {
	t.Helper()
	dec, err := remotewrite.Decode(nil, request(name), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]remotewrite.Shard, rw.Shards())
	if _, err := rw.Rewrite(dec, out); err != nil {
		t.Fatal(err)
	}
	for s := range out {
		if len(out[s].Buf) > 0 {
			return s
		}
	}
	t.Fatalf("series %s in no shard", name)
	return -1
}

// TestShardsSendOldestDataFirst: after an outage, a shard with little data
// per request (one series) must not run ahead of a shard with much (20
// series): requests reach the upstream roughly ordered in time across all
// series, timestamps never going back by much more than the shard lead.
func TestShardsSendOldestDataFirst(t *testing.T) {
	up, bringUp := newDownManager(t)
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.Concurrency = 2
	cfg.MaxSamplesPerSend = 200 // the one-series shard could take its whole backlog in one request
	const lead = 100 * time.Millisecond
	r, _ := runningWith(t, cfg, discardLogger(), func(r *Relay) { r.fwds[0].order.lead = lead })
	lone := seriesInShard(t, r, 0, 1)
	many := seriesInShard(t, r, 1, 20)

	const requests = 100
	var gap time.Duration // the longest time between two requests, as appended
	prev := time.Now()
	for i := range requests {
		// Each request's samples carry the time it was sent; the queue
		// stamps it with the time it was appended, no later than the
		// next request's.
		now := time.Now()
		gap = max(gap, now.Sub(prev))
		prev = now
		var wr remotewrite.WriteRequest
		for _, name := range append([]string{lone[0]}, many...) {
			wr.Timeseries = append(wr.Timeseries, remotewrite.TimeSeries{
				Labels:  []remotewrite.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "node"}},
				Samples: []remotewrite.Sample{{Value: float64(i), Timestamp: now.UnixMilli()}},
			})
		}
		if rec := post(r, remotewrite.Encode(nil, wr.Append(nil)), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		for time.Since(now) < 5*time.Millisecond { // spread the requests over time
			time.Sleep(time.Millisecond)
		}
	}
	bringUp()
	waitFor(t, "everything delivered", func() bool { return len(up.received()) == 21*requests })

	// How far back do timestamps go from one request to any later one?
	up.mu.Lock()
	defer up.mu.Unlock()
	var back time.Duration
	newest := int64(0)
	for _, req := range up.accepted {
		lo, hi := req[0].Samples[0].Timestamp, req[0].Samples[0].Timestamp
		for _, s := range req {
			lo, hi = min(lo, s.Samples[0].Timestamp), max(hi, s.Samples[0].Timestamp)
		}
		back = max(back, time.Duration(newest-lo)*time.Millisecond)
		newest = max(newest, hi)
	}
	// The relay bounds append times; a sample's time is at most one gap
	// before its append time (and a millisecond of rounding).
	if bound := lead + gap + 2*time.Millisecond; back > bound {
		t.Fatalf("timestamps went back %v between requests, want at most the lead %v + %v between requests", back, lead, gap+2*time.Millisecond)
	}
	t.Logf("timestamps went back at most %v (lead %v, longest gap between requests %v), %d requests", back, lead, gap, len(up.accepted))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Lowering concurrency while the upstream is behind on one shard loses
// nothing: after the restart the shard left delivers what the one that
// went had not.
func TestLowerConcurrencyDeliversEverything(t *testing.T) {
	up := newFakeManager(t)
	var slow atomic.Pointer[string] // refused (503) while set
	up.respond = func(_ int, wr *remotewrite.WriteRequest) (int, http.Header) {
		if s := slow.Load(); s != nil && names(wr.Timeseries)[*s] > 0 {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusNoContent, nil
	}
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.Concurrency = 4
	r, stop := running(t, cfg)
	behind, ahead := seriesInShard(t, r, 3, 1)[0], seriesInShard(t, r, 0, 1)[0]
	slow.Store(&behind)
	for range 10 {
		if rec := post(r, request(behind, ahead), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	waitFor(t, "the shard ahead delivered", func() bool { return names(up.received())[ahead] == 10 })
	stop()

	slow.Store(nil)
	cfg.Concurrency = 1
	running(t, cfg)
	poll.Until(t, 10*time.Second, func() bool { return names(up.received())[behind] >= 10 },
		"%s delivered 10 times after concurrency 4 -> 1; the upstream has %v", behind, poll.Latest(func() any { return names(up.received()) }))
}

// Changing concurrency while a series' older samples are still queued
// keeps the series in order at the upstream: the shard that has the series
// now sends its newer samples only once its older ones, read by another
// shard now, are delivered. The upstream refuses a sample older than its
// series' newest, as Prometheus' TSDB does.
func TestConcurrencyChangeKeepsSeriesOrder(t *testing.T) {
	cfg := testConfig(t.TempDir())
	// A series whose records under concurrency 4 another shard reads
	// under 3 than the one that gets its new records.
	rewriter := func(shards int) *remotewrite.Rewriter {
		rw, err := remotewrite.NewRewriter(cfg.ExternalLabels, shards, remotewrite.NamesUTF8)
		if err != nil {
			t.Fatal(err)
		}
		return rw
	}
	four, three := rewriter(4), rewriter(3)
	var x string
	for i := 0; x == ""; i++ {
		if name := fmt.Sprintf("s%d", i); shardOf(t, four, name)%3 != shardOf(t, three, name) {
			x = name
		}
	}

	up := newFakeManager(t)
	var (
		mu         sync.Mutex
		newest     = map[string]int64{}
		outOfOrder []string
		taken      int // samples of x
		down       = true
		holdOld    time.Time // until then requests with x's older samples get 503
	)
	up.respond = func(_ int, wr *remotewrite.WriteRequest) (int, http.Header) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return http.StatusServiceUnavailable, nil
		}
		for _, ts := range wr.Timeseries {
			if ts.Labels[0].Value == x && ts.Samples[0].Timestamp < 100 && time.Now().Before(holdOld) {
				return http.StatusServiceUnavailable, nil
			}
		}
		for _, ts := range wr.Timeseries {
			name := ts.Labels[0].Value
			for _, s := range ts.Samples {
				if s.Timestamp < newest[name] {
					outOfOrder = append(outOfOrder, fmt.Sprintf("%s@%d after @%d", name, s.Timestamp, newest[name]))
					return http.StatusBadRequest, nil // out of order sample
				}
			}
		}
		for _, ts := range wr.Timeseries {
			for _, s := range ts.Samples {
				newest[ts.Labels[0].Value] = s.Timestamp
				if ts.Labels[0].Value == x {
					taken++
				}
			}
		}
		return http.StatusNoContent, nil
	}
	cfg.Upstream = stackconfig.Upstreams(up.URL)
	postX := func(r *Relay, ts int64) {
		t.Helper()
		var wr remotewrite.WriteRequest
		wr.Timeseries = []remotewrite.TimeSeries{{
			Labels:  []remotewrite.Label{{Name: "__name__", Value: x}, {Name: "job", Value: "node"}},
			Samples: []remotewrite.Sample{{Value: float64(ts), Timestamp: ts}},
		}}
		if rec := post(r, remotewrite.Encode(nil, wr.Append(nil)), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}

	cfg.Concurrency = 4
	r, stop := running(t, cfg)
	for ts := range int64(5) {
		postX(r, 10+ts) // queued; the upstream is down
	}
	stop()

	cfg.Concurrency = 3
	mu.Lock()
	// The older samples are held back for a while after the upstream is
	// up, so that newer ones sent too early would be taken first.
	down, holdOld = false, time.Now().Add(time.Second)
	mu.Unlock()
	r, _ = running(t, cfg)
	for ts := range int64(5) {
		postX(r, 100+ts)
	}
	// Until x's ten samples are taken, or one is refused.
	poll.Until(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return taken == 10 || len(outOfOrder) > 0
	}, "%s's samples taken by the upstream, want 10", x, poll.Latest(func() any { mu.Lock(); defer mu.Unlock(); return taken }))
	mu.Lock()
	defer mu.Unlock()
	if len(outOfOrder) > 0 {
		t.Fatalf("samples refused as out of order after concurrency 4 -> 3: %v", outOfOrder)
	}
}
