package remotewrite

import (
	"fmt"
	"testing"
)

// BenchmarkRewrite measures validation and rewriting of a request shaped
// like Prometheus sends (2000 entries of 1000 series with 9 labels), with
// the label cache warm, as in steady state.
func BenchmarkRewrite(b *testing.B) {
	var wr WriteRequest
	for i := range 2000 {
		s := i % 1000
		ls := []Label{{"__name__", fmt.Sprintf("bench_metric_%d", s%50)}}
		for l := 1; l < 9; l++ {
			ls = append(ls, Label{fmt.Sprintf("label_%02d", l), fmt.Sprintf("value-%d-%06d", l, s)})
		}
		wr.Timeseries = append(wr.Timeseries, TimeSeries{Labels: ls, Samples: []Sample{{Value: float64(i), Timestamp: int64(i)}}})
	}
	src := wr.Append(nil)
	rw, _ := NewRewriter(map[string]string{"cluster": "bench"}, 4, NamesUTF8)
	out := make([]Shard, 4)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		for i := range out {
			out[i].Buf, out[i].Samples = out[i].Buf[:0], 0
		}
		if _, err := rw.Rewrite(src, out); err != nil {
			b.Fatal(err)
		}
	}
}
