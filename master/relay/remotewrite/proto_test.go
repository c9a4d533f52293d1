package remotewrite

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func sampleRequest() *WriteRequest {
	return &WriteRequest{
		Timeseries: []TimeSeries{
			{Labels: []Label{{"__name__", "up"}, {"instance", "a:9100"}, {"job", "node"}}, Samples: []Sample{{Value: 1, Timestamp: 1000}, {Value: 0, Timestamp: 2000}}},
			{Labels: []Label{{"__name__", "up"}, {"cluster", "own"}, {"job", "node"}}, Samples: []Sample{{Value: 1.5, Timestamp: 3000}}},
			{Labels: []Label{{"zzz", "last"}}, Samples: []Sample{{Value: -2, Timestamp: 4000}}},
		},
		Metadata: []Metadata{{Type: 1, Family: "up", Help: "scrape ok", Unit: ""}},
	}
}

func TestRewriteMergesExternalLabels(t *testing.T) {
	rw, err := NewRewriter(map[string]string{"cluster": "c1", "a": "first"}, 1, NamesUTF8)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]Shard, 1)
	c, err := rw.Rewrite(sampleRequest().Append(nil), out)
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counts{Series: 3, Samples: 4, Metadata: 1}) {
		t.Fatalf("counts = %+v", c)
	}
	if out[0].Samples != 4 {
		t.Fatalf("shard samples = %d, want 4", out[0].Samples)
	}
	got, err := Unmarshal(out[0].Buf)
	if err != nil {
		t.Fatal(err)
	}
	want := sampleRequest()
	want.Timeseries[0].Labels = []Label{{"__name__", "up"}, {"a", "first"}, {"cluster", "c1"}, {"instance", "a:9100"}, {"job", "node"}}
	// The series' own cluster label wins over the external one.
	want.Timeseries[1].Labels = []Label{{"__name__", "up"}, {"a", "first"}, {"cluster", "own"}, {"job", "node"}}
	want.Timeseries[2].Labels = []Label{{"a", "first"}, {"cluster", "c1"}, {"zzz", "last"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rewritten request:\n got %+v\nwant %+v", got, want)
	}
}

func TestRewriteShardsBySeries(t *testing.T) {
	rw, err := NewRewriter(nil, 4, NamesUTF8)
	if err != nil {
		t.Fatal(err)
	}
	var req WriteRequest
	for i := range 200 {
		req.Timeseries = append(req.Timeseries, TimeSeries{
			Labels:  []Label{{"__name__", "m"}, {"i", strings.Repeat("x", i%7) + string(rune('a'+i%26))}},
			Samples: []Sample{{Value: float64(i), Timestamp: int64(i)}},
		})
	}
	src := req.Append(nil)
	shardOf := map[string]int{}
	for range 2 { // the same series must land in the same shard every time
		out := make([]Shard, 4)
		if _, err := rw.Rewrite(src, out); err != nil {
			t.Fatal(err)
		}
		total, used := 0, 0
		for s, sh := range out {
			got, err := Unmarshal(sh.Buf)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Timeseries) > 0 {
				used++
			}
			total += sh.Samples
			for _, ts := range got.Timeseries {
				key := ts.Labels[1].Value
				if prev, ok := shardOf[key]; ok && prev != s {
					t.Fatalf("series %s in shards %d and %d", key, prev, s)
				}
				shardOf[key] = s
			}
		}
		if total != 200 || used < 2 {
			t.Fatalf("samples %d over %d shards, want 200 over >= 2", total, used)
		}
	}
}

func TestRewriteIdentityKeepsBytes(t *testing.T) {
	rw, _ := NewRewriter(nil, 1, NamesUTF8)
	src := sampleRequest().Append(nil)
	out := make([]Shard, 1)
	if _, err := rw.Rewrite(src, out); err != nil {
		t.Fatal(err)
	}
	if !rw.Identity() || !bytes.Equal(out[0].Buf, src) {
		t.Fatal("identity rewrite changed the request")
	}
}

func TestRewriteRejects(t *testing.T) {
	series := func(labels ...Label) []byte {
		return (&WriteRequest{Timeseries: []TimeSeries{{Labels: labels, Samples: []Sample{{Value: 1, Timestamp: 1}}}}}).Append(nil)
	}
	badSample := protowire.AppendTag(nil, tsSamples, protowire.BytesType)
	badSample = protowire.AppendBytes(badSample, protowire.AppendTag(nil, sampleValue, protowire.VarintType))
	for name, tc := range map[string]struct {
		src    []byte
		want   string
		legacy bool
	}{
		"truncated":       {src: sampleRequest().Append(nil)[:20], want: "bad protobuf"},
		"garbage":         {src: []byte{0xff, 0xff, 0xff}, want: "bad protobuf"},
		"legacy bad name": {src: series(Label{"1abc", "v"}), want: `invalid label name "1abc" (relay.name_validation is legacy`, legacy: true},
		"legacy dash":     {src: series(Label{"a-b", "v"}), want: "invalid label name", legacy: true},
		"legacy metric":   {src: series(Label{"__name__", "http.server.duration"}), want: `invalid metric name "http.server.duration"`, legacy: true},
		"utf8 empty name": {src: series(Label{"", "v"}), want: "empty label name"},
		"utf8 name bytes": {src: series(Label{"a\xffb", "v"}), want: "not UTF-8"},
		"unsorted":        {src: series(Label{"b", "1"}, Label{"a", "2"}), want: "not sorted"},
		"repeated":        {src: series(Label{"a", "1"}, Label{"a", "2"}), want: "not sorted or repeated"},
		"no labels":       {src: series(), want: "no labels"},
		"bad utf8 value":  {src: series(Label{"a", "\xff"}), want: "not UTF-8"},
		"2.0 body as 1.0": {src: (&RequestV2{Timeseries: []TimeSeriesV2{{Labels: []Label{{"a", "b"}}}}}).Append(nil), want: "remote-write 2.0 field"},
		"bad sample": {src: protowire.AppendBytes(protowire.AppendTag(nil, fieldTimeseries, protowire.BytesType),
			append(append([]byte(nil), series(Label{"a", "b"})[2:]...), badSample...)), want: "wire type"},
	} {
		t.Run(name, func(t *testing.T) {
			names := NamesUTF8
			if tc.legacy {
				names = NamesLegacy
			}
			rw, _ := NewRewriter(map[string]string{"cluster": "x"}, 2, names)
			_, err := rw.Rewrite(tc.src, make([]Shard, 2))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestNewRewriterRejectsBadExternalLabel(t *testing.T) {
	if _, err := NewRewriter(map[string]string{"bad-name": "x"}, 1, NamesUTF8); err == nil {
		t.Fatal("want error for external label bad-name")
	}
}

func TestSnappyConcatAndLimits(t *testing.T) {
	a := sampleRequest().Append(nil)
	b := (&WriteRequest{Timeseries: []TimeSeries{{Labels: []Label{{"x", "y"}}, Samples: []Sample{{Value: 7, Timestamp: 7}}}}}).Append(nil)
	joined, err := Concat(nil, Encode(nil, a), Encode(nil, b), Encode(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := Decode(nil, joined, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dec, append(append([]byte(nil), a...), b...)) {
		t.Fatal("joined block does not decode to the concatenation")
	}
	got, err := Unmarshal(dec)
	if err != nil || len(got.Timeseries) != 4 {
		t.Fatalf("joined request: %d series, err %v", len(got.Timeseries), err)
	}
	if _, err := Decode(nil, joined, len(dec)-1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("decode over limit: err = %v, want ErrTooLarge", err)
	}
	if _, err := Decode(nil, []byte{0x05, 0xff}, 100); err == nil || !strings.Contains(err.Error(), "bad snappy") {
		t.Fatalf("decode garbage: err = %v", err)
	}
}

func TestRewriteCacheGivesSameResult(t *testing.T) {
	// "zz" sorts after every label of the request: it is appended last.
	cached, _ := NewRewriter(map[string]string{"cluster": "c", "a": "x", "zz": "end"}, 3, NamesUTF8)
	src := sampleRequest().Append(nil)
	first := make([]Shard, 3)
	if _, err := cached.Rewrite(src, first); err != nil {
		t.Fatal(err)
	}
	second := make([]Shard, 3)
	if _, err := cached.Rewrite(src, second); err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := range cached.cache.shards {
		n += len(cached.cache.shards[i].m)
	}
	if n != 3 {
		t.Fatalf("%d label sets cached, want 3", n)
	}
	for i := range first {
		if !bytes.Equal(first[i].Buf, second[i].Buf) || first[i].Samples != second[i].Samples {
			t.Fatalf("shard %d differs between a cold and a cached rewrite", i)
		}
	}
}

func TestRewriteCacheStillChecksLaterLabels(t *testing.T) {
	rw, _ := NewRewriter(nil, 1, NamesUTF8)
	good := (&WriteRequest{Timeseries: []TimeSeries{{Labels: []Label{{"a", "1"}}, Samples: []Sample{{Value: 1, Timestamp: 1}}}}}).Append(nil)
	if _, err := rw.Rewrite(good, make([]Shard, 1)); err != nil {
		t.Fatal(err)
	}
	// The same label run, then a sample, then an invalid label.
	body := append([]byte(nil), good[2:]...)
	bad := protowire.AppendTag(nil, labelName, protowire.BytesType)
	bad = protowire.AppendString(bad, "b\xff")
	body = protowire.AppendTag(body, tsLabels, protowire.BytesType)
	body = protowire.AppendBytes(body, bad)
	req := protowire.AppendTag(nil, fieldTimeseries, protowire.BytesType)
	req = protowire.AppendBytes(req, body)
	if _, err := rw.Rewrite(req, make([]Shard, 1)); err == nil || !strings.Contains(err.Error(), "label name \"b\\xff\" is not UTF-8") {
		t.Fatalf("err = %v, want label name not UTF-8", err)
	}
}

// TestRewriteShardsByFinalLabelSet: a series lands in one shard however it
// is encoded and whether or not it carries an external label itself, so
// its samples stay in order.
func TestRewriteShardsByFinalLabelSet(t *testing.T) {
	const shards = 4
	label := func(name, value string) []byte { return rawLabel(name, value) }
	for _, warm := range []bool{false, true} {
		rw, _ := NewRewriter(map[string]string{"cluster": "default"}, shards, NamesUTF8)
		for i := range 50 {
			name := fmt.Sprintf("metric_%d", i)
			variants := map[string][]byte{
				"plain":            cat(label("__name__", name), label("job", "j"), rawSample(1, 1)),
				"explicit cluster": cat(label("__name__", name), label("cluster", "default"), label("job", "j"), rawSample(1, 2)),
				"value before name": cat(fBytes(tsLabels, fBytes(labelValue, []byte(name)), fBytes(labelName, []byte("__name__"))),
					label("job", "j"), rawSample(1, 3)),
				"empty label":          cat(label("__name__", name), label("a", ""), label("job", "j"), rawSample(1, 4)),
				"labels around sample": cat(label("__name__", name), rawSample(1, 5), label("job", "j")),
				"unknown field in label": cat(label("__name__", name),
					fBytes(tsLabels, fBytes(labelName, []byte("job")), fVarint(7, 1), fBytes(labelValue, []byte("j"))), rawSample(1, 6)),
				"long length varint": cat(label("__name__", name),
					[]byte{tsLabels<<3 | 2, 0x88, 0x00}, fBytes(labelName, []byte("job")), fBytes(labelValue, []byte("j")), rawSample(1, 7)),
			}
			want := shardOf(t, rw, fBytes(fieldTimeseries, variants["plain"]), "plain")
			for v, body := range variants {
				src := fBytes(fieldTimeseries, body)
				if warm {
					shardOf(t, rw, src, v) // from the label cache the second time
				}
				if got := shardOf(t, rw, src, v); got != want {
					t.Fatalf("%s (%s, warm %v): shard %d, plain form in shard %d", name, v, warm, got, want)
				}
			}
		}
	}
}

func shardOf(t *testing.T, rw *Rewriter, src []byte, variant string) int {
	t.Helper()
	out := make([]Shard, rw.Shards())
	if _, err := rw.Rewrite(src, out); err != nil {
		t.Fatalf("%s: %v", variant, err)
	}
	for i, s := range out {
		if len(s.Buf) > 0 {
			return i
		}
	}
	t.Fatalf("%s: in no shard", variant)
	return -1
}
