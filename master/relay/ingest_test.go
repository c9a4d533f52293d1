package relay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/agentproj/agent/master/relay/remotewrite"
)

// pb builds raw protobuf for requests no encoder would write.
func pbBytes(num protowire.Number, parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), body)
}

func pbVarint(num protowire.Number, x uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), x)
}

func pbLabel(name, value string) []byte {
	return pbBytes(1, pbBytes(1, []byte(name)), pbBytes(2, []byte(value)))
}

// TestRefusesMalformedNestedFields: wrong wire types deep inside a request
// are refused with 400 and the reason on the way in, never acknowledged and
// then dropped by the upstream; nothing of them is forwarded.
func TestRefusesMalformedNestedFields(t *testing.T) {
	up := newFakeManager(t)
	r, _ := running(t, testConfig(t.TempDir(), up.URL))
	series := func(fields ...[]byte) []byte {
		return pbBytes(1, append([][]byte{pbLabel("__name__", "m")}, fields...)...)
	}
	for _, tc := range []struct {
		name, msg string
		body      []byte
	}{
		{"histogram sum as varint", "series 0: histogram 0: bad protobuf: field sum (3) has wire type varint, want fixed64",
			series(pbBytes(4, pbVarint(3, 7)))},
		{"exemplar value as varint", "series 0: exemplar 0: bad protobuf: field value (2) has wire type varint, want fixed64",
			series(pbBytes(3, pbLabel("trace_id", "x"), pbVarint(2, 1)))},
		{"metadata only, type as bytes", "metadata 0: bad protobuf: field type (1) has wire type bytes, want varint",
			pbBytes(3, pbBytes(1, []byte("counter")), pbBytes(2, []byte("up")))},
		{"metadata only, help not UTF-8", "metadata 0: help: not UTF-8",
			pbBytes(3, pbVarint(1, 1), pbBytes(4, []byte("\xfe")))},
		{"histogram spans without buckets", "series 0: histogram 0: positive spans need 2 buckets, have 0 bucket deltas",
			series(pbBytes(4, pbVarint(1, 2), pbBytes(11, pbVarint(2, 2))))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := post(r, remotewrite.Encode(nil, tc.body), nil)
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status %d (%s), want 400", rec.Code, rec.Body)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, tc.msg) {
				t.Fatalf("body %q, want a JSON error containing %q", rec.Body, tc.msg)
			}
		})
	}
	if n := testutil.ToFloat64(r.m.requests.WithLabelValues("400", "1.0")); n != 5 {
		t.Fatalf("400 answers counted %v, want 5", n)
	}
	if st := r.Stats(); st.Upstreams[0].QueueEntries != 0 || up.requestCount() != 0 {
		t.Fatalf("refused requests were queued (%+v) or forwarded (%d requests)", st, up.requestCount())
	}
}

// TestOneSeriesStaysInOrderAcrossEncodings: a series that arrives once
// with the external label and once without (and encoded differently) is
// one series: its samples reach the upstream in order. The upstream is
// down while the samples arrive, so each shard's backlog goes out in one
// batch and samples in two shards would come out of order.
func TestOneSeriesStaysInOrderAcrossEncodings(t *testing.T) {
	up, bringUp := newDownManager(t)
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.Concurrency = 4
	r, _ := running(t, cfg)
	const perSeries = 20
	for i := range perSeries {
		var req []byte
		for s := range 8 {
			name := fmt.Sprintf("m%d", s)
			sample := pbBytes(2, protowire.AppendFixed64(protowire.AppendTag(nil, 1, protowire.Fixed64Type), 0), pbVarint(2, uint64(1000+i)))
			switch i % 3 {
			case 0: // as Prometheus sends it
				req = append(req, pbBytes(1, pbLabel("__name__", name), pbLabel("job", "j"), sample)...)
			case 1: // with the external label already set
				req = append(req, pbBytes(1, pbLabel("__name__", name), pbLabel("cluster", "test"), pbLabel("job", "j"), sample)...)
			case 2: // value before name, an empty label
				req = append(req, pbBytes(1, pbBytes(1, pbBytes(2, []byte(name)), pbBytes(1, []byte("__name__"))),
					pbLabel("a", ""), pbLabel("job", "j"), sample)...)
			}
		}
		if rec := post(r, remotewrite.Encode(nil, req), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	bringUp()
	waitFor(t, "every sample upstream", func() bool { return len(up.received()) == 8*perSeries })
	last := map[string]int64{}
	for _, s := range up.received() {
		name := s.Labels[0].Value
		if ts := s.Samples[0].Timestamp; ts <= last[name] {
			t.Fatalf("series %s: sample %d arrived after %d", name, ts, last[name])
		} else {
			last[name] = ts
		}
	}
}
