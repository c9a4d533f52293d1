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
// new master announcing itself in etcd; and, for an agent killed with -9
// and started again at once on its data dir, the time from the new
// process's start to its /-/ready, on its embedded etcd and on an etcd
// process. Run it with `make bench-failover` (-benchtime=10x gives ten
// runs per case).
func BenchmarkFailover(b *testing.B) {
	b.Run("crash-restart-embedded", func(b *testing.B) {
		dir := b.TempDir()
		args := embeddedAgentArgs(b, "r1", dir)
		benchCrashRestart(b, &agentProc{proc: startProc(b, "agent-r1", agentBinary(b), args...), node: "r1", api: flagValue(args, "--listen")}, args)
	})
	b.Run("crash-restart-etcd", func(b *testing.B) {
		a := startAgent(b, startEtcd(b), "r1", "5s")
		benchCrashRestart(b, a, a.cmd.Args[1:])
	})
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
			reportTimes(b, tc.name+" failover", times)
		})
	}
}

// benchCrashRestart kills a with -9 and restarts it with args, b.N times,
// and reports how long each restarted process took to be ready.
func benchCrashRestart(b *testing.B, a *agentProc, args []string) {
	var times []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		etcdtest.Eventually(b, 30*time.Second, a.ready, "agent %s not ready", a.node)
		b.StartTimer()
		var took time.Duration
		a, took = restartAfterKill(b, a, args)
		b.StopTimer()
		times = append(times, took)
	}
	reportTimes(b, "crash-restart", times)
}

func reportTimes(b *testing.B, name string, times []time.Duration) {
	slices.Sort(times)
	b.ReportMetric(float64(percentile(times, 0.50).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(percentile(times, 0.99).Milliseconds()), "p99-ms")
	b.ReportMetric(float64(times[len(times)-1].Milliseconds()), "max-ms")
	b.Logf("%s over %d runs: p50 %s, p99 %s, all %v", name, len(times), percentile(times, 0.5), percentile(times, 0.99), times)
}

// percentile of sorted durations, nearest-rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
