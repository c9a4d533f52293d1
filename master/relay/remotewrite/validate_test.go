package remotewrite

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// Raw protobuf builders, for requests no encoder would write.
func fBytes(num protowire.Number, parts ...[]byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, cat(parts...))
}

func fVarint(num protowire.Number, x uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), x)
}

func fFixed64(num protowire.Number, x uint64) []byte {
	return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), x)
}

func fFixed32(num protowire.Number, x uint32) []byte {
	return protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), x)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func rawLabel(name, value string) []byte {
	return fBytes(tsLabels, fBytes(labelName, []byte(name)), fBytes(labelValue, []byte(value)))
}

func rawSample(v float64, ts int64) []byte {
	return fBytes(tsSamples, fFixed64(sampleValue, math.Float64bits(v)), fVarint(sampleTimestamp, uint64(ts)))
}

// series wraps TimeSeries fields into a WriteRequest with one series named
// "m".
func series(fields ...[]byte) []byte {
	return fBytes(fieldTimeseries, append([][]byte{rawLabel("__name__", "m")}, fields...)...)
}

func fullRequest() *WriteRequest {
	return &WriteRequest{
		Timeseries: []TimeSeries{{
			Labels:  []Label{{"__name__", "rpc_seconds"}, {"job", "api"}},
			Samples: []Sample{{Value: 0.5, Timestamp: 1000}},
			Exemplars: []Exemplar{{
				Labels: []Label{{"trace_id", "abc123"}}, Value: 0.42, Timestamp: 1000,
			}},
			Histograms: []Histogram{{
				CountInt: 6, ZeroCountInt: 1, Sum: 3.5, Schema: 3, ZeroThreshold: 1e-128,
				NegativeSpans: []BucketSpan{{Offset: -2, Length: 1}}, NegativeDeltas: []int64{1},
				PositiveSpans: []BucketSpan{{Offset: 0, Length: 2}, {Offset: 3, Length: 1}}, PositiveDeltas: []int64{2, -1, 1},
				ResetHint: 2, Timestamp: 2000,
			}, {
				Float: true, CountFloat: 4.5, ZeroCountFloat: 0.5, Sum: -1, Schema: -53,
				PositiveSpans: []BucketSpan{{Offset: 0, Length: 2}}, PositiveCounts: []float64{1.5, 2.5},
				CustomValues: []float64{0.1, 1}, Timestamp: 3000,
			}},
		}},
		Metadata: []Metadata{{Type: 4, Family: "rpc_seconds", Help: "RPC latency, µs precision", Unit: "seconds"}},
	}
}

// TestRewriteKeepsEveryField checks field by field that what the relay
// forwards is what it got, external label aside.
func TestRewriteKeepsEveryField(t *testing.T) {
	rw, _ := NewRewriter(map[string]string{"cluster": "c1"}, 2, NamesUTF8)
	out := make([]Shard, 2)
	c, err := rw.Rewrite(fullRequest().Append(nil), out)
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counts{Series: 1, Samples: 1, Histograms: 2, Exemplars: 1, Metadata: 1}) {
		t.Fatalf("counts %+v", c)
	}
	got, err := Unmarshal(append(append([]byte(nil), out[0].Buf...), out[1].Buf...))
	if err != nil {
		t.Fatal(err)
	}
	want := fullRequest()
	want.Timeseries[0].Labels = []Label{{"__name__", "rpc_seconds"}, {"cluster", "c1"}, {"job", "api"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("forwarded:\n got %+v\nwant %+v", got, want)
	}
}

func TestRewriteRejectsMalformedNestedFields(t *testing.T) {
	histogram := func(fields ...[]byte) []byte { return series(fBytes(tsHistograms, fields...)) }
	span := func(off int32, length uint32) []byte {
		return cat(fVarint(spanOffset, protowire.EncodeZigZag(int64(off))), fVarint(spanLength, uint64(length)))
	}
	exemplar := func(fields ...[]byte) []byte { return series(rawSample(1, 1), fBytes(tsExemplars, fields...)) }
	metadata := func(fields ...[]byte) []byte { return fBytes(fieldMetadata, fields...) }
	for name, tc := range map[string]struct {
		src  []byte
		want string
	}{
		"histogram sum as varint":      {histogram(fVarint(hSum, 3)), "histogram 0: bad protobuf: field sum (3) has wire type varint, want fixed64"},
		"histogram count_int fixed64":  {histogram(fFixed64(hCountInt, 3)), "field count_int (1) has wire type fixed64, want varint"},
		"histogram schema as bytes":    {histogram(fBytes(hSchema, []byte{1})), "field schema (4) has wire type bytes, want varint"},
		"histogram timestamp fixed32":  {histogram(fFixed32(hTimestamp, 1)), "field timestamp (15) has wire type fixed32"},
		"histogram deltas fixed64":     {histogram(fFixed64(hPosDeltas, 1)), "positive_deltas (12) has wire type fixed64, want varint or packed"},
		"packed deltas bad varint":     {histogram(fBytes(hNegDeltas, []byte{0x80})), "packed field negative_deltas: bad varint"},
		"packed counts 12 bytes":       {histogram(fFixed64(hCountFloat, 0), fBytes(hPosCounts, make([]byte, 12))), "packed field positive_counts: 12 bytes"},
		"span offset as bytes":         {histogram(fBytes(hPosSpans, fBytes(spanOffset, []byte{1}))), "positive_spans 0: bad protobuf: field offset (1) has wire type bytes"},
		"second span length fixed64":   {histogram(fBytes(hPosSpans, span(0, 1)), fBytes(hPosSpans, fFixed64(spanLength, 1))), "positive_spans 1: bad protobuf: field length (2)"},
		"spans need more buckets":      {histogram(fBytes(hPosSpans, span(0, 3)), fBytes(hPosDeltas, []byte{2, 1})), "positive spans need 3 buckets, have 2 bucket deltas"},
		"float buckets missing":        {histogram(fFixed64(hCountFloat, 0), fBytes(hNegSpans, span(1, 1)), fBytes(hNegDeltas, []byte{2})), "negative spans need 1 buckets, have 0 bucket counts"},
		"negative later span offset":   {histogram(fBytes(hPosSpans, span(-3, 1)), fBytes(hPosSpans, span(-1, 1)), fBytes(hPosDeltas, []byte{2, 0})), "positive span 2 has negative offset -1"},
		"exemplar value as varint":     {exemplar(fVarint(2, 5)), "series 0: exemplar 0: bad protobuf: field value (2) has wire type varint, want fixed64"},
		"exemplar timestamp fixed64":   {exemplar(fFixed64(3, 5)), "field timestamp (3) has wire type fixed64, want varint"},
		"exemplar label value varint":  {exemplar(fBytes(1, fBytes(labelName, []byte("trace_id")), fVarint(labelValue, 7))), "exemplar 0: labels 0: bad protobuf: field value (2) has wire type varint"},
		"exemplar label not UTF-8":     {exemplar(fBytes(1, fBytes(labelName, []byte("trace_id")), fBytes(labelValue, []byte{0xff}))), "labels 0: value: not UTF-8"},
		"metadata type as bytes":       {metadata(fBytes(mdType, []byte("counter"))), "metadata 0: bad protobuf: field type (1) has wire type bytes, want varint"},
		"metadata family as fixed64":   {metadata(fFixed64(mdFamily, 1)), "field metric_family_name (2) has wire type fixed64, want bytes"},
		"metadata help not UTF-8":      {metadata(fBytes(mdHelp, []byte("bad \xff"))), "metadata 0: help: not UTF-8"},
		"metadata unit as varint":      {cat(metadata(fBytes(mdFamily, []byte("up"))), metadata(fVarint(mdUnit, 1))), "metadata 1: bad protobuf: field unit (5)"},
		"series label value varint":    {fBytes(fieldTimeseries, fBytes(tsLabels, fBytes(labelName, []byte("a")), fVarint(labelValue, 1))), "label field 2 has wire type varint, want bytes"},
		"series labels as varint":      {series(fVarint(tsLabels, 1)), "series 0: field 1 has wire type varint, want bytes"},
		"series samples as fixed64":    {series(fFixed64(tsSamples, 1)), "series 0: field 2 has wire type fixed64, want bytes"},
		"series histograms as fixed32": {series(fFixed32(tsHistograms, 1)), "series 0: field 4 has wire type fixed32, want bytes"},
		"timeseries as varint":         {fVarint(fieldTimeseries, 1), "write request field 1 has wire type varint, want bytes"},
		"metadata as fixed32":          {fFixed32(fieldMetadata, 1), "write request field 3 has wire type fixed32, want bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			rw, _ := NewRewriter(map[string]string{"cluster": "x"}, 2, NamesUTF8)
			_, err := rw.Rewrite(tc.src, make([]Shard, 2))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRewriteAcceptsUnknownAndUnpackedFields(t *testing.T) {
	// Parsers skip unknown field numbers, and take repeated scalars packed
	// or one per field: all of this is valid.
	src := cat(
		series(rawSample(1, 1), fVarint(9, 1), fBytes(tsHistograms,
			fVarint(hCountInt, 2),
			fBytes(hPosSpans, fVarint(spanLength, 2)),
			fVarint(hPosDeltas, 2), fVarint(hPosDeltas, 0),
			fFixed64(hNegCounts, 0), // ignored by an integer histogram
			fFixed32(99, 7),
		)),
		fBytes(fieldMetadata, fVarint(mdType, 1), fBytes(mdFamily, []byte("m")), fVarint(77, 1)),
		fVarint(9, 1),
	)
	rw, _ := NewRewriter(nil, 2, NamesUTF8)
	c, err := rw.Rewrite(src, make([]Shard, 2))
	if err != nil {
		t.Fatal(err)
	}
	if c.Histograms != 1 || c.Samples != 1 || c.Metadata != 1 {
		t.Fatalf("counts %+v", c)
	}
}
