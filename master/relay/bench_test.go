package relay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

// benchRequests builds compressed requests of version v shaped like
// Prometheus sends them: one sample per time series entry, 9 labels per
// series; as 2.0 with metadata per series, as Prometheus 3 sends it (the
// load of cmd/relayload).
func benchRequests(v remotewrite.Version, n, series, samples int) [][]byte {
	out := make([][]byte, n)
	next := 0
	for i := range out {
		var wr remotewrite.WriteRequest
		var wr2 remotewrite.RequestV2
		for range samples {
			s := next % series
			next++
			name := fmt.Sprintf("bench_metric_%d", s%50)
			ls := []remotewrite.Label{{Name: "__name__", Value: name}}
			for l := 1; l < 9; l++ {
				ls = append(ls, remotewrite.Label{Name: fmt.Sprintf("label_%02d", l), Value: fmt.Sprintf("value-%d-%06d", l, s)})
			}
			smp := []remotewrite.Sample{{Value: float64(next), Timestamp: int64(next)}}
			wr.Timeseries = append(wr.Timeseries, remotewrite.TimeSeries{Labels: ls, Samples: smp})
			wr2.Timeseries = append(wr2.Timeseries, remotewrite.TimeSeriesV2{Labels: ls, Samples: smp,
				Metadata: remotewrite.MetadataV2{Type: 2, Help: "A gauge, " + name + "."}})
		}
		if v == remotewrite.V2 {
			out[i] = remotewrite.Encode(nil, wr2.Append(nil))
		} else {
			out[i] = remotewrite.Encode(nil, wr.Append(nil))
		}
	}
	return out
}

// benchBodies are the requests of BenchmarkRelayIngest, built once.
var benchBodies = map[remotewrite.Version]func() [][]byte{
	remotewrite.V1: sync.OnceValue(func() [][]byte { return benchRequests(remotewrite.V1, 16, 1000, 2000) }),
	remotewrite.V2: sync.OnceValue(func() [][]byte { return benchRequests(remotewrite.V2, 16, 1000, 2000) }),
}

// cpuTime is the process's CPU time: on a shared machine wall time says
// more about the neighbours than about the code.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelayIngest measures durable ingest and forwarding: requests
// through ServeHTTP (decode, validate, external labels, shard, compress,
// group-committed fdatasync) while the forwarders send the queue to an
// upstream that answers 204 without decoding; the CPU time is counted
// until the upstream has everything (cpu-ns/sample, the figure to compare
// across versions; samples/s is wall time on two cores). The cases are
// those of make bench-relay: 1.0 in and out, 2.0 in and out, 2.0 in and
// 1.0 out.
func BenchmarkRelayIngest(b *testing.B) {
	for _, tc := range []struct {
		name     string
		in       remotewrite.Version
		upstream string
	}{
		{"1.0", remotewrite.V1, stackconfig.ProtocolAuto},
		{"2.0", remotewrite.V2, stackconfig.ProtocolAuto},
		{"2.0to1.0", remotewrite.V2, "1.0"},
	} {
		b.Run(tc.name, func(b *testing.B) { benchIngest(b, tc.in, tc.upstream) })
	}
}

func benchIngest(b *testing.B, in remotewrite.Version, upstream string) {
	var got atomic.Int64 // requests the upstream received
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("Content-Type") == remotewrite.ContentTypeV2 {
			w.Header().Set(remotewrite.SamplesWrittenHeader, "0") // a 2.0 receiver
		}
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	cfg := testConfig(b.TempDir(), up.URL)
	cfg.Upstream[0].Protocol = upstream
	cfg.Concurrency = 4
	cfg.QueueMaxBytes = 1 << 30
	cfg.MaxRequestBytes = 32 << 20
	r, err := New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	for !r.running.Load() {
		runtime.Gosched()
	}
	const samples = 2000
	reqs := benchBodies[in]()
	hdr := map[string]string{}
	if in == remotewrite.V2 {
		hdr["Content-Type"] = remotewrite.ContentTypeV2
	}
	var next atomic.Int64
	fwd0 := r.Stats().Upstreams[0].SamplesForwarded
	b.SetParallelism(8) // requests in flight, as Prometheus shards send them (16 with GOMAXPROCS=2)
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := reqs[next.Add(1)%int64(len(reqs))]
			if rec := post(r, bytes.Clone(body), hdr); rec.Code != http.StatusNoContent {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*samples)/b.Elapsed().Seconds(), "samples/s")
	want := fwd0 + int64(b.N*samples)
	for deadline := time.Now().Add(time.Minute); r.Stats().Upstreams[0].SamplesForwarded < want; {
		if time.Now().After(deadline) {
			b.Fatalf("upstream got %d of %d samples within a minute", r.Stats().Upstreams[0].SamplesForwarded-fwd0, b.N*samples)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*samples), "cpu-ns/sample")
}
