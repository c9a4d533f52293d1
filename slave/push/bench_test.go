package push

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/master/relay"
	"github.com/agentproj/agent/stackconfig"
)

// cpuSeconds is the CPU time (user + system) this process has used.
func cpuSeconds(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// pushBodies builds n bodies of per samples each, 1000 series with 4
// labels, in the text format or as the JSON list.
func pushBodies(n, per int, json bool) []string {
	out := make([]string, n)
	next := 0
	for i := range out {
		var b strings.Builder
		if json {
			b.WriteString("[")
		}
		for j := range per {
			s := next % 1000
			next++
			if json {
				if j > 0 {
					b.WriteString(",\n")
				}
				fmt.Fprintf(&b, `{"name":"job_metric_%d","tags":{"job":"batch-%d","host":"host-%03d","step":"s%d","mount":"/data/%d"},"value":%d}`, s%20, s%7, s, s%5, s, next)
			} else {
				fmt.Fprintf(&b, "job_metric_%d{job=\"batch-%d\",host=\"host-%03d\",step=\"s%d\",mount=\"/data/%d\"} %d\n", s%20, s%7, s, s%5, s, next)
			}
		}
		if json {
			b.WriteString("]")
		}
		out[i] = b.String()
	}
	return out
}

// benchmarkPush measures pushes through the handler into a real relay
// (parse, check, encode, relay ingest with fdatasync) while the relay's
// forwarders drain the queue to an upstream that discards; it reports
// pushed samples per CPU second of the whole process.
func benchmarkPush(b *testing.B, json bool) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	cfg := stackconfig.DefaultRelay
	cfg.Upstream = []stackconfig.RelayUpstream{{URL: up.URL}}
	rel, err := relay.New(cfg.WithAgentDefaults("c1", b.TempDir()), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rel.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	h := NewHandler(Config{Node: "n1", Cluster: "c1", MaxBodyBytes: 64 << 20}, rel, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	const per = 1000
	bodies := pushBodies(8, per, json)
	ct := "text/plain"
	if json {
		ct = "application/json"
	}
	for do(h, http.MethodPost, "/api/v1/push?ns=bench", ct, bodies[0]).Code == http.StatusServiceUnavailable {
		time.Sleep(time.Millisecond) // until the relay runs
	}
	var next atomic.Int64
	b.SetParallelism(4)
	cpu0, start := cpuSeconds(b), time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := bodies[next.Add(1)%int64(len(bodies))]
			if rec := do(h, http.MethodPost, "/api/v1/push?ns=bench", ct, body); rec.Code != http.StatusNoContent {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.StopTimer()
	cpu := cpuSeconds(b) - cpu0
	samples := float64(b.N * per)
	b.ReportMetric(samples/cpu, "samples/cpu-s")
	b.ReportMetric(samples/time.Since(start).Seconds(), "samples/s")
}

func BenchmarkPushText(b *testing.B) { benchmarkPush(b, false) }
func BenchmarkPushJSON(b *testing.B) { benchmarkPush(b, true) }
