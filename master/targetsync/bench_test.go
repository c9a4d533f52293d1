package targetsync

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// BenchmarkWatchToFile measures the latency from a target's etcd write to
// its job file being renamed into place, with 100 simulated agents (one
// lease each) against one etcd process, jobs of 1,000 targets, and target
// changes arriving at 50/s. Each benchmark iteration is one change, so
// `make bench-targets` runs it with -benchtime 500x (ten seconds a case).
// Reported: p50/p99 latency, and the master's CPU and heap (the benchmark
// process holds the master duty and the load generator; etcd runs apart).
func BenchmarkWatchToFile(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) { benchWatchToFile(b, n) })
	}
}

func benchWatchToFile(b *testing.B, total int) {
	const agents, perJob, rate = 100, 1000, 50
	cli := etcdtest.NewClient(b, etcdtest.StartProcess(b))
	ctx := context.Background()
	value := func(node string, i int, seq string) string {
		g := etcd.TargetGroup{Targets: []string{fmt.Sprintf("10.%d.%d.%d:9100", i/65536%256, i/256%256, i%256)},
			Labels: model.LabelSet{"node": model.LabelValue(node), "cluster": "bench", "seq": model.LabelValue(seq)}}
		v, _ := json.Marshal(g)
		return string(v)
	}
	keyOf := func(i int) (string, string) {
		node := fmt.Sprintf("host-%03d", i%agents)
		return node, keys.Target(node, fmt.Sprintf("job%02d", i/perJob), fmt.Sprint(i))
	}
	leases := make([]clientv3.LeaseID, agents)
	for a := range leases {
		l, err := cli.Grant(ctx, 60)
		if err != nil {
			b.Fatal(err)
		}
		leases[a] = l.ID
	}
	var ops []clientv3.Op
	for i := range total {
		node, key := keyOf(i)
		ops = append(ops, clientv3.OpPut(key, value(node, i, "0"), clientv3.WithLease(leases[i%agents])))
		if len(ops) == 100 || i == total-1 {
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				b.Fatal(err)
			}
			ops = ops[:0]
		}
	}

	var mu sync.Mutex
	pending := map[string]time.Time{} // marker -> time of the etcd write
	var lat []time.Duration
	arrived := make(chan struct{}, 1)
	dir := b.TempDir()
	_, lead := campaign(b, cli, "bench-master")
	m := runSync(b, cli, dir, lead, func(_ string, content []byte) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		for marker, start := range pending {
			if bytes.Contains(content, []byte(marker)) {
				lat = append(lat, now.Sub(start))
				delete(pending, marker)
				select {
				case arrived <- struct{}{}:
				default:
				}
			}
		}
	})
	etcdtest.Eventually(b, time.Minute, func() bool {
		return testutil.ToFloat64(m.sync.m.targets) == float64(total)
	}, "initial load of %d targets not done", total)

	var before, after syscall.Rusage
	runtime.GC()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	start := time.Now()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		j := (i * 7919) % total // spread changes over every job and agent
		node, key := keyOf(j)
		marker := fmt.Sprintf(`"seq": "%d"`, i+1)
		mu.Lock()
		pending[marker] = time.Now()
		mu.Unlock()
		if _, err := cli.Put(ctx, key, value(node, j, fmt.Sprint(i+1)), clientv3.WithLease(leases[j%agents])); err != nil {
			b.Fatal(err)
		}
	}
	etcdtest.Eventually(b, 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(pending) == 0 }, "changes never reached the files")
	b.StopTimer()
	elapsed := time.Since(start)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(float64(len(lat))*p))] }
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "cpu-%")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(after.Maxrss)/1024, "maxrss-MiB")
}
