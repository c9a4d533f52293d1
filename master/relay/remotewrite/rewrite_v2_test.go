package remotewrite

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// fullRequestV2 holds every kind of field 2.0 has: UTF-8 names, start
// timestamps, integer, float and custom-bucket histograms, exemplars and
// metadata, and a stale marker.
func fullRequestV2() *RequestV2 {
	return &RequestV2{Timeseries: []TimeSeriesV2{
		{
			Labels:   []Label{{"__name__", "http.server.request.duration"}, {"http.route", "/api/ü"}, {"job", "api"}},
			Samples:  []Sample{{Value: 0.5, Timestamp: 1000, StartTimestamp: 500}, {Value: math.Float64frombits(0x7ff0000000000002), Timestamp: 2000}},
			Metadata: MetadataV2{Type: 2, Help: "Duration of HTTP requests.", Unit: "s"},
			Exemplars: []Exemplar{{
				Labels: []Label{{"span_id", "00f067aa0ba902b7"}, {"trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"}}, Value: 0.42, Timestamp: 1000,
			}},
		},
		{
			Labels: []Label{{"__name__", "rpc_seconds"}, {"job", "api"}},
			Histograms: []Histogram{{
				CountInt: 6, ZeroCountInt: 1, Sum: 3.5, Schema: 3, ZeroThreshold: 1e-128,
				NegativeSpans: []BucketSpan{{Offset: -2, Length: 1}}, NegativeDeltas: []int64{1},
				PositiveSpans: []BucketSpan{{Offset: 0, Length: 2}, {Offset: 3, Length: 1}}, PositiveDeltas: []int64{2, -1, 1},
				ResetHint: 2, Timestamp: 2000, StartTimestamp: 1500,
			}, {
				Float: true, CountFloat: 4.5, ZeroCountFloat: 0.5, Sum: -1, Schema: 0,
				PositiveSpans: []BucketSpan{{Offset: 1, Length: 2}}, PositiveCounts: []float64{1.5, 2.5},
				ResetHint: 3, Timestamp: 3000,
			}},
			Metadata: MetadataV2{Type: 3, Help: "RPC latency."},
		},
		{
			Labels: []Label{{"__name__", "nhcb_seconds"}, {"cluster", "own"}, {"job", "api"}},
			Histograms: []Histogram{{
				CountInt: 5, Sum: 2, Schema: -53,
				PositiveSpans: []BucketSpan{{Offset: 0, Length: 3}}, PositiveDeltas: []int64{1, 1, 0},
				CustomValues: []float64{0.1, 0.5, 1}, Timestamp: 4000,
			}},
		},
		{
			Labels:  []Label{{"__name__", "plain_total"}, {"instance", "a:9100"}, {"long", strings.Repeat("v", 200)}}, // a symbol of more than 127 bytes
			Samples: []Sample{{Value: 42, Timestamp: 5000}},
		},
	}}
}

// withExternal is what the relay must forward for req: external labels
// merged (the series' own wins), empty values left out.
func withExternal(req *RequestV2, ext map[string]string) *RequestV2 {
	out := &RequestV2{}
	for _, ts := range req.Timeseries {
		var ls []Label
		for _, l := range ts.Labels {
			if l.Value != "" {
				ls = append(ls, l)
			}
		}
		for k, v := range ext {
			if !slices.ContainsFunc(ts.Labels, func(l Label) bool { return l.Name == k }) {
				ls = append(ls, Label{k, v})
			}
		}
		slices.SortFunc(ls, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
		ts.Labels = ls
		out.Timeseries = append(out.Timeseries, ts)
	}
	return out
}

func key(ls []Label) string { return fmt.Sprint(ls) }

// sameSeriesV2 compares two series bit for bit (NaN payloads included),
// by their encoding.
func sameSeriesV2(a, b TimeSeriesV2) bool {
	ea := (&RequestV2{Timeseries: []TimeSeriesV2{a}}).Append(nil)
	eb := (&RequestV2{Timeseries: []TimeSeriesV2{b}}).Append(nil)
	return string(ea) == string(eb)
}

// shardsV2 decodes every shard a rewrite filled, checking each against the
// oracle, and returns the series by label set.
func shardsV2(t *testing.T, out []Shard) map[string]TimeSeriesV2 {
	t.Helper()
	got := map[string]TimeSeriesV2{}
	for i, s := range out {
		if len(s.Buf) == 0 {
			continue
		}
		if err := oracleCheckV2(s.Buf); err != nil {
			t.Fatalf("shard %d: a receiver refuses it: %v", i, err)
		}
		req, err := UnmarshalV2(s.Buf)
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
		samples := 0
		for _, ts := range req.Timeseries {
			got[key(ts.Labels)] = ts
			samples += len(ts.Samples) + len(ts.Histograms)
		}
		if samples != s.Samples {
			t.Fatalf("shard %d: says %d samples, holds %d", i, s.Samples, samples)
		}
	}
	return got
}

func TestRewriteV2KeepsEveryFieldAndMergesExternalLabels(t *testing.T) {
	ext := map[string]string{"cluster": "c1", "a_first": "x", "z_long": strings.Repeat("e", 150)}
	rw, err := NewRewriter(ext, 3, NamesUTF8)
	if err != nil {
		t.Fatal(err)
	}
	in := fullRequestV2()
	src := in.Append(nil)
	if err := oracleCheckV2(src); err != nil {
		t.Fatal(err)
	}
	out := make([]Shard, 3)
	for range 2 { // shards are reused from one request to the next
		for i := range out {
			out[i].Reset()
		}
		c, err := rw.RewriteV2(src, out)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Counts{Series: 4, Samples: 3, Histograms: 3, Exemplars: 1, Metadata: 2}); c != want {
			t.Fatalf("counts %+v, want %+v", c, want)
		}
		got := shardsV2(t, out)
		want := withExternal(in, ext)
		if len(got) != len(want.Timeseries) {
			t.Fatalf("%d series forwarded, want %d", len(got), len(want.Timeseries))
		}
		for _, ts := range want.Timeseries {
			if g, ok := got[key(ts.Labels)]; !ok || !sameSeriesV2(g, ts) {
				t.Fatalf("series %v:\n got %+v\nwant %+v", ts.Labels, g, ts)
			}
		}
	}
}

func TestRewriteV2EmptyValuesLeftOut(t *testing.T) {
	rw, _ := NewRewriter(map[string]string{"cluster": "c1"}, 1, NamesUTF8)
	in := &RequestV2{Timeseries: []TimeSeriesV2{{
		Labels:  []Label{{"__name__", "m"}, {"cluster", ""}, {"empty", ""}, {"job", "j"}},
		Samples: []Sample{{Value: 1, Timestamp: 1}},
	}}}
	out := make([]Shard, 1)
	if _, err := rw.RewriteV2(in.Append(nil), out); err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalV2(out[0].Buf)
	if err != nil {
		t.Fatal(err)
	}
	// The own (empty) cluster label wins over the external one, as in 1.0,
	// and is absent like every empty label.
	if want := []Label{{"__name__", "m"}, {"job", "j"}}; !reflect.DeepEqual(got.Timeseries[0].Labels, want) {
		t.Fatalf("labels %v, want %v", got.Timeseries[0].Labels, want)
	}
}

// TestRewriteV2ShardsLikeV1: a series lands in the same shard whether it
// came as 1.0 or 2.0, so its samples stay in order when a sender switches.
func TestRewriteV2ShardsLikeV1(t *testing.T) {
	rw, _ := NewRewriter(map[string]string{"cluster": "default"}, 4, NamesUTF8)
	for i := range 100 {
		ls := []Label{{"__name__", fmt.Sprintf("m_%d", i)}, {"job", "j"}}
		v1 := (&WriteRequest{Timeseries: []TimeSeries{{Labels: ls, Samples: []Sample{{Value: 1, Timestamp: 1}}}}}).Append(nil)
		v2 := (&RequestV2{Timeseries: []TimeSeriesV2{{Labels: ls, Samples: []Sample{{Value: 1, Timestamp: 1}}}}}).Append(nil)
		want := shardOf(t, rw, v1, "1.0")
		out := make([]Shard, 4)
		if _, err := rw.RewriteV2(v2, out); err != nil {
			t.Fatal(err)
		}
		if len(out[want].Buf) == 0 {
			t.Fatalf("series %v: 1.0 in shard %d, 2.0 elsewhere", ls, want)
		}
	}
}

func TestRewriteV2Rejects(t *testing.T) {
	sym := func(ss ...string) []byte {
		var b []byte
		for _, s := range ss {
			b = append(b, fBytes(v2Symbols, []byte(s))...)
		}
		return b
	}
	refs := func(rs ...uint64) []byte {
		var p []byte
		for _, r := range rs {
			p = protowire.AppendVarint(p, r)
		}
		return fBytes(v2tsLabelsRefs, p)
	}
	okSample := fBytes(v2tsSamples, fFixed64(sampleValue, math.Float64bits(1)), fVarint(sampleTimestamp, 1))
	table := sym("", "__name__", "m", "job", "j")
	ts := func(fields ...[]byte) []byte { return cat(table, fBytes(v2Timeseries, fields...)) }
	for name, tc := range map[string]struct {
		src    []byte
		want   string
		legacy bool
	}{
		"1.0 body":            {src: (&WriteRequest{Timeseries: []TimeSeries{{Labels: []Label{{"a", "b"}}}}}).Append(nil), want: "request field 1 is reserved in io.prometheus.write.v2.Request: is this a remote-write 1.0 body?"},
		"garbage":             {src: []byte{0xff, 0xff}, want: "bad protobuf"},
		"symbols as varint":   {src: fVarint(v2Symbols, 1), want: "request field 4 has wire type varint, want bytes"},
		"symbol not UTF-8":    {src: cat(sym("", "ok", "\xfe")), want: "symbol 2: not UTF-8"},
		"ref outside table":   {src: ts(refs(1, 9), okSample), want: "series 0: label 0: reference 9 outside the symbol table (5 symbols)"},
		"odd refs":            {src: ts(refs(1, 2, 3), okSample), want: "series 0: labels_refs: odd number of references (3)"},
		"no labels":           {src: ts(okSample), want: "series 0: no labels"},
		"unsorted":            {src: ts(refs(3, 4, 1, 2), okSample), want: `series 0: labels not sorted or repeated at "__name__"`},
		"repeated":            {src: ts(refs(1, 2, 1, 4), okSample), want: "not sorted or repeated"},
		"empty name":          {src: ts(refs(0, 2), okSample), want: "series 0: empty label name"},
		"name not legacy":     {src: cat(sym("", "a.b", "v"), fBytes(v2Timeseries, refs(1, 2), okSample)), want: `invalid label name "a.b"`, legacy: true},
		"metric not legacy":   {src: cat(sym("", "__name__", "a.b"), fBytes(v2Timeseries, refs(1, 2), okSample)), want: `invalid metric name "a.b"`, legacy: true},
		"refs as fixed64":     {src: ts(fFixed64(v2tsLabelsRefs, 1)), want: "field 1 has wire type fixed64, want bytes"},
		"sample as varint":    {src: ts(refs(1, 2), fVarint(v2tsSamples, 1)), want: "series 0: field 2 has wire type varint, want bytes"},
		"sample value varint": {src: ts(refs(1, 2), fBytes(v2tsSamples, fVarint(sampleValue, 1))), want: "series 0: sample 0: bad protobuf: field value (1) has wire type varint, want fixed64"},
		"start ts fixed64":    {src: ts(refs(1, 2), fBytes(v2tsSamples, fFixed64(v2sampleStart, 1))), want: "field start_timestamp (3) has wire type fixed64, want varint"},
		"histogram spans":     {src: ts(refs(1, 2), fBytes(v2tsHistograms, fVarint(hCountInt, 2), fBytes(hPosSpans, fVarint(spanLength, 2)))), want: "series 0: histogram 0: positive spans need 2 buckets, have 0 bucket deltas"},
		"histogram start ts":  {src: ts(refs(1, 2), fBytes(v2tsHistograms, fFixed64(v2hStart, 2))), want: "field start_timestamp (17) has wire type fixed64, want varint"},
		"exemplar ref":        {src: ts(refs(1, 2), okSample, fBytes(v2tsExemplars, refs(3, 40))), want: "series 0: exemplar 0: reference 40 outside the symbol table"},
		"exemplar odd refs":   {src: ts(refs(1, 2), okSample, fBytes(v2tsExemplars, refs(3))), want: "series 0: exemplar 0: labels_refs: odd number of references (1)"},
		"metadata help_ref":   {src: ts(refs(1, 2), okSample, fBytes(v2tsMetadata, fVarint(v2mdHelpRef, 6))), want: "series 0: metadata: reference 6 outside the symbol table"},
		"metadata type bytes": {src: ts(refs(1, 2), okSample, fBytes(v2tsMetadata, fBytes(v2mdType, nil))), want: "series 0: metadata: bad protobuf: field type (1) has wire type bytes, want varint"},
		"label value utf8":    {src: cat(sym("", "a", "\xff"), fBytes(v2Timeseries, refs(1, 2), okSample)), want: "symbol 2: not UTF-8"},
	} {
		t.Run(name, func(t *testing.T) {
			names := NamesUTF8
			if tc.legacy {
				names = NamesLegacy
			}
			rw, _ := NewRewriter(map[string]string{"cluster": "x"}, 2, names)
			_, err := rw.RewriteV2(tc.src, make([]Shard, 2))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestRewriteV2AcceptsWhatPrometheusSends: unpacked references, metadata
// fields in any order, fields repeated, unknown fields kept; exemplar-only
// series (Prometheus 3 sends them with send_exemplars).
func TestRewriteV2AcceptsUnusualEncodings(t *testing.T) {
	syms := cat(fBytes(v2Symbols, nil), fBytes(v2Symbols, []byte("__name__")), fBytes(v2Symbols, []byte("m")), fBytes(v2Symbols, []byte("tid")))
	series := fBytes(v2Timeseries,
		fVarint(v2tsLabelsRefs, 1), fVarint(v2tsLabelsRefs, 2), // unpacked
		fBytes(v2tsExemplars, fVarint(v2exTimestamp, 5), fBytes(v2exLabelsRefs, []byte{3, 2}), fFixed64(v2exValue, 7)),
		fVarint(99, 1), // unknown, kept
		fBytes(v2tsMetadata, fVarint(v2mdUnitRef, 0), fVarint(v2mdType, 1)),
	)
	// Symbols after the series they are used by.
	src := cat(series, syms)
	rw, _ := NewRewriter(nil, 1, NamesUTF8)
	out := make([]Shard, 1)
	c, err := rw.RewriteV2(src, out)
	if err != nil {
		t.Fatal(err)
	}
	if c.Exemplars != 1 || c.Samples != 0 {
		t.Fatalf("counts %+v", c)
	}
	if err := oracleCheckV2(out[0].Buf); err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalV2(out[0].Buf)
	if err != nil {
		t.Fatal(err)
	}
	want := TimeSeriesV2{Labels: []Label{{"__name__", "m"}}, Exemplars: []Exemplar{{Labels: []Label{{"tid", "m"}}, Value: math.Float64frombits(7), Timestamp: 5}}, Metadata: MetadataV2{Type: 1}}
	if !reflect.DeepEqual(got.Timeseries[0], want) {
		t.Fatalf("got %+v\nwant %+v", got.Timeseries[0], want)
	}
	if !strings.Contains(string(out[0].Buf), string(fVarint(99, 1))) {
		t.Fatal("unknown series field not kept")
	}
}

// strHashASCII must hash exactly as strHash (shards depend on it and must
// not change between versions or releases) and see any non-ASCII byte.
func TestStrHashASCII(t *testing.T) {
	for _, s := range []string{"", "a", "label_01", "value-1-000001", "0123456789abcdef", "service.name", "é", "abcdefgé", "abcdefghé", strings.Repeat("x", 100) + "\xff"} {
		h, ascii := strHashASCII([]byte(s))
		if want := strHash([]byte(s)); h != want {
			t.Errorf("strHashASCII(%q) = %x, strHash %x", s, h, want)
		}
		wantASCII := true
		for _, c := range []byte(s) {
			if c >= 0x80 {
				wantASCII = false
			}
		}
		if ascii != wantASCII {
			t.Errorf("strHashASCII(%q) ascii = %v, want %v", s, ascii, wantASCII)
		}
	}
}

// strHash picks the shard of a series in the queue: its values must not
// change between releases, or a series' new samples could go to another
// shard than those still queued from before an upgrade, out of order.
func TestStrHashPinned(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want uint64
	}{
		{"", 0x0},
		{"a", 0x406df31001a8abe3},
		{"job", 0x129eb91a3c42378f},
		{"label_01", 0x4a14d79f8958e1b2},
		{"value-1-000001", 0x83e9c144eb286c1a},
		{"0123456789abcdef", 0xf04d193221b114f6},
		{"service.name", 0x4842c3751d239a78},
		{"é", 0xa8be8f8739159865},
	} {
		if got := strHash([]byte(tc.s)); got != tc.want {
			t.Errorf("strHash(%q) = %#x, want %#x", tc.s, got, tc.want)
		}
	}
}

// CheckV2 says a request may be queued as it came only when RewriteV2
// would forward its series unchanged.
func TestCheckV2(t *testing.T) {
	plain, _ := NewRewriter(nil, 1, NamesUTF8)
	sharded, _ := NewRewriter(nil, 2, NamesUTF8)
	labelled, _ := NewRewriter(map[string]string{"cluster": "c"}, 1, NamesUTF8)
	src := fullRequestV2().Append(nil)
	emptyValue := (&RequestV2{Timeseries: []TimeSeriesV2{{Labels: []Label{{"__name__", "up"}, {"gone", ""}}, Samples: []Sample{{Value: 1}}}}}).Append(nil)
	for _, tc := range []struct {
		name string
		rw   *Rewriter
		src  []byte
		same bool
	}{
		{"nothing to change", plain, src, true},
		{"two shards", sharded, src, false},
		{"external labels", labelled, src, false},
		{"unknown top-level field", plain, cat(src, fVarint(99, 1)), false},
		{"a label with an empty value", plain, emptyValue, false},
	} {
		c, same, err := tc.rw.CheckV2(tc.src)
		if err != nil || same != tc.same {
			t.Errorf("%s: same %v, err %v; want %v", tc.name, same, err, tc.same)
		}
		if want, _ := tc.rw.RewriteV2(tc.src, nil); c != want {
			t.Errorf("%s: counts %+v, RewriteV2 %+v", tc.name, c, want)
		}
	}
	if _, same, err := plain.CheckV2(cat(src, fVarint(1, 1))); err == nil || same {
		t.Errorf("a 1.0 field: same %v, err %v; want an error", same, err)
	}
}
