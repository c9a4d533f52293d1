package remotewrite

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
)

// TestConvertV2ToV1 sends what a Prometheus 3 sends through the relay to
// a 1.0 upstream: every sample, histogram, exemplar and name arrives bit
// for bit; start timestamps cannot and are counted; metadata becomes one
// entry per family.
func TestConvertV2ToV1(t *testing.T) {
	in := fullRequestV2()
	var c Converter
	out, dropped, err := c.Convert(nil, V1, []Payload{{V2, in.Append(nil)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := oracleCheck(out); err != nil {
		t.Fatalf("a 1.0 receiver refuses it: %v", err)
	}
	rw, _ := NewRewriter(nil, 1, NamesUTF8)
	if _, err := rw.Rewrite(out, nil); err != nil {
		t.Fatalf("the relay itself refuses it: %v", err)
	}
	if dropped != (Dropped{StartTimestamps: 2}) {
		t.Fatalf("dropped %+v, want the 2 start timestamps", dropped)
	}
	got, err := Unmarshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Timeseries) != len(in.Timeseries) {
		t.Fatalf("%d series, want %d", len(got.Timeseries), len(in.Timeseries))
	}
	for i, want := range in.Timeseries {
		for j := range want.Samples {
			want.Samples[j].StartTimestamp = 0
		}
		for j := range want.Histograms {
			want.Histograms[j].StartTimestamp = 0
		}
		g := got.Timeseries[i]
		back := TimeSeriesV2{Labels: g.Labels, Samples: g.Samples, Histograms: g.Histograms, Exemplars: g.Exemplars, Metadata: want.Metadata}
		if !sameSeriesV2(back, want) {
			t.Fatalf("series %d:\n got %+v\nwant %+v", i, g, want)
		}
	}
	wantMD := []Metadata{
		{Type: 2, Family: "http.server.request.duration", Help: "Duration of HTTP requests.", Unit: "s"},
		{Type: 3, Family: "rpc_seconds", Help: "RPC latency."},
	}
	if !reflect.DeepEqual(got.Metadata, wantMD) {
		t.Fatalf("metadata %+v, want %+v", got.Metadata, wantMD)
	}
}

func TestConvertV1ToV2(t *testing.T) {
	in := fullRequest()
	var c Converter
	out, dropped, err := c.Convert(nil, V2, []Payload{{V1, in.Append(nil)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := oracleCheckV2(out); err != nil {
		t.Fatalf("a 2.0 receiver refuses it: %v", err)
	}
	if dropped != (Dropped{Metadata: 1}) {
		t.Fatalf("dropped %+v, want the one 1.0 metadata entry", dropped)
	}
	got, err := UnmarshalV2(out)
	if err != nil {
		t.Fatal(err)
	}
	want := in.Timeseries[0]
	if g := got.Timeseries[0]; !sameSeriesV2(g, TimeSeriesV2{Labels: want.Labels, Samples: want.Samples, Histograms: want.Histograms, Exemplars: want.Exemplars}) {
		t.Fatalf("got %+v\nwant %+v", g, want)
	}
}

// TestConvertJoinsV2 joins requests of one shard into one 2.0 request with
// one deduplicated symbol table, series in order.
func TestConvertJoinsV2(t *testing.T) {
	var payloads []Payload
	var want []TimeSeriesV2
	for i := range 3 {
		req := &RequestV2{}
		for s := range 4 {
			ts := TimeSeriesV2{
				Labels:   []Label{{"__name__", fmt.Sprintf("m_%d", s)}, {"job", "j"}},
				Samples:  []Sample{{Value: float64(i), Timestamp: int64(1000*i + s), StartTimestamp: 1}},
				Metadata: MetadataV2{Type: 2, Help: "help"},
			}
			req.Timeseries = append(req.Timeseries, ts)
			want = append(want, ts)
		}
		payloads = append(payloads, Payload{V2, req.Append(nil)})
	}
	var c Converter
	for range 2 { // reused
		out, dropped, err := c.Convert(nil, V2, payloads)
		if err != nil || dropped != (Dropped{}) {
			t.Fatal(err, dropped)
		}
		if err := oracleCheckV2(out); err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalV2(out)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Timeseries, want) {
			t.Fatalf("got %+v\nwant %+v", got.Timeseries, want)
		}
		if n := strings.Count(string(out), "\x22\x03m_1"); n != 1 {
			t.Fatalf("symbol m_1 appears %d times, want once", n)
		}
	}
}

func TestConvertEscapes(t *testing.T) {
	in := &RequestV2{Timeseries: []TimeSeriesV2{
		{Labels: []Label{{"__name__", "http.server.duration"}, {"http.route", "/a"}, {"job", "j"}}, Samples: []Sample{{Value: 1, Timestamp: 1}},
			Exemplars: []Exemplar{{Labels: []Label{{"trace.id", "t"}}, Value: 1, Timestamp: 1}}},
		{Labels: []Label{{"__name__", "up"}, {"a.b", "1"}, {"a_b", "2"}}, Samples: []Sample{{Value: 1, Timestamp: 2}}},
		{Labels: []Label{{"__name__", "legacy:name"}, {"x:y", "1"}}, Samples: []Sample{{Value: 1, Timestamp: 3}}},
	}}
	for _, tc := range []struct {
		esc     Escaping
		scheme  model.EscapingScheme
		want    [][]Label
		dropped Dropped
	}{
		{EscapeValues, model.ValueEncodingEscaping, [][]Label{
			{{"U__http_2e_route", "/a"}, {"__name__", "U__http_2e_server_2e_duration"}, {"job", "j"}},
			{{"U__a_2e_b", "1"}, {"__name__", "up"}, {"a_b", "2"}},
			{{"U__x_3a_y", "1"}, {"__name__", "legacy:name"}},
		}, Dropped{}},
		{EscapeUnderscores, model.UnderscoreEscaping, [][]Label{
			{{"__name__", "http_server_duration"}, {"http_route", "/a"}, {"job", "j"}},
			{{"__name__", "legacy:name"}, {"x_y", "1"}},
		}, Dropped{Series: 1, Samples: 1}}, // a.b and a_b became one name
	} {
		for _, to := range []Version{V1, V2} {
			c := Converter{Escape: tc.esc}
			out, dropped, err := c.Convert(nil, to, []Payload{{V2, in.Append(nil)}})
			if err != nil {
				t.Fatal(err)
			}
			if dropped != tc.dropped {
				t.Fatalf("%v to %s: dropped %+v, want %+v", tc.esc, to, dropped, tc.dropped)
			}
			var got [][]Label
			var exemplar []Label
			if to == V1 {
				req, _ := Unmarshal(out)
				for _, ts := range req.Timeseries {
					got = append(got, ts.Labels)
				}
				exemplar = req.Timeseries[0].Exemplars[0].Labels
			} else {
				req, _ := UnmarshalV2(out)
				for _, ts := range req.Timeseries {
					got = append(got, ts.Labels)
				}
				exemplar = req.Timeseries[0].Exemplars[0].Labels
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("%v to %s:\n got %v\nwant %v", tc.esc, to, got, tc.want)
			}
			// Metric names escape exactly as Prometheus escapes them.
			for _, l := range got[0] {
				if l.Name == "__name__" && l.Value != model.EscapeName("http.server.duration", tc.scheme) {
					t.Fatalf("metric name %q, Prometheus escapes to %q", l.Value, model.EscapeName("http.server.duration", tc.scheme))
				}
			}
			if want := model.EscapeName("trace.id", tc.scheme); exemplar[0].Name != want {
				t.Fatalf("exemplar label %q, want %q", exemplar[0].Name, want)
			}
		}
	}
}
