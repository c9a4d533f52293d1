package remotewrite

import (
	"bytes"
	"testing"
)

// FuzzDecodeWriteRequest feeds arbitrary bodies through the relay's ingest
// path (snappy decode under a limit, validate, rewrite) and checks that it
// never panics and never allocates beyond the limit.
func FuzzDecodeWriteRequest(f *testing.F) {
	const limit = 1 << 16
	req := sampleRequest().Append(nil)
	f.Add(Encode(nil, req))
	f.Add(Encode(nil, req[:len(req)/2]))
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
		for i := range out {
			if !bytes.Equal(out[i].Buf, coldOut[i].Buf) {
				t.Fatalf("shard %d differs between warm and cold rewriter", i)
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
		if _, err := Unmarshal(out[0].Buf); err != nil {
			t.Fatalf("rewritten shard does not parse: %v", err)
		}
	})
}
