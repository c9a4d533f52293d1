package apps

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzDecodeApp feeds arbitrary bodies to the request decoder: it must
// never panic, and whatever it accepts must validate again after a JSON
// round trip (what is stored is what is read back) and give a workload
// spec and target group that validate.
func FuzzDecodeApp(f *testing.F) {
	for _, name := range []string{"minimal.json", "full.json", "pinned.json"} {
		f.Add(readExample(f, name))
	}
	f.Add([]byte(`{"guid":"a","image":"busybox:1","labels":{"__address__":"x"}}`))
	f.Add([]byte(`{"guid":"a","image":"busybox:1","env":{"A":"\u0000"},"metrics":{"port":1,"path":"/a/../b"}}`))
	f.Add([]byte(`{"guid":"a","image":"busybox:1"}{}`))
	policy := ImagePolicy{"registry.example/*/*", "busybox:*"}
	f.Fuzz(func(t *testing.T, body []byte) {
		spec, err := DecodeApp(bytes.NewReader(body), policy)
		if err != nil {
			return
		}
		b, err := json.Marshal(spec)
		if err != nil {
			t.Fatalf("marshal accepted spec: %v", err)
		}
		again, err := DecodeApp(bytes.NewReader(b), policy)
		if err != nil {
			t.Fatalf("accepted %q, but its stored form %s is refused: %v", body, b, err)
		}
		if !again.Equal(spec) {
			t.Fatalf("round trip changed the spec: %+v != %+v", again, spec)
		}
		rec := Record{Spec: spec, Node: "n1"}
		ws := WorkloadSpec(rec, "c1", "http://127.0.0.1:14318")
		if err := ws.Validate(); err != nil {
			t.Fatalf("accepted %q gives an invalid workload: %v", body, err)
		}
		if g, ok := TargetGroup(rec, "c1", "127.0.0.1"); ok {
			for name := range g.Labels {
				if strings.HasPrefix(string(name), "__") && name != "__metrics_path__" {
					t.Fatalf("accepted %q sets %s", body, name)
				}
			}
		}
		rb, _ := json.Marshal(rec)
		if len(rb) > MaxRecordBytes {
			return // the API refuses it (413)
		}
		if _, err := ParseRecord(testKeys, []byte(testKeys.App(spec.GUID)), rb); err != nil {
			t.Fatalf("accepted %q gives a record the reconciler skips: %v", body, err)
		}
	})
}
