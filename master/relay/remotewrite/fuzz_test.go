package remotewrite

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// FuzzDecodeWriteRequest feeds arbitrary bodies through the relay's ingest
// path (snappy decode under a limit, validate, rewrite) and checks that it
// never panics, never allocates beyond the limit, and accepts only what a
// receiver accepts too: whatever Rewrite lets in, and whatever it forwards,
// must pass the oracle (the Go protobuf runtime with the remote-write
// schema, as strict as the receivers' parsers). Seeds hold every kind of
// field (histograms, exemplars, metadata), compressed and not, so the
// fuzzer mutates nested fields directly.
func FuzzDecodeWriteRequest(f *testing.F) {
	const limit = 1 << 16
	for _, req := range [][]byte{sampleRequest().Append(nil), fullRequest().Append(nil)} {
		f.Add(Encode(nil, req))
		f.Add(Encode(nil, req[:len(req)/2]))
		f.Add(req)
	}
	f.Add(series(fBytes(tsHistograms, fVarint(hSum, 3))))
	f.Add(fBytes(fieldMetadata, fVarint(mdType, 1), fBytes(mdHelp, []byte("h"))))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	rw, err := NewRewriter(map[string]string{"cluster": "fuzz"}, 3, NamesUTF8)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		dec, err := Decode(nil, body, limit)
		if cap(dec) > limit {
			t.Fatalf("decode buffer of %d bytes for a limit of %d", cap(dec), limit)
		}
		if err != nil {
			// Also scan the raw bytes as a decoded request.
			dec = body
		}
		out := make([]Shard, 3)
		c, err := rw.Rewrite(dec, out)
		// A cold Rewriter must agree with the warm one (its label cache).
		cold, _ := NewRewriter(map[string]string{"cluster": "fuzz"}, 3, NamesUTF8)
		coldOut := make([]Shard, 3)
		if _, coldErr := cold.Rewrite(dec, coldOut); (coldErr == nil) != (err == nil) {
			t.Fatalf("warm rewriter err %v, cold %v", err, coldErr)
		}
		if err != nil {
			return
		}
		if err := oracleCheck(dec); err != nil {
			t.Fatalf("accepted a request a receiver refuses: %v", err)
		}
		for i := range out {
			if !bytes.Equal(out[i].Buf, coldOut[i].Buf) {
				t.Fatalf("shard %d differs between warm and cold rewriter", i)
			}
			if err := oracleCheck(out[i].Buf); err != nil {
				t.Fatalf("shard %d forwards what a receiver refuses: %v", i, err)
			}
		}
		// What the relay sends a 2.0 upstream of it: what a 2.0 receiver takes.
		var payloads []Payload
		for _, s := range out {
			payloads = append(payloads, Payload{V1, s.Buf})
		}
		var conv Converter
		v2, _, err := conv.Convert(nil, V2, payloads)
		if err != nil {
			t.Fatalf("convert to 2.0: %v", err)
		}
		if err := oracleCheckV2(v2); err != nil {
			t.Fatalf("converted to 2.0, a receiver refuses it: %v", err)
		}
		size := 0
		for _, s := range out {
			size += len(s.Buf)
		}
		// Each series grows by at most the external label and a length.
		if max := len(dec) + c.Series*(len("cluster")+len("fuzz")+16); size > max {
			t.Fatalf("rewrite grew %d bytes to %d (bound %d)", len(dec), size, max)
		}
	})
}

// FuzzDecodeWriteRequestV2 is FuzzDecodeWriteRequest for remote-write 2.0:
// whatever RewriteV2 accepts must pass the 2.0 oracle (the Go protobuf
// runtime with the 2.0 schema and Prometheus' receiver checks), every shard
// it writes must too and must hold exactly the accepted series with the
// external label merged, and converting the shards to 1.0 (and joining
// them as 2.0) must give what the oracles accept.
func FuzzDecodeWriteRequestV2(f *testing.F) {
	const limit = 1 << 16
	for _, req := range [][]byte{fullRequestV2().Append(nil), (&RequestV2{Timeseries: []TimeSeriesV2{{Labels: []Label{{"a", "b"}}, Samples: []Sample{{Value: 1}}}}}).Append(nil)} {
		f.Add(Encode(nil, req))
		f.Add(Encode(nil, req[:len(req)/2]))
		f.Add(req)
	}
	f.Add(cat(fBytes(v2Symbols, nil), fBytes(v2Symbols, []byte("x")), fBytes(v2Timeseries, fBytes(v2tsLabelsRefs, []byte{1, 1}), fBytes(v2tsHistograms, fVarint(v2hStart, 3)))))
	f.Add([]byte{})
	ext := map[string]string{"cluster": "fuzz"}
	rw, err := NewRewriter(ext, 3, NamesUTF8)
	if err != nil {
		f.Fatal(err)
	}
	out := make([]Shard, 3)
	var conv Converter
	plain, err := NewRewriter(nil, 1, NamesUTF8) // may queue a request as it came
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		dec, err := Decode(nil, body, limit)
		if cap(dec) > limit {
			t.Fatalf("decode buffer of %d bytes for a limit of %d", cap(dec), limit)
		}
		if err != nil {
			dec = body
		}
		for i := range out {
			out[i].Reset()
		}
		c, err := rw.RewriteV2(dec, out)
		if err != nil {
			return
		}
		if err := oracleCheckV2(dec); err != nil {
			t.Fatalf("accepted a request a receiver refuses: %v", err)
		}
		in, err := UnmarshalV2(dec)
		if err != nil {
			t.Fatalf("accepted a request that does not decode: %v", err)
		}
		var want, got []string
		for _, ts := range withExternal(in, ext).Timeseries {
			want = append(want, string((&RequestV2{Timeseries: []TimeSeriesV2{ts}}).Append(nil)))
		}
		var payloads []Payload
		samples := 0
		for i := range out {
			if len(out[i].Buf) == 0 {
				continue
			}
			if err := oracleCheckV2(out[i].Buf); err != nil {
				t.Fatalf("shard %d forwards what a receiver refuses: %v", i, err)
			}
			req, err := UnmarshalV2(out[i].Buf)
			if err != nil {
				t.Fatal(err)
			}
			for _, ts := range req.Timeseries {
				got = append(got, string((&RequestV2{Timeseries: []TimeSeriesV2{ts}}).Append(nil)))
			}
			samples += out[i].Samples
			payloads = append(payloads, Payload{V2, out[i].Buf})
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(want, got) || samples != c.Samples+c.Histograms {
			t.Fatalf("shards hold other series than accepted (%d vs %d series, %d samples, counts %+v)", len(got), len(want), samples, c)
		}
		v1, _, err := conv.Convert(nil, V1, payloads)
		if err != nil {
			t.Fatalf("convert to 1.0: %v", err)
		}
		if err := oracleCheck(v1); err != nil {
			t.Fatalf("converted to 1.0, a receiver refuses it: %v", err)
		}
		v2, _, err := conv.Convert(nil, V2, payloads)
		if err != nil {
			t.Fatalf("join as 2.0: %v", err)
		}
		if err := oracleCheckV2(v2); err != nil {
			t.Fatalf("joined as 2.0, a receiver refuses it: %v", err)
		}
		// A request queued as it came is forwarded, converted and joined
		// from the body as sent.
		pc, same, err := plain.CheckV2(dec)
		switch {
		case err != nil && strings.Contains(err.Error(), "no labels with a value"):
			return // only the external label has a value
		case err != nil || pc != c:
			t.Fatalf("CheckV2: counts %+v, err %v; RewriteV2 accepted it with %+v", pc, err, c)
		case !same:
			return
		}
		raw := []Payload{{V2, dec}}
		if v1, _, err = conv.Convert(nil, V1, raw); err != nil {
			t.Fatalf("convert as it came to 1.0: %v", err)
		}
		if err := oracleCheck(v1); err != nil {
			t.Fatalf("converted as it came to 1.0, a receiver refuses it: %v", err)
		}
		if v2, _, err = conv.Convert(nil, V2, append(raw, raw...)); err != nil {
			t.Fatalf("join as it came: %v", err)
		}
		if err := oracleCheckV2(v2); err != nil {
			t.Fatalf("joined as it came, a receiver refuses it: %v", err)
		}
	})
}
