package slave

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/stackconfig"
)

// The snapshot keeps one fragment per group, the file_sd one (with the
// job label of the key); /api/v1/targets is made from it and must still
// say what was published: the group's own job label, or none.
func TestListingFromFileSDFragments(t *testing.T) {
	s := NewSnapshot(nil, SnapshotConfig{Keys: testKeys}, slog.New(slog.DiscardHandler), nil)
	for _, tc := range []struct{ name, node, id, value string }{
		{"no job label", "n1", "0", `{"targets":["127.0.0.1:9100"],"labels":{"rack":"r1","zone":"z"}}`},
		{"no labels", "n1", "1", `{"targets":["127.0.0.2:9100","127.0.0.1:9100"]}`},
		{"own job label, other value", "n2", "0", `{"targets":["127.0.0.1:9100"],"labels":{"job":"mine","a":"1"}}`},
		{"own job label, same value", "n2", "1", `{"targets":["127.0.0.1:9100"],"labels":{"job":"node"}}`},
		{"labels after job", "n3", "0", `{"targets":["127.0.0.1:9100"],"labels":{"zone":"z","region":"r"}}`},
		{"escapes", "n\"4<", "x\\y", `{"targets":["[::1]:9100"],"labels":{"team":"quote\" and ünïcode \\ \"job\":\"x\"","jo":"\u2028<&>"}}`},
	} {
		key := testKeys.Target(tc.node, "node", tc.id)
		e := s.parse(key, &mvccpb.KeyValue{Key: []byte(key), Value: []byte(tc.value), ModRevision: 1})
		if e.reason != "" {
			t.Fatalf("%s: %s", tc.name, e.reason)
		}
		want, err := testKeys.ParseTargetKV([]byte(key), []byte(tc.value))
		if err != nil {
			t.Fatal(err)
		}
		want.TargetGroup = want.Normalize()
		if !bytes.Equal(e.sd, stackconfig.GroupJSON(want.Group())) {
			t.Errorf("%s: kept fragment is not the file_sd one:\n%s", tc.name, e.sd)
		}
		var scratch bytes.Buffer
		out := appendTarget(nil, &scratch, testKeys, e)
		var got etcd.Target
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v in %s", tc.name, err, out)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: listing entry %s\ndecodes to %+v\nwant       %+v", tc.name, out, got, want)
		}
	}
}
