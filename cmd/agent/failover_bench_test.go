package main

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// BenchmarkFailover measures, with three agent processes on one etcd
// process and the default TTL of 5s, the time from stopping the master to a
// new master announcing itself in etcd. Run it with `make bench-failover`
// (-benchtime=10x gives ten failovers per case).
func BenchmarkFailover(b *testing.B) {
	for _, tc := range []struct {
		name string
		stop func(*agentProc)
	}{
		{"kill9", func(a *agentProc) { a.signal(syscall.SIGKILL) }},
		{"sigterm", func(a *agentProc) { a.signal(syscall.SIGTERM) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			endpoint := startEtcd(b)
			cli := etcdClient(b, endpoint)
			const ttl = "5s"
			agents := map[string]*agentProc{}
			for _, n := range []string{"a", "b", "c"} {
				agents[n] = startAgent(b, endpoint, n, ttl)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var times []time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for _, a := range agents {
					etcdtest.Eventually(b, 30*time.Second, a.ready, "agent %s not ready", a.node)
				}
				wctx, wcancel := context.WithTimeout(ctx, time.Minute)
				master, _, err := masterSince(wctx, cli, e2eKeys, "")
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				stopped := time.Now()
				tc.stop(agents[master])
				_, seen, err := masterSince(wctx, cli, e2eKeys, master)
				b.StopTimer()
				wcancel()
				if err != nil {
					b.Fatal(err)
				}
				times = append(times, seen.Sub(stopped))
				agents[master].wait(10 * time.Second)
				agents[master] = startAgent(b, endpoint, master, ttl)
			}
			slices.Sort(times)
			b.ReportMetric(float64(percentile(times, 0.50).Milliseconds()), "p50-ms")
			b.ReportMetric(float64(percentile(times, 0.99).Milliseconds()), "p99-ms")
			b.ReportMetric(float64(times[len(times)-1].Milliseconds()), "max-ms")
			b.Logf("%s failover over %d runs: p50 %s, p99 %s, all %v", tc.name, len(times), percentile(times, 0.5), percentile(times, 0.99), times)
		})
	}
}

// percentile of sorted durations, nearest-rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
