package remotewrite

import (
	"bytes"
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
	rw, err := NewRewriter(map[string]string{"cluster": "fuzz"}, 3)
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
		cold, _ := NewRewriter(map[string]string{"cluster": "fuzz"}, 3)
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
