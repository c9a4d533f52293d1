package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

// prom3Request is what a Prometheus 3 sends: UTF-8 names, start
// timestamps, metadata per series, a native histogram with custom buckets,
// an exemplar.
func prom3Request(ts int64) *remotewrite.RequestV2 {
	return &remotewrite.RequestV2{Timeseries: []remotewrite.TimeSeriesV2{
		{
			Labels:    []remotewrite.Label{{Name: "__name__", Value: "http.server.request.duration"}, {Name: "service.name", Value: "api"}},
			Samples:   []remotewrite.Sample{{Value: 0.25, Timestamp: ts, StartTimestamp: ts - 60_000}},
			Exemplars: []remotewrite.Exemplar{{Labels: []remotewrite.Label{{Name: "trace_id", Value: "4bf92f35"}}, Value: 0.3, Timestamp: ts}},
			Metadata:  remotewrite.MetadataV2{Type: 2, Help: "Duration.", Unit: "s"},
		},
		{
			Labels: []remotewrite.Label{{Name: "__name__", Value: "rpc_seconds"}, {Name: "job", Value: "api"}},
			Histograms: []remotewrite.Histogram{{
				CountInt: 5, Sum: 2, Schema: -53, PositiveSpans: []remotewrite.BucketSpan{{Offset: 0, Length: 3}},
				PositiveDeltas: []int64{1, 1, 0}, CustomValues: []float64{0.1, 0.5, 1}, Timestamp: ts, StartTimestamp: ts - 60_000,
			}},
			Metadata: remotewrite.MetadataV2{Type: 3, Help: "RPC latency."},
		},
	}}
}

func writtenHeaders(h http.Header) string {
	return fmt.Sprintf("%s/%s/%s", h.Get(remotewrite.SamplesWrittenHeader), h.Get(remotewrite.HistogramsWrittenHeader), h.Get(remotewrite.ExemplarsWrittenHeader))
}

func TestV2IngestAnswersWithWrittenHeaders(t *testing.T) {
	up := newFakeManager(t)
	r, _ := running(t, testConfig(t.TempDir(), up.URL))
	rec := postV2(r, remotewrite.Encode(nil, prom3Request(1000).Append(nil)))
	if rec.Code != http.StatusNoContent || writtenHeaders(rec.Header()) != "1/1/1" {
		t.Fatalf("status %d, written %s (%s), want 204 with 1/1/1", rec.Code, writtenHeaders(rec.Header()), rec.Body)
	}
	// A malformed 2.0 request: 400 with the reason, nothing written.
	bad := remotewrite.Encode(nil, append(prom3Request(1000).Append(nil), 0x22, 0x01, 0xff)) // a symbol that is not UTF-8
	rec = postV2(r, bad)
	var e struct{ Error string }
	if rec.Code != http.StatusBadRequest || json.Unmarshal(rec.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, "not UTF-8") || writtenHeaders(rec.Header()) != "0/0/0" {
		t.Fatalf("status %d, body %s, written %s; want 400, the reason, 0/0/0", rec.Code, rec.Body, writtenHeaders(rec.Header()))
	}
	// A 1.0 answer has no such headers (1.0 senders do not read them).
	if rec := post(r, request("up"), nil); rec.Header().Get(remotewrite.SamplesWrittenHeader) != "" {
		t.Fatal("1.0 answer with Written headers")
	}
	if n := testutil.ToFloat64(r.m.requests.WithLabelValues("204", "2.0")); n != 1 {
		t.Fatalf("relay_write_requests_total{code=204,protocol=2.0} = %v", n)
	}
}

// TestV2ForwardedAsIs: an upstream that takes 2.0 gets what came in as
// 2.0, bit for bit, with the external label.
func TestV2ForwardedAsIs(t *testing.T) {
	up := newFakeManager(t)
	r, _ := running(t, testConfig(t.TempDir(), up.URL))
	for i := range 5 {
		if rec := postV2(r, remotewrite.Encode(nil, prom3Request(int64(1000*i)).Append(nil))); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	waitFor(t, "10 series upstream", func() bool { return len(up.received()) == 10 })
	for _, v := range up.versionsSeen() {
		if v != remotewrite.V2 {
			t.Fatalf("sent %s to an upstream that takes 2.0", v)
		}
	}
	up.mu.Lock()
	got := up.seriesV2
	up.mu.Unlock()
	for _, ts := range got {
		var want remotewrite.TimeSeriesV2
		for _, w := range prom3Request(seriesTime(ts)).Timeseries {
			if w.Labels[0] == ts.Labels[0] {
				want = w
			}
		}
		want.Labels = withCluster(want.Labels, "test")
		if !reflect.DeepEqual(ts, want) {
			t.Fatalf("forwarded\n%+v\nwant\n%+v", ts, want)
		}
	}
}

func withCluster(ls []remotewrite.Label, c string) []remotewrite.Label {
	out := append([]remotewrite.Label(nil), ls...)
	for i, l := range out {
		if l.Name > "cluster" {
			return append(out[:i], append([]remotewrite.Label{{Name: "cluster", Value: c}}, out[i:]...)...)
		}
	}
	return append(out, remotewrite.Label{Name: "cluster", Value: c})
}

// TestAutoFallsBackToV1 covers the two ways a 1.0 receiver answers 2.0:
// 415, and (not looking at the Content-Type, as Prometheus 2.42 does) 2xx
// having read an empty request. Either way every sample arrives as 1.0,
// the upstream is sent 1.0 from then on, and 2.0 is tried again later.
func TestAutoFallsBackToV1(t *testing.T) {
	for _, mode := range []receiverMode{v1Only, v1Blind} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			up := newFakeManager(t)
			up.setMode(mode)
			cfg := testConfig(t.TempDir(), up.URL)
			cfg.Concurrency = 1
			r, _ := runningWith(t, cfg, discardLogger(), func(r *Relay) { r.fwds[0].proto.retry = time.Hour })
			send := func(i int) {
				t.Helper()
				if rec := postV2(r, remotewrite.Encode(nil, prom3Request(int64(1000*i)).Append(nil))); rec.Code != http.StatusNoContent {
					t.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
			send(0)
			waitFor(t, "the first batch as 1.0", func() bool { return len(up.received()) == 2 })
			for i := 1; i < 4; i++ {
				send(i)
				waitFor(t, "the next batch", func() bool { return len(up.received()) == 2*(i+1) })
			}
			vs := up.versionsSeen()
			if got := versionList(vs); got != "2.0 1.0 1.0 1.0 1.0" {
				t.Fatalf("versions sent %v, want one 2.0 attempt then 1.0", vs)
			}
			if n := testutil.ToFloat64(r.m.fallbacks.WithLabelValues(r.fwds[0].name, "2.0")); n != 1 {
				t.Fatalf("fallbacks = %v, want 1", n)
			}
			// Nothing lost; start timestamps could not go and are counted.
			// Counted once the converted batch is sent, which the upstream
			// may see before the count is made.
			waitFor(t, "8 start timestamps counted as dropped", func() bool {
				return testutil.ToFloat64(r.m.converted.WithLabelValues(r.fwds[0].name, "start_timestamp")) == 8
			})
			up.mu.Lock()
			md := up.metadata
			up.mu.Unlock()
			if len(md) != 8 || md[0].Family != "http.server.request.duration" || md[1].Family != "rpc_seconds" || md[1].Type != 3 {
				t.Fatalf("metadata %+v, want one entry per family per request", md)
			}
			if st := r.Stats().Upstreams[0]; st.SendingV2 != "1.0" || st.SamplesForwarded != 8 || st.SamplesDropped != 0 {
				t.Fatalf("stats %+v", st)
			}
			// Later, the upstream has learned 2.0: after the retry time the
			// relay finds out.
			up.setMode(bothVersions)
			r.fwds[0].proto.mu.Lock()
			r.fwds[0].proto.noV2Until = time.Now()
			r.fwds[0].proto.mu.Unlock()
			send(9)
			waitFor(t, "the batch as 2.0", func() bool { vs := up.versionsSeen(); return len(vs) == 6 && vs[5] == remotewrite.V2 })
		})
	}
}

func TestAutoSendsV1AsIsAndConvertsForV2OnlyUpstream(t *testing.T) {
	up := newFakeManager(t)
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.Concurrency = 1
	r, _ := running(t, cfg)
	if rec := post(r, request("a", "b"), nil); rec.Code != http.StatusNoContent {
		t.Fatal(rec.Code)
	}
	waitFor(t, "1.0 as is", func() bool { return len(up.received()) == 2 })
	up.setMode(v2Only)
	if rec := post(r, request("c"), nil); rec.Code != http.StatusNoContent {
		t.Fatal(rec.Code)
	}
	waitFor(t, "converted to 2.0", func() bool { return len(up.received()) == 3 })
	if vs := versionList(up.versionsSeen()); vs != "1.0 1.0 2.0" {
		t.Fatalf("versions %s", vs)
	}
}

// TestExplicitProtocols: protocol 1.0 converts 2.0 (counting start
// timestamps), 2.0 converts 1.0 (counting 1.0 metadata), and an upstream
// configured as 2.0 that reads 2.0 as an empty 1.0 request (2xx, no
// Written headers) has the batch counted as refused, not as delivered.
func TestExplicitProtocols(t *testing.T) {
	v1up, v2up, blind := newFakeManager(t), newFakeManager(t), newFakeManager(t)
	blind.setMode(v1Blind)
	cfg := testConfig(t.TempDir())
	cfg.Upstream = []stackconfig.RelayUpstream{{URL: v1up.URL, Protocol: "1.0"}, {URL: v2up.URL, Protocol: "2.0"}, {URL: blind.URL, Protocol: "2.0"}}
	cfg.Concurrency = 1
	r, _ := running(t, cfg)
	if rec := postV2(r, remotewrite.Encode(nil, prom3Request(1000).Append(nil))); rec.Code != http.StatusNoContent {
		t.Fatal(rec.Code)
	}
	md := remotewrite.Encode(nil, (&remotewrite.WriteRequest{Metadata: []remotewrite.Metadata{{Type: 1, Family: "up", Help: "h"}}}).Append(nil))
	if rec := post(r, md, nil); rec.Code != http.StatusNoContent {
		t.Fatal(rec.Code)
	}
	if rec := post(r, request("up"), nil); rec.Code != http.StatusNoContent {
		t.Fatal(rec.Code)
	}
	waitFor(t, "all delivered", func() bool {
		return len(v1up.received()) == 3 && len(v2up.received()) == 3 && r.Stats().Upstreams[2].SamplesDropped == 3
	})
	for i, up := range []*fakeManager{v1up, v2up} {
		want := []remotewrite.Version{remotewrite.V1, remotewrite.V2}[i]
		for _, v := range up.versionsSeen() {
			if v != want {
				t.Fatalf("upstream %d got %s, want only %s", i, v, want)
			}
		}
	}
	if n := testutil.ToFloat64(r.m.converted.WithLabelValues(r.fwds[0].name, "start_timestamp")); n != 2 {
		t.Fatalf("start timestamps dropped for the 1.0 upstream = %v", n)
	}
	if n := testutil.ToFloat64(r.m.converted.WithLabelValues(r.fwds[1].name, "metadata")); n != 1 {
		t.Fatalf("metadata dropped for the 2.0 upstream = %v", n)
	}
	st := r.Stats().Upstreams[2]
	if !strings.Contains(st.LastError, "does not take 2.0") {
		t.Fatalf("last error %q", st.LastError)
	}
}

// TestMixedVersionsStayInOrder: one series arriving as 1.0, then 2.0, then
// 1.0 reaches the upstream in that order (batches never mix versions).
func TestMixedVersionsStayInOrder(t *testing.T) {
	up := newFakeManager(t)
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.FlushDeadline = 200 * time.Millisecond
	r, _ := running(t, cfg)
	for i := range 30 {
		ts := remotewrite.TimeSeries{Labels: []remotewrite.Label{{Name: "__name__", Value: "m"}}, Samples: []remotewrite.Sample{{Value: float64(i), Timestamp: int64(i)}}}
		var rec *httptest.ResponseRecorder
		if i%3 == 1 {
			rec = postV2(r, remotewrite.Encode(nil, (&remotewrite.RequestV2{Timeseries: []remotewrite.TimeSeriesV2{{Labels: ts.Labels, Samples: ts.Samples}}}).Append(nil)))
		} else {
			rec = post(r, remotewrite.Encode(nil, (&remotewrite.WriteRequest{Timeseries: []remotewrite.TimeSeries{ts}}).Append(nil)), nil)
		}
		if c := rec.Code; c != http.StatusNoContent {
			t.Fatal(c)
		}
	}
	waitFor(t, "30 samples", func() bool { return len(up.received()) == 30 })
	for i, ts := range up.received() {
		if ts.Samples[0].Timestamp != int64(i) {
			t.Fatalf("sample %d has timestamp %d: out of order", i, ts.Samples[0].Timestamp)
		}
	}
}

// TestWriteInProcess: the internal way in (a push API) is as durable and
// as strict as HTTP.
func TestWriteInProcess(t *testing.T) {
	up := newFakeManager(t)
	cfg := testConfig(t.TempDir(), up.URL)
	r, err := New(cfg, discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	body := (&remotewrite.WriteRequest{Timeseries: []remotewrite.TimeSeries{{Labels: []remotewrite.Label{{Name: "__name__", Value: "pushed"}}, Samples: []remotewrite.Sample{{Value: 1, Timestamp: 1}}}}}).Append(nil)
	if _, err := r.Write(context.Background(), remotewrite.V1, body); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("before Run: %v, want ErrUnavailable", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "running", r.running.Load)
	c, err := r.Write(context.Background(), remotewrite.V1, body)
	if err != nil || c.Samples != 1 {
		t.Fatalf("Write = %+v, %v", c, err)
	}
	if _, err := r.Write(context.Background(), remotewrite.V2, prom3Request(5).Append(nil)); err != nil {
		t.Fatal(err)
	}
	_, err = r.Write(context.Background(), remotewrite.V2, body) // a 1.0 body said to be 2.0
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("invalid: %v, want ErrInvalid with the reason", err)
	}
	waitFor(t, "pushed series upstream", func() bool { return len(up.received()) == 3 })
}

func TestNameValidationAndEscaping(t *testing.T) {
	plain, escaped := newFakeManager(t), newFakeManager(t)
	cfg := testConfig(t.TempDir())
	cfg.Upstream = []stackconfig.RelayUpstream{{URL: plain.URL}, {URL: escaped.URL, NameEscaping: "values"}}
	r, _ := running(t, cfg)
	if rec := postV2(r, remotewrite.Encode(nil, prom3Request(1000).Append(nil))); rec.Code != http.StatusNoContent {
		t.Fatal(rec.Code)
	}
	waitFor(t, "both upstreams", func() bool { return len(plain.received()) == 2 && len(escaped.received()) == 2 })
	names := func(up *fakeManager) map[string]bool {
		out := map[string]bool{}
		for _, ts := range up.received() {
			for _, l := range ts.Labels {
				out[l.Name] = true
				if l.Name == "__name__" {
					out[l.Value] = true
				}
			}
		}
		return out
	}
	if n := names(plain); !n["http.server.request.duration"] || !n["service.name"] {
		t.Fatalf("UTF-8 names not forwarded unchanged: %v", n)
	}
	if n := names(escaped); !n["U__http_2e_server_2e_request_2e_duration"] || !n["U__service_2e_name"] {
		t.Fatalf("names not escaped: %v", n)
	}

	legacy := testConfig(t.TempDir(), plain.URL)
	legacy.NameValidation = "legacy"
	lr, _ := running(t, legacy)
	rec := postV2(lr, remotewrite.Encode(nil, prom3Request(1000).Append(nil)))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `invalid metric name \"http.server.request.duration\"`) {
		t.Fatalf("legacy: %d %s", rec.Code, rec.Body)
	}
}

func seriesTime(ts remotewrite.TimeSeriesV2) int64 {
	if len(ts.Samples) > 0 {
		return ts.Samples[0].Timestamp
	}
	return ts.Histograms[0].Timestamp
}

func versionList(vs []remotewrite.Version) string {
	var out []string
	for _, v := range vs {
		out = append(out, v.String())
	}
	return strings.Join(out, " ")
}

// TestV2QueuedAsReceived: with no external labels and one shard the relay
// has nothing to change in a 2.0 request, so it is queued and forwarded as
// it came, byte for byte (not rebuilt, not compressed again), and still
// converted for a 1.0 upstream; one with a label it leaves out (an empty
// value) is rebuilt as usual.
func TestV2QueuedAsReceived(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	raw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		w.Header().Set(remotewrite.SamplesWrittenHeader, "1")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer raw.Close()
	v1 := newFakeManager(t)
	cfg := testConfig(t.TempDir(), raw.URL, v1.URL)
	cfg.Upstream[1].Protocol = stackconfig.ProtocolV1
	cfg.ExternalLabels = nil
	cfg.Concurrency = 1
	r, _ := running(t, cfg)
	sent := remotewrite.Encode(nil, prom3Request(1000).Append(nil))
	if rec := postV2(r, sent); rec.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	waitFor(t, "the request upstream", func() bool { mu.Lock(); defer mu.Unlock(); return len(bodies) == 1 })
	mu.Lock()
	got := bodies[0]
	mu.Unlock()
	if !bytes.Equal(got, sent) {
		t.Fatalf("upstream got %d bytes, not the %d sent", len(got), len(sent))
	}
	waitFor(t, "2 series at the 1.0 upstream", func() bool { return len(v1.received()) == 2 })
	if n := names(v1.received()); n["http.server.request.duration"] != 1 || n["rpc_seconds"] != 1 {
		t.Fatalf("1.0 upstream got %v", n)
	}

	empty := &remotewrite.RequestV2{Timeseries: []remotewrite.TimeSeriesV2{{
		Labels:  []remotewrite.Label{{Name: "__name__", Value: "up"}, {Name: "gone", Value: ""}, {Name: "job", Value: "node"}},
		Samples: []remotewrite.Sample{{Value: 1, Timestamp: 2000}},
	}}}
	sent = remotewrite.Encode(nil, empty.Append(nil))
	if rec := postV2(r, sent); rec.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	waitFor(t, "the second request upstream", func() bool { mu.Lock(); defer mu.Unlock(); return len(bodies) == 2 })
	mu.Lock()
	got = bodies[1]
	mu.Unlock()
	dec, err := remotewrite.Decode(nil, got, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	req, err := remotewrite.UnmarshalV2(dec)
	if err != nil {
		t.Fatal(err)
	}
	want := []remotewrite.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "node"}}
	if len(req.Timeseries) != 1 || !reflect.DeepEqual(req.Timeseries[0].Labels, want) {
		t.Fatalf("forwarded %+v, want one series with labels %v", req.Timeseries, want)
	}
}
