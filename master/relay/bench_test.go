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
	"sync/atomic"
	"testing"

	"github.com/agentproj/agent/master/relay/remotewrite"
)

// benchRequests builds compressed requests shaped like Prometheus sends
// them: one sample per time series entry, 9 labels per series.
func benchRequests(n, series, samples int) [][]byte {
	out := make([][]byte, n)
	next := 0
	for i := range out {
		var wr remotewrite.WriteRequest
		for range samples {
			s := next % series
			next++
			ls := []remotewrite.Label{{Name: "__name__", Value: fmt.Sprintf("bench_metric_%d", s%50)}}
			for l := 1; l < 9; l++ {
				ls = append(ls, remotewrite.Label{Name: fmt.Sprintf("label_%02d", l), Value: fmt.Sprintf("value-%d-%06d", l, s)})
			}
			wr.Timeseries = append(wr.Timeseries, remotewrite.TimeSeries{Labels: ls, Samples: []remotewrite.Sample{{Value: float64(next), Timestamp: int64(next)}}})
		}
		out[i] = remotewrite.Encode(nil, wr.Append(nil))
	}
	return out
}

// BenchmarkRelayIngest measures durable ingest: requests through ServeHTTP
// (decode, validate, external labels, shard, compress, group-committed
// fdatasync) while the forwarders drain the queue to an upstream that
// answers 204 without decoding.
func BenchmarkRelayIngest(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	cfg := testConfig(b.TempDir(), up.URL)
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
	reqs := benchRequests(16, 1000, samples)
	var next atomic.Int64
	b.SetParallelism(16) // requests in flight, as Prometheus shards send them
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := reqs[next.Add(1)%int64(len(reqs))]
			if rec := post(r, bytes.Clone(body), nil); rec.Code != http.StatusNoContent {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*samples)/b.Elapsed().Seconds(), "samples/s")
}
