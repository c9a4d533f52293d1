package remotewrite

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's CPU time: on a shared machine the benchmarks'
// wall time says more about the neighbours than about the code.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perSample reports CPU ns per sample of a loop that started at cpu0.
func perSample(b *testing.B, cpu0 time.Duration, samples int) {
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*samples), "cpu-ns/sample")
}

// benchSeries is a request shaped like Prometheus sends: 2000 entries of
// 1000 series with 9 labels, one sample each; as 2.0, with metadata per
// series as Prometheus 3 sends it.
func benchSeries() (*WriteRequest, *RequestV2) {
	var wr WriteRequest
	var wr2 RequestV2
	for i := range 2000 {
		s := i % 1000
		name := fmt.Sprintf("bench_metric_%d", s%50)
		ls := []Label{{"__name__", name}}
		for l := 1; l < 9; l++ {
			ls = append(ls, Label{fmt.Sprintf("label_%02d", l), fmt.Sprintf("value-%d-%06d", l, s)})
		}
		smp := []Sample{{Value: float64(i), Timestamp: int64(i)}}
		wr.Timeseries = append(wr.Timeseries, TimeSeries{Labels: ls, Samples: smp})
		wr2.Timeseries = append(wr2.Timeseries, TimeSeriesV2{Labels: ls, Samples: smp, Metadata: MetadataV2{Type: 2, Help: "A gauge, " + name + "."}})
	}
	return &wr, &wr2
}

// BenchmarkRewrite measures validation and rewriting of a 1.0 request, with
// the label cache warm, as in steady state.
func BenchmarkRewrite(b *testing.B) {
	wr, _ := benchSeries()
	benchRewrite(b, wr.Append(nil), (*Rewriter).Rewrite)
}

// BenchmarkRewriteV2 is BenchmarkRewrite for the same data as 2.0.
func BenchmarkRewriteV2(b *testing.B) {
	_, wr2 := benchSeries()
	benchRewrite(b, wr2.Append(nil), (*Rewriter).RewriteV2)
}

// benchRewrite rewrites src into four shards per op with one Rewriter.
func benchRewrite(b *testing.B, src []byte, rewrite func(*Rewriter, []byte, []Shard) (Counts, error)) {
	rw, _ := NewRewriter(map[string]string{"cluster": "bench"}, 4, NamesUTF8)
	out := make([]Shard, 4)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		for i := range out {
			out[i].Reset()
		}
		if _, err := rewrite(rw, src, out); err != nil {
			b.Fatal(err)
		}
	}
	perSample(b, cpu0, 2000)
}

// BenchmarkConvert measures the forward path's conversions of one shard's
// request (a quarter of the above).
func BenchmarkConvert(b *testing.B) {
	wr, wr2 := benchSeries()
	wr.Timeseries, wr2.Timeseries = wr.Timeseries[:500], wr2.Timeseries[:500]
	for _, tc := range []struct {
		name string
		in   Payload
		to   Version
	}{
		{"2.0 to 1.0", Payload{V2, wr2.Append(nil)}, V1},
		{"2.0 to 2.0", Payload{V2, wr2.Append(nil)}, V2},
		{"1.0 to 2.0", Payload{V1, wr.Append(nil)}, V2},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var c Converter
			var out []byte
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				out, _, _ = c.Convert(out, tc.to, []Payload{tc.in})
			}
			perSample(b, cpu0, 500)
		})
	}
}
