package apps

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/stackconfig"
)

// Record is the value of apps/<guid>: the desired state of one app.
type Record struct {
	Spec AppSpec `json:"spec"`
	// Node is the member the app is assigned to.
	Node string `json:"node"`
	// Pinned is true when the request named the node: the app is never
	// moved to another one.
	Pinned  bool      `json:"pinned"`
	Created time.Time `json:"created"`
}

// Status is the value of status/apps/<guid>: what the assigned node
// observes, under that node's lease (it vanishes with the node).
type Status struct {
	Node string `json:"node"`
	// Status is a workload.Status, or "pending" before the first reconcile.
	Status   string    `json:"status"`
	ID       string    `json:"id,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	ExitCode int       `json:"exit_code"`
	// LastError is the last error starting or keeping the app.
	LastError string `json:"last_error,omitempty"`
	Restarts  int    `json:"restarts"`
}

// StatusPending is an app that no reconcile has looked at yet.
const StatusPending = "pending"

// StatusInvalid is an app whose record its node refuses to run: it does
// not validate, is too large, or names an image outside the node's
// api.allowed_images. LastError says which.
const StatusInvalid = "invalid"

// MaxRecordBytes bounds the value of apps/<guid>. Every node keeps every
// record it reads, so a record written around the API must not be able to
// make them all grow; a record made from a request within the default
// api.max_body_bytes (64 KiB) is far smaller. A larger record is skipped
// (and the API refuses to write one).
const MaxRecordBytes = 256 << 10

// ParseRecord checks one key/value of the apps/ prefix as strictly as the
// API checks a request (apart from the image allow-list, which each node
// checks against its own api.allowed_images): a record written around the
// API never reaches a workload spec or a label unchecked.
func ParseRecord(keys etcd.Keys, key, value []byte) (Record, error) {
	guid, ok := strings.CutPrefix(string(key), keys.Apps())
	if !ok || !stackconfig.ValidDNSLabel(guid) {
		return Record{}, errors.New("key is not apps/<guid> with a DNS-label guid")
	}
	if len(value) > MaxRecordBytes {
		return Record{}, fmt.Errorf("value: %d bytes, larger than the %d bytes an app record may have", len(value), MaxRecordBytes)
	}
	if err := checkKeys(value, reflect.TypeFor[Record]()); err != nil {
		return Record{}, fmt.Errorf("value: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	var r Record
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("value: %w", err)
	}
	if err := r.Spec.Validate(); err != nil {
		return Record{}, fmt.Errorf("value: spec.%w", err)
	}
	if r.Spec.GUID != guid {
		return Record{}, fmt.Errorf("value: spec.guid %q differs from the key's %q", r.Spec.GUID, guid)
	}
	if !stackconfig.ValidDNSLabel(r.Node) {
		return Record{}, fmt.Errorf("value: node must be a DNS label, got %q", r.Node)
	}
	if r.Pinned && r.Spec.Node != r.Node {
		return Record{}, fmt.Errorf("value: pinned to %q but assigned to %q", r.Spec.Node, r.Node)
	}
	r.Spec = r.Spec.Normalize()
	return r, nil
}

// LeastLoaded returns the live node with the fewest apps assigned (counts
// by node; nodes that are not live do not count), the smallest name on a
// tie, or "" when no node is live.
func LeastLoaded(live []string, counts map[string]int) string {
	best := ""
	for _, n := range slices.Sorted(slices.Values(live)) {
		if best == "" || counts[n] < counts[best] {
			best = n
		}
	}
	return best
}

// MemberNodes returns the sorted node names of the members/ keys in kvs:
// a key exists exactly as long as its agent's lease, whatever its value.
func MemberNodes(keys etcd.Keys, kvs []*mvccpb.KeyValue) []string {
	var out []string
	for _, kv := range kvs {
		if n, ok := MemberNode(keys, kv.Key); ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// MemberNode returns the node name of a members/<node> key.
func MemberNode(keys etcd.Keys, key []byte) (string, bool) {
	n, ok := strings.CutPrefix(string(key), keys.Members())
	return n, ok && stackconfig.ValidDNSLabel(n)
}
