package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/tmpfs"
	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeManager stands in for the manager's remote-write endpoint: it decodes
// every request by its Content-Type (as a 1.0 and 2.0 receiver does, unless
// mode says otherwise) and answers with what respond returns (204 when nil;
// 2.0 requests get the Written headers).
type fakeManager struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
	versions []remotewrite.Version
	series   []remotewrite.TimeSeries
	seriesV2 []remotewrite.TimeSeriesV2 // what came as 2.0, as it came
	metadata []remotewrite.Metadata
	accepted [][]remotewrite.TimeSeries // by request
	respond  func(n int, req *remotewrite.WriteRequest) (int, http.Header)
	mode     receiverMode
}

type receiverMode int

const (
	bothVersions receiverMode = iota
	v1Only                    // answers 415 to 2.0
	v1Blind                   // reads every body as 1.0, without the Written headers (as Prometheus 2.42)
	v2Only                    // answers 415 to 1.0
)

func newFakeManager(t *testing.T) *fakeManager { return newFakeManagerAt(t, "") }

// newDownManager is a fakeManager in an outage: it answers 503 to every
// request until bringUp is called, and 204 from then on.
func newDownManager(t *testing.T) (up *fakeManager, bringUp func()) {
	up = newFakeManager(t)
	var isUp atomic.Bool
	up.respond = func(int, *remotewrite.WriteRequest) (int, http.Header) {
		if !isUp.Load() {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusNoContent, nil
	}
	return up, func() { isUp.Store(true) }
}

// newFakeManagerAt is newFakeManager listening on addr (host:port; ""
// picks a free port).
func newFakeManagerAt(t *testing.T, addr string) *fakeManager {
	f := &fakeManager{}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		mode := f.mode
		f.mu.Unlock()
		sent := remotewrite.V1
		if strings.Contains(r.Header.Get("Content-Type"), "proto=io.prometheus.write.v2.Request") {
			sent = remotewrite.V2
		}
		v := sent // what it reads the body as
		if mode == v1Blind {
			v = remotewrite.V1
		}
		if v == remotewrite.V2 && mode == v1Only || v == remotewrite.V1 && mode == v2Only {
			f.mu.Lock()
			f.requests = append(f.requests, r)
			f.versions = append(f.versions, sent)
			f.mu.Unlock()
			http.Error(w, "unsupported", http.StatusUnsupportedMediaType)
			return
		}
		body, _ := io.ReadAll(r.Body)
		dec, err := remotewrite.Decode(nil, body, 64<<20)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var wr *remotewrite.WriteRequest
		var wr2 *remotewrite.RequestV2
		if v == remotewrite.V2 {
			wr2, err = remotewrite.UnmarshalV2(dec)
			wr = &remotewrite.WriteRequest{}
			if wr2 != nil {
				for _, ts := range wr2.Timeseries {
					wr.Timeseries = append(wr.Timeseries, remotewrite.TimeSeries{Labels: ts.Labels, Samples: ts.Samples, Exemplars: ts.Exemplars, Histograms: ts.Histograms})
				}
			}
		} else {
			wr, err = remotewrite.Unmarshal(dec)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		n := len(f.requests)
		f.requests = append(f.requests, r)
		f.versions = append(f.versions, sent)
		respond := f.respond
		f.mu.Unlock()
		code := http.StatusNoContent
		if respond != nil {
			var h http.Header
			code, h = respond(n, wr)
			for k, v := range h {
				w.Header()[k] = v
			}
		}
		if code/100 == 2 {
			f.mu.Lock()
			f.series = append(f.series, wr.Timeseries...)
			f.metadata = append(f.metadata, wr.Metadata...)
			f.accepted = append(f.accepted, wr.Timeseries)
			if wr2 != nil {
				f.seriesV2 = append(f.seriesV2, wr2.Timeseries...)
			}
			f.mu.Unlock()
		}
		if v == remotewrite.V2 {
			samples, hists, exemplars := 0, 0, 0
			for _, ts := range wr.Timeseries {
				samples, hists, exemplars = samples+len(ts.Samples), hists+len(ts.Histograms), exemplars+len(ts.Exemplars)
			}
			if code/100 != 2 {
				samples, hists, exemplars = 0, 0, 0
			}
			w.Header().Set(remotewrite.SamplesWrittenHeader, strconv.Itoa(samples))
			w.Header().Set(remotewrite.HistogramsWrittenHeader, strconv.Itoa(hists))
			w.Header().Set(remotewrite.ExemplarsWrittenHeader, strconv.Itoa(exemplars))
		}
		w.WriteHeader(code)
	}))
	if addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		f.Listener.Close()
		f.Listener = l
	}
	f.Start()
	t.Cleanup(f.Close)
	return f
}

func (f *fakeManager) setMode(m receiverMode) {
	f.mu.Lock()
	f.mode = m
	f.mu.Unlock()
}

// versionsSeen returns the version of every request so far.
func (f *fakeManager) versionsSeen() []remotewrite.Version {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]remotewrite.Version(nil), f.versions...)
}

func (f *fakeManager) received() []remotewrite.TimeSeries {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]remotewrite.TimeSeries(nil), f.series...)
}

func (f *fakeManager) requestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func testConfig(dir string, upstream ...string) stackconfig.Relay {
	cfg := stackconfig.DefaultRelay
	cfg.Upstream = stackconfig.Upstreams(upstream...)
	cfg.QueueDir = dir
	cfg.ExternalLabels = map[string]string{"cluster": "test"}
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 20*time.Millisecond
	cfg.FlushDeadline = 0
	cfg.Concurrency = 2
	cfg.QueueMaxBytes = 64 << 20
	cfg.MaxRequestBytes = 1 << 20
	return cfg
}

// running starts a relay and stops it when the test ends; stop stops it
// earlier.
func running(t *testing.T, cfg stackconfig.Relay) (r *Relay, stop func()) {
	t.Helper()
	return runningWith(t, cfg, slog.New(slog.DiscardHandler), nil)
}

// runningWith is running with the relay logging to logger, and prepare
// (if set) called between New and Run.
func runningWith(t *testing.T, cfg stackconfig.Relay, logger *slog.Logger, prepare func(*Relay)) (r *Relay, stop func()) {
	t.Helper()
	r, err := New(cfg, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, "relay running", r.running.Load)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, cond, "waiting for %s", what)
}

func request(series ...string) []byte {
	var wr remotewrite.WriteRequest
	for i, name := range series {
		wr.Timeseries = append(wr.Timeseries, remotewrite.TimeSeries{
			Labels:  []remotewrite.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "node"}},
			Samples: []remotewrite.Sample{{Value: float64(i), Timestamp: int64(1000 + i)}},
		})
	}
	return remotewrite.Encode(nil, wr.Append(nil))
}

func requestV2(series ...string) []byte {
	var wr remotewrite.RequestV2
	for i, name := range series {
		wr.Timeseries = append(wr.Timeseries, remotewrite.TimeSeriesV2{
			Labels:  []remotewrite.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "node"}},
			Samples: []remotewrite.Sample{{Value: float64(i), Timestamp: int64(1000 + i)}},
		})
	}
	return remotewrite.Encode(nil, wr.Append(nil))
}

func postV2(h http.Handler, body []byte) *httptest.ResponseRecorder {
	return post(h, body, map[string]string{"Content-Type": remotewrite.ContentTypeV2, "X-Prometheus-Remote-Write-Version": "2.0.0"})
}

func post(h http.Handler, body []byte, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func names(series []remotewrite.TimeSeries) map[string]int {
	out := map[string]int{}
	for _, s := range series {
		out[s.Labels[0].Value]++
	}
	return out
}

func TestHandlerStatusCodes(t *testing.T) {
	up := newFakeManager(t)
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.MaxRequestBytes = 4096
	r, stop := running(t, cfg)

	bigLabel := strings.Repeat("a", 8000) // compresses far below 4096 bytes
	big := remotewrite.Encode(nil, (&remotewrite.WriteRequest{Timeseries: []remotewrite.TimeSeries{{
		Labels: []remotewrite.Label{{Name: "__name__", Value: bigLabel}}}}}).Append(nil))
	metadataOnly := remotewrite.Encode(nil, (&remotewrite.WriteRequest{Metadata: []remotewrite.Metadata{{Type: 1, Family: "up", Help: "h"}}}).Append(nil))
	badName := remotewrite.Encode(nil, (&remotewrite.WriteRequest{Timeseries: []remotewrite.TimeSeries{{
		Labels: []remotewrite.Label{{Name: "", Value: "x"}}}}}).Append(nil))
	v2 := map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request", "X-Prometheus-Remote-Write-Version": "2.0.0"}

	for _, tc := range []struct {
		name   string
		body   []byte
		header map[string]string
		method string
		code   int
		msg    string
	}{
		{name: "valid", body: request("up"), code: 204},
		{name: "metadata only", body: metadataOnly, code: 204},
		{name: "empty", body: remotewrite.Encode(nil, nil), code: 204},
		{name: "bad snappy", body: []byte("\x10not snappy"), code: 400, msg: "bad snappy"},
		{name: "bad protobuf", body: remotewrite.Encode(nil, []byte{0x0a, 0xff, 0x01}), code: 400, msg: "bad protobuf"},
		{name: "invalid label name", body: badName, code: 400, msg: `series 0: empty label name`},
		{name: "UTF-8 names", body: request("http.server.duration"), code: 204},
		{name: "remote-write 2.0", body: requestV2("up"), header: v2, code: 204},
		{name: "remote-write 2.0, 1.0 body", body: request("up"), header: v2, code: 400, msg: "request field 1 is reserved in io.prometheus.write.v2.Request: is this a remote-write 1.0 body?"},
		{name: "remote-write 1.0, 2.0 body", body: requestV2("up"), code: 400, msg: "write request field 4 is a remote-write 2.0 field"},
		{name: "explicit 1.0", body: request("up"), header: map[string]string{"Content-Type": "application/x-protobuf;proto=prometheus.WriteRequest"}, code: 204},
		{name: "body over limit", body: bytes.Repeat([]byte{1}, 8192), code: 413, msg: "max_request_bytes"},
		{name: "decoded over limit", body: big, code: 413, msg: "decoded size"},
		{name: "other protobuf message", body: request("up"), header: map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v3.Request"}, code: 415, msg: `protobuf message "io.prometheus.write.v3.Request" not supported`},
		{name: "json", body: request("up"), header: map[string]string{"Content-Type": "application/json"}, code: 415, msg: "content type"},
		{name: "no snappy", body: request("up"), header: map[string]string{"Content-Encoding": ""}, code: 415, msg: "content encoding"},
		{name: "GET", method: http.MethodGet, code: 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec *httptest.ResponseRecorder
			if tc.method != "" {
				rec = httptest.NewRecorder()
				r.ServeHTTP(rec, httptest.NewRequest(tc.method, "/api/v1/write", nil))
			} else {
				rec = post(r, tc.body, tc.header)
			}
			if rec.Code != tc.code {
				t.Fatalf("status %d (%s), want %d", rec.Code, rec.Body, tc.code)
			}
			if tc.code == 204 {
				return
			}
			var e struct{ Error string }
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, tc.msg) {
				t.Fatalf("body %q (err %v), want JSON error containing %q", rec.Body, err, tc.msg)
			}
		})
	}
	stop()
	if rec := post(r, request("up"), nil); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("after stop: status %d, want 503", rec.Code)
	}
	for _, v := range []string{"1.0", "2.0", "unknown"} {
		if n := testutil.ToFloat64(r.m.requests.WithLabelValues("429", v)); n != 0 {
			t.Fatal("answered 429")
		}
	}
}

func TestForwardsWithExternalLabelsAndHeaders(t *testing.T) {
	up := newFakeManager(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(filepath.Join(dir, "q"), up.URL)
	cfg.BearerTokenFile = tokenFile
	cfg.Headers = map[string]string{"X-Tenant": "t1"}
	r, _ := running(t, cfg)

	for i := range 20 {
		if rec := post(r, request("a", "b", "c", string(rune('d'+i))), nil); rec.Code != 204 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	waitFor(t, "80 series upstream", func() bool { return len(up.received()) == 80 })
	for _, s := range up.received() {
		want := []remotewrite.Label{s.Labels[0], {Name: "cluster", Value: "test"}, {Name: "job", Value: "node"}}
		if len(s.Labels) != 3 || s.Labels[1] != want[1] || s.Labels[2] != want[2] {
			t.Fatalf("labels %v, want %v", s.Labels, want)
		}
	}
	if got := names(up.received()); got["a"] != 20 || got["d"] != 1 {
		t.Fatalf("series counts %v", got)
	}
	req := up.requests[0]
	for k, v := range map[string]string{
		"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
		"X-Prometheus-Remote-Write-Version": "0.1.0", "Authorization": "Bearer s3cret", "X-Tenant": "t1",
	} {
		if got := req.Header.Get(k); got != v {
			t.Errorf("upstream header %s = %q, want %q", k, got, v)
		}
	}
	if ua := req.Header.Get("User-Agent"); !strings.HasPrefix(ua, "agent-relay/") {
		t.Errorf("User-Agent %q", ua)
	}
	waitFor(t, "stats to settle", func() bool {
		st := r.Stats().Upstreams[0]
		return st.SamplesForwarded == 80 && st.QueueEntries == 0 && st.State == "ok"
	})
	if n := testutil.ToFloat64(r.m.received); n != 80 {
		t.Fatalf("received metric %v, want 80", n)
	}
}

func TestRetriesUntilUpstreamRecovers(t *testing.T) {
	up := newFakeManager(t)
	up.respond = func(n int, _ *remotewrite.WriteRequest) (int, http.Header) {
		if n < 6 {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusNoContent, nil
	}
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.Concurrency = 1
	r, _ := running(t, cfg)
	if rec := post(r, request("x", "y"), nil); rec.Code != 204 {
		t.Fatalf("status %d", rec.Code)
	}
	waitFor(t, "delivery after failures", func() bool { return len(up.received()) == 2 })
	if n := testutil.ToFloat64(r.m.retries.WithLabelValues(up.URL)); n != 6 {
		t.Fatalf("retries %v, want 6", n)
	}
	if n := testutil.ToFloat64(r.m.responses.WithLabelValues(up.URL, "503")); n != 6 {
		t.Fatalf("503 responses %v, want 6", n)
	}
	waitFor(t, "state ok", func() bool {
		st := r.Stats().Upstreams[0]
		return st.State == "ok" && st.SamplesForwarded == 2
	})
	if st := r.Stats().Upstreams[0]; !strings.Contains(st.LastError, "503") {
		t.Fatalf("stats %+v, want the last error to name the 503", st)
	}
}

func TestStatsShowFailingUpstream(t *testing.T) {
	up := newFakeManager(t)
	up.respond = func(int, *remotewrite.WriteRequest) (int, http.Header) { return http.StatusBadGateway, nil }
	r, _ := running(t, testConfig(t.TempDir(), up.URL))
	post(r, request("x"), nil)
	waitFor(t, "state failing", func() bool { return r.Stats().Upstreams[0].State == "failing" })
	st := r.Stats().Upstreams[0]
	if st.QueueEntries != 1 || st.QueueSamples != 1 || st.QueueBytes == 0 || st.OldestEntryAgeSeconds < 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHonoursRetryAfter(t *testing.T) {
	up := newFakeManager(t)
	var times []time.Time
	up.respond = func(n int, _ *remotewrite.WriteRequest) (int, http.Header) {
		times = append(times, time.Now())
		if n == 0 {
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"1"}}
		}
		return http.StatusNoContent, nil
	}
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.Concurrency = 1
	r, _ := running(t, cfg)
	post(r, request("x"), nil)
	waitFor(t, "delivery after 429", func() bool { return len(up.received()) == 1 })
	up.mu.Lock()
	gap := times[1].Sub(times[0])
	up.mu.Unlock()
	if gap < 900*time.Millisecond {
		t.Fatalf("retried %v after a 429 with Retry-After: 1 (max_backoff is 20ms)", gap)
	}
}

// poisonUpstream is a fake manager that rejects with 400 any request
// holding a series named "poison" and accepts the rest.
func poisonUpstream(t *testing.T) *fakeManager {
	up := newFakeManager(t)
	up.respond = func(_ int, wr *remotewrite.WriteRequest) (int, http.Header) {
		for _, s := range wr.Timeseries {
			if s.Labels[0].Value == "poison" {
				return http.StatusBadRequest, nil
			}
		}
		return http.StatusNoContent, nil
	}
	return up
}

func TestDropsBatchUpstreamRejects(t *testing.T) {
	up := poisonUpstream(t)
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.Concurrency = 1
	r, _ := running(t, cfg)
	post(r, request("poison", "poison"), nil)
	waitFor(t, "poison sent", func() bool { return up.requestCount() == 1 })
	post(r, request("good"), nil)
	waitFor(t, "good delivered", func() bool { return len(up.received()) == 1 })
	if n := up.requestCount(); n != 2 {
		t.Fatalf("%d upstream requests, want 2 (a rejected batch is not retried)", n)
	}
	waitFor(t, "stats: 2 dropped, 1 forwarded", func() bool {
		st := r.Stats().Upstreams[0]
		return st.SamplesDropped == 2 && st.SamplesForwarded == 1
	})
	if n := testutil.ToFloat64(r.m.dropped.WithLabelValues(up.URL, reasonRejected)); n != 2 {
		t.Fatalf("dropped %v, want 2", n)
	}
}

func TestRestartDeliversWhatWasAcknowledged(t *testing.T) {
	up := newFakeManager(t) // down until the restart
	up.respond = func(int, *remotewrite.WriteRequest) (int, http.Header) {
		return http.StatusServiceUnavailable, nil
	}
	other := newFakeManager(t) // a second upstream that is up: fan-out
	cfg := testConfig(t.TempDir(), up.URL, other.URL)
	r, stop := running(t, cfg)
	for range 10 {
		if rec := post(r, request("a", "b", "c"), nil); rec.Code != 204 {
			t.Fatalf("status %d", rec.Code)
		}
	}
	waitFor(t, "healthy upstream gets everything", func() bool { return len(other.received()) == 30 })
	// Delivery is at least once: a batch the upstream took but whose answer
	// the relay had not yet acknowledged when it stopped is sent again. Stop
	// only once the healthy upstream's cursor has caught up.
	waitFor(t, "healthy upstream acknowledged", func() bool { return r.Stats().Upstreams[1].QueueEntries == 0 })
	stop()

	// The upstream comes back at the same address. Closing the one that was
	// down first waits for requests still in its handlers (the relay gave
	// up on them when it stopped), so none of them is answered 204.
	addr := up.Listener.Addr().String()
	up.Close()
	up = newFakeManagerAt(t, addr)
	r, _ = running(t, cfg)
	waitFor(t, "redelivery after restart", func() bool { return len(up.received()) >= 30 })
	if got := names(up.received()); got["a"] != 10 || got["c"] != 10 {
		t.Fatalf("after restart upstream got %v", got)
	}
	if n := len(other.received()); n != 30 {
		t.Fatalf("healthy upstream got %d series after restart, want 30 (no resend of acknowledged data)", n)
	}
	waitFor(t, "queue drained", func() bool { return r.Stats().Upstreams[0].QueueEntries == 0 })
}

// A full disk, with nothing the queue may drop, gets 500 with the reason,
// so the sender retries; nothing the relay acknowledged is lost, and it
// takes requests again once there is space.
func TestFullDiskAnswers500UntilSpaceIsBack(t *testing.T) {
	disk := tmpfs.Mount(t, 4<<20)
	up, bringUp := newDownManager(t)
	cfg := testConfig(filepath.Join(disk, "queue"), up.URL)
	cfg.QueueMinFreeBytes = 0 // else the queue would drop what it holds to leave room
	r, _ := running(t, cfg)
	for range 10 {
		if rec := post(r, request("a", "b"), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	filler := filepath.Join(disk, "other")
	tmpfs.Fill(t, filler, tmpfs.Free(t, disk))
	// What is left of the segment's last page still takes a few requests.
	acked := 0
	rec := post(r, request("x"), nil)
	for ; rec.Code == http.StatusNoContent && acked < 1000; rec = post(r, request("x"), nil) {
		acked++
	}
	var answer struct{ Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &answer); rec.Code != http.StatusInternalServerError || err != nil || !strings.Contains(answer.Error, "no space left on device") {
		t.Fatalf("on a full disk, after %d requests taken: %d %s, want 500 with the reason in JSON", acked, rec.Code, rec.Body)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if rec := post(r, request("c"), nil); rec.Code != http.StatusNoContent {
		t.Fatalf("once there is space: %d %s, want 204", rec.Code, rec.Body)
	}
	bringUp()
	poll.Until(t, 10*time.Second, func() bool { return r.Stats().Upstreams[0].QueueEntries == 0 && len(up.received()) >= 21+acked },
		"everything acknowledged delivered (%d x): upstream has %v, relay %+v", acked, poll.Latest(func() any { return names(up.received()) }), poll.Latest(func() any { return r.Stats().Upstreams[0] }))
	if got := names(up.received()); got["a"] != 10 || got["b"] != 10 || got["c"] != 1 || got["x"] != acked {
		t.Fatalf("upstream got %v, want a and b 10 times, c once, x %d times (the refused request not)", got, acked)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cfg := testConfig(t.TempDir())
	if _, err := New(cfg, slog.New(slog.DiscardHandler), nil); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("no upstream: err %v", err)
	}
	cfg = testConfig(t.TempDir(), "ftp://x")
	if _, err := New(cfg, slog.New(slog.DiscardHandler), nil); err == nil || !strings.Contains(err.Error(), `relay.upstream[0]`) {
		t.Fatalf("bad upstream: err %v", err)
	}
}

// TestRejectedBatchIsNotResent: a batch the upstream answers 400 is
// dropped whole and counted; none of it is sent again, not even record by
// record (the upstream may have stored part of it, and the spec forbids a
// retry on 4xx). The next batch is one record, so that a run of bad records
// costs little, and batches grow back after that.
func TestRejectedBatchIsNotResent(t *testing.T) {
	up := poisonUpstream(t)
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.Concurrency = 1
	// The forwarder waits for a full batch (3 samples): the two requests
	// below become one upstream request.
	cfg.MaxSamplesPerSend, cfg.FlushDeadline = 3, time.Minute
	r, _ := running(t, cfg)
	post(r, request("poison", "poison"), nil)
	post(r, request("good"), nil)
	waitFor(t, "the batch refused", func() bool { return r.Stats().Upstreams[0].SamplesDropped == 3 })
	for _, name := range []string{"after1", "after2", "after3"} {
		post(r, request(name), nil)
	}
	waitFor(t, "later data delivered", func() bool { return len(up.received()) == 3 })
	if n := up.requestCount(); n != 3 {
		t.Fatalf("%d upstream requests, want 3: the refused batch once, then [after1], [after2 after3]", n)
	}
	up.mu.Lock()
	first, second := len(up.accepted[0]), len(up.accepted[1])
	up.mu.Unlock()
	if first != 1 || second != 2 {
		t.Fatalf("batches after the refusal hold %d and %d series, want 1 then 2", first, second)
	}
	if got := names(up.received()); got["good"] != 0 {
		t.Fatalf("the refused batch was sent again in part: %v", got)
	}
	waitFor(t, "stats: 3 dropped, 3 forwarded, nothing queued", func() bool {
		st := r.Stats().Upstreams[0]
		return st.SamplesDropped == 3 && st.SamplesForwarded == 3 && st.QueueEntries == 0
	})
	if n := testutil.ToFloat64(r.m.dropped.WithLabelValues(up.URL, reasonRejected)); n != 3 {
		t.Fatalf("relay_samples_dropped_total{reason=upstream_rejected} %v, want 3", n)
	}
}

// TestQueueWithOneSeriesEmptiesOnceDelivered: a relay that carries one
// series (so all but one of its shards get nothing) must free its queue as
// it delivers: relay_queue_bytes back to zero, the queue on disk down to
// nothing, and no "queue full" although the data is several times
// queue_max_bytes (posted as the queue has room).
func TestQueueWithOneSeriesEmptiesOnceDelivered(t *testing.T) {
	up := newFakeManager(t)
	cfg := testConfig(t.TempDir(), up.URL)
	cfg.Concurrency = 4
	cfg.MaxRequestBytes = 64 << 10
	cfg.QueueMaxBytes = 128 << 10 // sealed every 16 KiB
	var logs logbuf.Buffer
	r, _ := runningWith(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	const requests, perRequest = 100, 200
	for i := range requests {
		var wr remotewrite.WriteRequest
		for j := range perRequest {
			n := i*perRequest + j
			wr.Timeseries = append(wr.Timeseries, remotewrite.TimeSeries{
				Labels: []remotewrite.Label{{Name: "__name__", Value: "only_series"}, {Name: "job", Value: "node"}},
				// Values that do not compress: the queue sees ~2 KiB per request.
				Samples: []remotewrite.Sample{{Value: math.Float64frombits(uint64(n) * 0x9e3779b97f4a7c15), Timestamp: int64(n)}},
			})
		}
		// Post only while the queue has room for four more segments: it is
		// delivery that must free it (with a shard that has no series, no
		// segment was ever freed), whatever the pace of delivery on a busy
		// machine.
		waitFor(t, "room in the queue", func() bool { return r.Stats().QueueBytes+4*(16<<10) <= cfg.QueueMaxBytes })
		if rec := post(r, remotewrite.Encode(nil, wr.Append(nil)), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	if got := testutil.ToFloat64(r.m.received); got != requests*perRequest {
		t.Fatalf("received %v samples", got)
	}
	waitFor(t, "everything delivered, relay_queue_bytes 0 and the queue on disk empty", func() bool {
		st := r.Stats()
		return st.Upstreams[0].SamplesForwarded == requests*perRequest && st.Upstreams[0].QueueBytes == 0 && st.QueueBytes == 0
	})
	if strings.Contains(logs.String(), "queue full") {
		t.Fatalf("the queue dropped delivered data:\n%s", logs.String())
	}
	if n := testutil.ToFloat64(r.m.dropped.WithLabelValues(up.URL, reasonQueueFull)); n != 0 {
		t.Fatalf("%v samples dropped", n)
	}
	last := int64(-1)
	for _, s := range up.received() {
		if s.Samples[0].Timestamp != last+1 {
			t.Fatalf("sample %d after %d", s.Samples[0].Timestamp, last)
		}
		last = s.Samples[0].Timestamp
	}
}

// A request its sender gave up on (Prometheus timed out and will resend,
// or stopped) gets 503 and is no warning: nothing of the relay failed.
func TestCancelledRequestIsNoWarning(t *testing.T) {
	var logs logbuf.Buffer
	r, _ := runningWith(t, testConfig(t.TempDir(), newFakeManager(t).URL), slog.New(slog.NewTextHandler(&logs, nil)), nil)
	for range cap(r.sem) { // every decoding slot taken: a request waits
		r.sem <- struct{}{}
	}
	defer func() {
		for range cap(r.sem) {
			<-r.sem
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(request("x"))).WithContext(ctx)
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", rec.Code, rec.Body)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a request its sender cancelled was logged as a warning:\n%s", logs.String())
	}
}
