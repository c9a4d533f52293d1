package slave

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/stackconfig"
)

// answer is one HTTP answer of a test request.
type answer struct {
	code   int
	header http.Header
	body   string
}

func (a answer) jsonError(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if a.header.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(a.body), &e) != nil || e.Error == "" {
		t.Fatalf("answer %d is not a JSON error: Content-Type %q, body %q", a.code, a.header.Get("Content-Type"), a.body)
	}
	return e.Error
}

func do(t *testing.T, method, url string, header map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	// DisableCompression: the test sees the bytes the agent sends.
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, header: resp.Header, body: string(body)}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	a := do(t, http.MethodGet, url, nil)
	return a.code, a.body
}

// serveAPI runs the node API of n with the read endpoints on a Snapshot of
// cli (for agents of the given lease TTL), until the test ends, and
// returns its base URL.
func serveAPI(t *testing.T, n *Node, cli *clientv3.Client, reg *prometheus.Registry, ttl time.Duration) (string, *Snapshot) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testLogOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	api, err := NewAPI("127.0.0.1:0", nil, n, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	snap := NewSnapshot(cli, SnapshotConfig{Keys: testKeys, Cluster: "test", TTL: ttl}, log.With("component", "snapshot"), reg)
	api.HandleSnapshot(snap)
	api.Handle("POST /api/v1/write", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := api.Run(ctx); err != nil {
			t.Errorf("api.Run: %v", err)
		}
	})
	wg.Go(func() {
		if err := snap.Run(ctx); err != nil {
			t.Errorf("snapshot.Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	base := "http://" + api.Addr()
	etcdtest.Eventually(t, 10*time.Second, func() bool { code, _ := get(t, base+"/api/v1/status"); return code == 200 }, "no snapshot")
	return base, snap
}

func TestAPI(t *testing.T) {
	srv := etcdtest.Start(t)
	px := srv.Proxy()
	cli := srv.ClientVia(px.Endpoint())
	n := startNodeWith(t, cli, "n1", nil)
	base, _ := serveAPI(t, n.Node, cli, n.reg, nodeConfig("").TTL)

	if code, _ := get(t, base+"/-/healthy"); code != 200 {
		t.Fatalf("/-/healthy = %d", code)
	}
	etcdtest.Eventually(t, 5*time.Second, func() bool { code, _ := get(t, base+"/-/ready"); return code == 200 }, "never ready")
	etcdtest.Eventually(t, 5*time.Second, n.Master, "never master")

	var view etcd.ClusterView
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		code, body := get(t, base+"/api/v1/status")
		view = etcd.ClusterView{}
		return code == 200 && json.Unmarshal([]byte(body), &view) == nil && view.Master != nil && view.Master.Since != nil
	}, "status never showed the master")
	if view.Cluster != "test" || view.Master.Node != "n1" || len(view.Members) != 1 || !view.Members[0].Master || view.Stale {
		t.Fatalf("status: %+v", view)
	}
	code, body := get(t, base+"/metrics")
	for _, want := range []string{"agent_is_master 1", "agent_session_up 1", "agent_elections_won_total 1", `agent_build_info{goversion=`, "agent_api_snapshot_stale 0"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q", want)
		}
	}

	// etcd unreachable: not ready, and the status says why, as JSON.
	px.Cut()
	etcdtest.Eventually(t, 5*time.Second, func() bool { code, _ := get(t, base+"/-/ready"); return code == 503 }, "still ready with etcd cut off")
	if msg := do(t, "GET", base+"/-/ready", nil).jsonError(t); !strings.Contains(msg, "not joined") {
		t.Fatalf("/-/ready 503 says %q", msg)
	}
	if code, _ := get(t, base+"/-/healthy"); code != 200 {
		t.Fatalf("/-/healthy = %d during an etcd outage; the process is alive", code)
	}
	px.Restore()
	etcdtest.Eventually(t, 10*time.Second, func() bool { code, _ := get(t, base+"/-/ready"); return code == 200 }, "not ready again after etcd came back")
}

// TestErrorsAreJSON: what no route serves is a JSON error too, with the
// right status, not ServeMux's plain text.
func TestErrorsAreJSON(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	n := startNodeWith(t, cli, "n1", nil)
	base, _ := serveAPI(t, n.Node, cli, n.reg, nodeConfig("").TTL)
	for _, tc := range []struct {
		method, path string
		code         int
		msg, allow   string
	}{
		{"GET", "/api/v1/nope", 404, "no such endpoint: GET /api/v1/nope", ""},
		{"GET", "/", 404, "no such endpoint", ""},
		{"POST", "/-/ready", 405, "method POST not allowed on /-/ready; allowed: GET, HEAD", "GET, HEAD"},
		{"GET", "/api/v1/write", 405, "method GET not allowed on /api/v1/write; allowed: POST", "POST"},
		{"DELETE", "/sd/http", 405, "allowed: GET, HEAD", "GET, HEAD"},
	} {
		a := do(t, tc.method, base+tc.path, nil)
		if msg := a.jsonError(t); a.code != tc.code || !strings.Contains(msg, tc.msg) || a.header.Get("Allow") != tc.allow {
			t.Errorf("%s %s = %d %q (Allow %q), want %d with %q (Allow %q)", tc.method, tc.path, a.code, msg, a.header.Get("Allow"), tc.code, tc.msg, tc.allow)
		}
	}
}

func TestHTTPSDAndTargetsAPI(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	n := startNodeWith(t, cli, "n1", nil)
	base, _ := serveAPI(t, n.Node, cli, n.reg, nodeConfig("").TTL)

	// Empty: always a list, never null.
	if code, body := get(t, base+"/sd/http"); code != 200 || body != "[]\n" {
		t.Fatalf("empty /sd/http = %d %q", code, body)
	}
	for key, value := range map[string]string{
		testKeys.Target("n1", "node", "0"): `{"targets":["127.0.0.1:9100"],"labels":{"node":"n1"}}`,
		testKeys.Target("n2", "node", "0"): `{"targets":["127.0.0.2:9100"],"labels":{"node":"n2"}}`,
		testKeys.Target("n1", "app", "0"):  `{"targets":["127.0.0.1:8080"],"labels":{"node":"n1"}}`,
		testKeys.Target("n3", "node", "0"): `not json`,
		testKeys.Target("n3", "node", "1"): `{"targets":["no-port"]}`,
		testKeys.Targets() + "too/short":   `{"targets":["127.0.0.9:1"]}`,
	} {
		if _, err := cli.Put(context.Background(), key, value); err != nil {
			t.Fatal(err)
		}
	}
	var groups []etcd.TargetGroup
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		a := do(t, "GET", base+"/sd/http?job=node", nil)
		groups = nil
		return a.code == 200 && a.header.Get("Content-Type") == "application/json" && json.Unmarshal([]byte(a.body), &groups) == nil && len(groups) == 2
	}, "/sd/http?job=node never had 2 groups")
	if groups[0].Targets[0] != "127.0.0.1:9100" || groups[1].Labels["job"] != "node" {
		t.Fatalf("/sd/http?job=node = %+v", groups)
	}
	// The groups the master writes to file_sd, in the same format, ordered
	// by job, node and id.
	set, err := etcd.Registry{KV: cli, Keys: testKeys}.Targets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	code, body := get(t, base+"/sd/http")
	groups = nil
	if err := json.Unmarshal([]byte(body), &groups); code != 200 || err != nil || !reflect.DeepEqual(groups, etcd.Groups(set.Targets)) {
		t.Fatalf("/sd/http = %d\n%s\nwant the groups of\n%+v", code, body, set.Targets)
	}
	if frag := stackconfig.GroupJSON(set.Targets[0].Group()); !strings.Contains(body, string(frag)) {
		t.Fatalf("/sd/http is not in the file_sd format: %s lacks\n%s", body, frag)
	}
	if code, body := get(t, base+"/sd/http?job=nope"); code != 200 || body != "[]\n" {
		t.Fatalf("/sd/http?job=nope = %d %q", code, body)
	}
	code, body = get(t, base+"/api/v1/targets")
	var got etcd.TargetSet
	if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil {
		t.Fatalf("/api/v1/targets = %d %s", code, body)
	}
	if len(got.Targets) != 3 || got.Targets[0].Job != "app" || len(got.Skipped) != 3 || got.Revision == 0 {
		t.Fatalf("/api/v1/targets: %d targets (first job %q), %d skipped: %s", len(got.Targets), got.Targets[0].Job, len(got.Skipped), body)
	}
	var view etcd.ClusterView
	if _, body := get(t, base+"/api/v1/status"); json.Unmarshal([]byte(body), &view) != nil || view.Targets != 6 {
		t.Fatalf("status counts %d target keys, want 6: %s", view.Targets, body)
	}
}

// TestReadEndpointsDoNotReadEtcdPerRequest: the read endpoints answer from
// the snapshot; etcd serves no range request per HTTP request, and many
// concurrent requests share one rendering.
func TestReadEndpointsDoNotReadEtcdPerRequest(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	n := startNodeWith(t, cli, "n1", nil)
	for i := range 50 {
		if _, err := cli.Put(context.Background(), testKeys.Target(fmt.Sprintf("n%d", i), "node", "0"), fmt.Sprintf(`{"targets":["127.0.0.%d:9100"]}`, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	base, snap := serveAPI(t, n.Node, cli, n.reg, nodeConfig("").TTL)
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		_, body := get(t, base+"/sd/http")
		return strings.Count(body, `"targets"`) == 50
	}, "targets never served")

	const requests = 100
	before, start := etcdRanges(t), time.Now()
	renders := testutil.ToFloat64(snap.m.renders.WithLabelValues("sd_http"))
	gens := snap.targetGen()
	var wg sync.WaitGroup
	for range requests {
		for _, path := range []string{"/sd/http", "/api/v1/status", "/api/v1/targets"} {
			wg.Go(func() {
				if code, _ := get(t, base+path); code != 200 {
					t.Errorf("GET %s = %d", path, code)
				}
			})
		}
	}
	wg.Wait()
	// Only the snapshot's heartbeats (etcd.Heartbeats, one a third of the
	// silence that marks etcd away) and the node's own reads may reach etcd
	// meanwhile.
	beats := float64(time.Since(start) / snap.heartbeat)
	if ranges := etcdRanges(t) - before; ranges > 10+beats {
		t.Fatalf("%d HTTP requests made etcd serve %v range requests; want the snapshot to answer them", 3*requests, ranges)
	}
	// One rendering per generation of the target set and variant at most
	// (these requests take the plain body, which is rendered apart from
	// the gzip one; a loaded machine may see a heartbeat fail, which
	// changes the answers' stale mark; the generation current when
	// counting began may not have been rendered yet), never one per
	// request.
	if got, changes := testutil.ToFloat64(snap.m.renders.WithLabelValues("sd_http"))-renders, snap.targetGen()-gens; got > float64(2*(changes+1)) {
		t.Fatalf("/sd/http rendered %v times for %d requests over %d changes of the snapshot; want at most two per change", got, requests, changes)
	}
}

// targetGen is the generation of the snapshot's target set.
func (s *Snapshot) targetGen() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tgen
}

// etcdRanges is the embedded etcd's count of range requests served, from
// the default registry its server registers on.
func etcdRanges(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "etcd_mvcc_range_total" {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatal("etcd_mvcc_range_total is not registered by the embedded etcd")
	return 0
}

// TestReadEndpointsETagAndGzip: pollers that send If-None-Match get 304
// until the answer changes; clients that accept gzip get it compressed.
func TestReadEndpointsETagAndGzip(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	n := startNodeWith(t, cli, "n1", nil)
	for i := range 20 {
		if _, err := cli.Put(context.Background(), testKeys.Target("n1", "node", fmt.Sprint(i)), fmt.Sprintf(`{"targets":["127.0.0.%d:9100"],"labels":{"rack":"r1"}}`, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	base, _ := serveAPI(t, n.Node, cli, n.reg, nodeConfig("").TTL)
	var first answer
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		first = do(t, "GET", base+"/sd/http", nil)
		return strings.Count(first.body, `"targets"`) == 20
	}, "targets never served")
	etag := first.header.Get("ETag")
	if etag == "" || first.header.Get("Content-Encoding") != "" {
		t.Fatalf("first answer: ETag %q, Content-Encoding %q", etag, first.header.Get("Content-Encoding"))
	}
	for _, path := range []string{"/sd/http", "/api/v1/targets", "/api/v1/status"} {
		a := do(t, "GET", base+path, nil)
		if nm := do(t, "GET", base+path, map[string]string{"If-None-Match": a.header.Get("ETag")}); nm.code != http.StatusNotModified || nm.body != "" {
			t.Fatalf("GET %s with its ETag = %d %q, want 304 without a body", path, nm.code, nm.body)
		}
	}
	if a := do(t, "GET", base+"/sd/http", map[string]string{"If-None-Match": `"other", W/` + etag}); a.code != http.StatusNotModified {
		t.Fatalf("weak ETag in a list = %d, want 304", a.code)
	}

	gz := do(t, "GET", base+"/sd/http", map[string]string{"Accept-Encoding": "br;q=1, gzip;q=0.5"})
	if gz.header.Get("Content-Encoding") != "gzip" || len(gz.body) >= len(first.body) {
		t.Fatalf("gzip answer: Content-Encoding %q, %d bytes (identity %d)", gz.header.Get("Content-Encoding"), len(gz.body), len(first.body))
	}
	zr, err := gzip.NewReader(strings.NewReader(gz.body))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if !bytes.Equal(plain, []byte(first.body)) {
		t.Fatal("gzip answer does not decompress to the identity answer")
	}
	if a := do(t, "GET", base+"/sd/http", map[string]string{"Accept-Encoding": "gzip;q=0"}); a.header.Get("Content-Encoding") != "" {
		t.Fatal("gzip;q=0 got gzip")
	}

	// A change: the old ETag no longer matches.
	if _, err := cli.Put(context.Background(), testKeys.Target("n2", "node", "0"), `{"targets":["127.0.0.99:9100"]}`); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		a := do(t, "GET", base+"/sd/http", map[string]string{"If-None-Match": etag})
		return a.code == 200 && strings.Contains(a.body, "127.0.0.99:9100") && a.header.Get("ETag") != etag
	}, "a changed target set still answered 304 or the old body")
}

// TestReadEndpointsAnswerDuringEtcdOutage: with etcd unreachable the read
// endpoints answer 200 with the last snapshot, and say it is stale.
func TestReadEndpointsAnswerDuringEtcdOutage(t *testing.T) {
	srv := etcdtest.Start(t)
	px := srv.Proxy()
	cli := srv.ClientVia(px.Endpoint())
	n := startNodeWith(t, srv.Client(), "n1", nil)
	if _, err := srv.Client().Put(context.Background(), testKeys.Target("n1", "node", "0"), `{"targets":["127.0.0.1:9100"]}`); err != nil {
		t.Fatal(err)
	}
	base, _ := serveAPI(t, n.Node, cli, n.reg, nodeConfig("").TTL)
	etcdtest.Eventually(t, 5*time.Second, func() bool { _, body := get(t, base+"/sd/http"); return strings.Contains(body, "127.0.0.1:9100") }, "target never served")
	_, sdBefore := get(t, base+"/sd/http")
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		_, body := get(t, base+"/api/v1/status")
		var v etcd.ClusterView
		return json.Unmarshal([]byte(body), &v) == nil && len(v.Members) == 1
	}, "member never in the status")

	px.Cut()
	var view etcd.ClusterView
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		code, body := get(t, base+"/api/v1/status")
		view = etcd.ClusterView{}
		return code == 200 && json.Unmarshal([]byte(body), &view) == nil && view.Stale
	}, "status never said stale with etcd cut off")
	if view.StaleSince == nil || len(view.Members) != 1 || view.Targets != 1 {
		t.Fatalf("stale status lost the last view: %+v", view)
	}
	sd := do(t, "GET", base+"/sd/http", nil)
	if sd.code != 200 || sd.body != sdBefore || sd.header.Get("X-Agent-Stale-Since") == "" {
		t.Fatalf("/sd/http during the outage = %d (X-Agent-Stale-Since %q) %q, want 200 with the last targets %q", sd.code, sd.header.Get("X-Agent-Stale-Since"), sd.body, sdBefore)
	}
	var listing TargetListing
	if a := do(t, "GET", base+"/api/v1/targets", nil); a.code != 200 || json.Unmarshal([]byte(a.body), &listing) != nil || !listing.Stale || len(listing.Targets) != 1 {
		t.Fatalf("/api/v1/targets during the outage = %d %s", a.code, a.body)
	}

	px.Restore()
	etcdtest.Eventually(t, 15*time.Second, func() bool {
		a := do(t, "GET", base+"/sd/http", nil)
		return a.code == 200 && a.header.Get("X-Agent-Stale-Since") == ""
	}, "still stale after etcd came back")
}

// TestHTTPSDKeepsTargetsThroughEtcdOutage (issue 9 item 6): an outage long
// enough for every lease to expire must not empty /sd/http. A node that
// re-registers is never missing; a node that died during the outage leaves
// once the nodes had the hold (etcd.RemovalHold, as the master's file_sd)
// to re-register; in normal times a node that leaves goes at once.
func TestHTTPSDKeepsTargetsThroughEtcdOutage(t *testing.T) {
	ttl := nodeConfig("").TTL
	hold := etcd.HoldFor(ttl)
	srv := etcdtest.Start(t)
	px := srv.Proxy()
	// The API agent, a live node and a node that dies all reach etcd through
	// the proxy: cutting it is an etcd outage for all of them.
	n1 := startNodeWith(t, srv.ClientVia(px.Endpoint()), "n1", nil)
	base, _ := serveAPI(t, n1.Node, srv.ClientVia(px.Endpoint()), n1.reg, ttl)
	n2 := startPublishingNode(t, srv.ClientVia(px.Endpoint()), "n2", "127.0.0.2:9100")

	dying := srv.ClientVia(px.Endpoint())
	lease, err := dying.Grant(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dying.Put(context.Background(), testKeys.Target("n3", "node", "0"), `{"targets":["127.0.0.3:9100"]}`, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	kctx, stopKeepAlive := context.WithCancel(context.Background())
	defer stopKeepAlive()
	if _, err := dying.KeepAlive(kctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		_, body := get(t, base+"/sd/http")
		return strings.Contains(body, "127.0.0.2:9100") && strings.Contains(body, "127.0.0.3:9100")
	}, "targets of n2 and n3 never served")

	// Poll /sd/http through the outage and the recovery.
	type sample struct {
		at         time.Time
		code       int
		stale      bool
		n2, n3     bool
		groupCount int
	}
	var (
		mu      sync.Mutex
		samples []sample
	)
	pctx, stopPolling := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for pctx.Err() == nil {
			a := do(t, "GET", base+"/sd/http", nil)
			mu.Lock()
			samples = append(samples, sample{
				at: time.Now(), code: a.code, stale: a.header.Get("X-Agent-Stale-Since") != "",
				n2: strings.Contains(a.body, "127.0.0.2:9100"), n3: strings.Contains(a.body, "127.0.0.3:9100"),
				groupCount: strings.Count(a.body, `"targets"`),
			})
			mu.Unlock()
			time.Sleep(25 * time.Millisecond)
		}
	})
	defer func() { stopPolling(); wg.Wait() }()

	// An outage longer than the 2 s TTL: every lease expires meanwhile,
	// and n3 never comes back.
	px.Cut()
	stopKeepAlive()
	etcdtest.Eventually(t, 15*time.Second, func() bool {
		resp, err := srv.Client().Get(context.Background(), testKeys.Targets(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		mu.Lock()
		stale := len(samples) > 0 && samples[len(samples)-1].stale
		mu.Unlock()
		return err == nil && resp.Count == 0 && stale
	}, "leases did not expire, or the agent did not notice the outage")
	px.Restore()

	// n3 leaves within the hold (plus the watch and poll latency) of the
	// agent hearing from etcd again.
	etcdtest.Eventually(t, hold+15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(samples) > 0 && !samples[len(samples)-1].n3 && !samples[len(samples)-1].stale
	}, "n3, dead since the outage, still served")
	stopPolling()
	wg.Wait()

	var cut, fresh, gone time.Time
	for i, s := range samples {
		if s.code != 200 || !s.n2 {
			for _, s := range samples[max(0, i-5):min(len(samples), i+5)] {
				t.Logf("%s %+v", s.at.Format("15:04:05.000"), s)
			}
			t.Fatalf("sample %d at %s: code %d, n2 served %v (%d groups): n2 went missing", i, s.at.Format("15:04:05.000"), s.code, s.n2, s.groupCount)
		}
		switch {
		case s.stale && cut.IsZero():
			cut = s.at
		case !s.stale && !cut.IsZero() && fresh.IsZero():
			fresh = s.at
		}
		if !s.n3 && gone.IsZero() {
			gone = s.at
		}
	}
	if cut.IsZero() || fresh.IsZero() {
		t.Fatalf("the answers never said stale during the outage (stale from %v, fresh again %v)", cut, fresh)
	}
	if held := gone.Sub(fresh); held < hold-500*time.Millisecond || held > hold+2*time.Second {
		t.Fatalf("n3 left %s after etcd was back, want about the hold %s", held, hold)
	}
	t.Logf("stale from %s, fresh at %s, n3 gone %s later", cut.Format("15:04:05.000"), fresh.Format("15:04:05.000"), gone.Sub(fresh))

	// In normal times a node that leaves goes at once.
	left := time.Now()
	if err := n2.stop(t); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 3*time.Second, func() bool { _, body := get(t, base+"/sd/http"); return !strings.Contains(body, "127.0.0.2:9100") }, "n2 still served after it left")
	t.Logf("n2 gone %s after it left", time.Since(left))
}

// startPublishingNode runs a Node with a TargetPublisher of one exporter.
func startPublishingNode(t *testing.T, cli *clientv3.Client, name, target string) *testNode {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(testLogOut, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	pub := NewTargetPublisher(name, testKeys, cli, log, reg)
	pub.Set("exporters", map[string]etcd.TargetGroup{"node/0": {Targets: []string{target}}})
	n := NewNode(NodeConfig{Node: name, API: "127.0.0.1:1", Version: "test", TTL: 2 * time.Second, Keys: testKeys},
		cli, nil, []SessionWorker{pub}, log, reg)
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{Node: n, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { tn.done <- n.Run(ctx) }()
	t.Cleanup(func() { tn.stop(t) })
	return tn
}

// A listen address in use is an error a user can act on: it names the
// setting and the cause, without the internals of the net package or a
// package prefix.
func TestAPIListenErrorNamesTheSetting(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	_, err = NewAPI(addr, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if want := "listen: cannot listen on " + addr + ": address already in use"; err == nil || err.Error() != want {
		t.Fatalf("NewAPI on a busy address: %v, want %q", err, want)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("%v does not wrap EADDRINUSE", err)
	}
}
