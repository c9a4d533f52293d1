package relay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/process/processtest"
	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

// TestEndToEndPrometheus3 runs, on 127.0.0.1:
//
//	node_exporter, test target <-scrape- Prometheus 3 (A) -remote-write 2.0-> relay -> Prometheus 3 (B3)
//	                                                                                 \-> Prometheus 2.42 (B2)
//
// The target serves native histograms, a classic histogram that A turns
// into one with custom buckets, and UTF-8 metric and label names. A runs
// the config the cluster stack renders for Prometheus 3. Both upstreams
// have the default protocol (auto): B3 takes 2.0; B2, which predates 2.0,
// reads a 2.0 request as an empty 1.0 one and answers 204, and the relay
// must notice and send it 1.0. Every sample, histogram and name A scraped
// in a window must be in both, bit for bit (read back over remote read),
// except custom-bucket histograms in B2: Prometheus 2.42 predates them (it
// accepts them and drops their bounds).
func TestEndToEndPrometheus3(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	prom3 := processtest.Testbin(t, "prometheus3", "prometheus")
	prom2 := needBinary(t, "prometheus")
	nodeExporter := needBinary(t, "prometheus-node-exporter")

	nePort, aPort, b3Port, b2Port, relayPort := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	startProcess(t, "node-exporter", nodeExporter, fmt.Sprintf("--web.listen-address=127.0.0.1:%d", nePort), "--no-collector.systemd")
	target := startTarget(t)

	receiver := "global:\n  scrape_interval: 1m\n"
	startPrometheusBin(t, prom3, "b3", receiver, t.TempDir(), b3Port)
	startPrometheusBin(t, prom2, "b2", receiver, t.TempDir(), b2Port, "--enable-feature=native-histograms")

	cfg := stackconfig.DefaultRelay.WithAgentDefaults("e2e", t.TempDir())
	cfg.Upstream = stackconfig.Upstreams(fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", b3Port), fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", b2Port))
	cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	cfg.FlushDeadline = 200 * time.Millisecond
	rs := serveRelay(t, cfg, fmt.Sprintf("127.0.0.1:%d", relayPort))

	// A: the cluster stack's config for Prometheus 3, scraping every
	// second, turning classic histograms into custom-bucket ones.
	sdDir := t.TempDir()
	sd := fmt.Sprintf(`[{"targets":["127.0.0.1:%d"],"labels":{"job":"node"}},{"targets":[%q],"labels":{"job":"target"}}]`, nePort, target)
	if err := os.WriteFile(filepath.Join(sdDir, "targets.json"), []byte(sd), 0o600); err != nil {
		t.Fatal(err)
	}
	rendered, err := stackconfig.RenderPrometheus(stackconfig.PrometheusInput{
		ScrapeInterval: time.Second, ScrapeTimeout: 900 * time.Millisecond, EvaluationInterval: time.Second,
		ExternalLabels: model.LabelSet{"cluster": "e2e"}, SDDir: sdDir, SDRefreshInterval: time.Second,
		Listen: fmt.Sprintf("127.0.0.1:%d", aPort), RemoteWriteURL: fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", relayPort),
		Major: 3, NativeHistograms: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var aCfg map[string]any
	if err := yaml.Unmarshal(rendered, &aCfg); err != nil {
		t.Fatal(err)
	}
	aCfg["global"].(map[string]any)["convert_classic_histograms_to_nhcb"] = true
	q := aCfg["remote_write"].([]any)[0].(map[string]any)["queue_config"].(map[string]any)
	q["batch_send_deadline"], q["min_backoff"], q["max_backoff"] = "500ms", "50ms", "500ms"
	aYAML, _ := yaml.Marshal(aCfg)
	startPrometheusBin(t, prom3, "a", string(aYAML), t.TempDir(), aPort)

	// Wait until both upstreams have the target's native histograms.
	matchers := [][3]string{{"=~", "job", "node|target"}}
	waitLong(t, "native histograms in both upstreams", func() bool {
		for _, port := range []int{b3Port, b2Port} {
			if len(queryHistograms(t, port, `{__name__="rpc.server.duration"}`, time.Now(), time.Minute)) == 0 {
				return false
			}
		}
		return true
	}, rs)
	from := time.Now()
	time.Sleep(10 * time.Second) // the window compared: 10 s of scrapes every second
	to := time.Now()
	// Everything A scraped up to to is delivered once the upstreams have
	// samples of the target from after it.
	waitLong(t, "the window delivered to both", func() bool {
		for _, port := range []int{b3Port, b2Port} {
			got := remoteRead(t, port, to, time.Now(), [][3]string{{"=", "__name__", "process.runtime.ratio"}})
			if len(got) == 0 || len(got[0].Samples) == 0 {
				return false
			}
		}
		return true
	}, rs)

	// Float samples are compared by remote read (value bits), histograms
	// over the query API (Prometheus 2.42's remote read has none; the API
	// writes every number so that it reads back to the same bits).
	fromA := remoteRead(t, aPort, from, to, matchers)
	window := to.Sub(from).Truncate(time.Second)
	histA := queryHistograms(t, aPort, `{job=~"node|target"}`, to, window)
	checked := map[string]int{}
	for _, up := range []struct {
		name string
		port int
		nhcb bool
	}{{"Prometheus 3 (2.0)", b3Port, true}, {"Prometheus 2.42 (1.0)", b2Port, false}} {
		got := map[string]remotewrite.TimeSeries{}
		for _, ts := range remoteRead(t, up.port, from, to, matchers) {
			got[seriesKey(ts.Labels)] = ts
		}
		series, samples, histograms := 0, 0, 0
		for _, a := range fromA {
			if !up.nhcb && slices.ContainsFunc(a.Histograms, func(h remotewrite.Histogram) bool { return h.Schema == -53 }) {
				continue
			}
			labels := a.Labels // remote read adds A's external labels: cluster=e2e
			b, ok := got[seriesKey(labels)]
			if !ok {
				t.Errorf("%s: series %v missing", up.name, labels)
				continue
			}
			if d := diffSamples(a, b); d != "" {
				t.Errorf("%s: series %v: %s", up.name, labels, d)
			}
			series, samples = series+1, samples+len(a.Samples)
		}
		histB := queryHistograms(t, up.port, `{job=~"node|target"}`, to, window)
		for key, ha := range histA {
			if !up.nhcb && strings.Contains(key, `"__name__"="legacy_request_seconds"`) {
				continue // custom buckets: Prometheus 2.42 predates them
			}
			keyB := strings.Replace(key, `"instance"=`, `"cluster"="e2e","instance"=`, 1)
			if hb := histB[keyB]; !slices.Equal(ha, hb) {
				t.Errorf("%s: histograms of %s differ:\n A %v\n B %v", up.name, key, ha, hb)
			}
			histograms += len(ha)
		}
		t.Logf("%s: %d series, %d float samples, %d histogram samples compared", up.name, series, samples, histograms)
		checked[up.name+" histograms"] = histograms
		checked[up.name+" samples"] = samples
	}
	for k, n := range checked {
		if n < 10 {
			t.Errorf("only %d %s compared", n, k)
		}
	}
	names := map[string]bool{}
	for _, a := range fromA {
		for _, l := range a.Labels {
			names[l.Name] = true
			if l.Name == "__name__" {
				names[l.Value] = true
			}
		}
	}
	for _, n := range []string{"rpc.server.duration", "service.name", "legacy_request_seconds", "node_cpu_seconds_total"} {
		if !names[n] {
			t.Errorf("A has no %q: the test did not test it", n)
		}
	}
	st := rs.r.Stats()
	if st.Upstreams[0].SendingV2 != "2.0" || st.Upstreams[1].SendingV2 != "1.0" {
		t.Errorf("versions sent: %+v; want 2.0 to Prometheus 3 and 1.0 to Prometheus 2.42", st.Upstreams)
	}
	if st.Upstreams[0].SamplesDropped+st.Upstreams[1].SamplesDropped != 0 {
		t.Errorf("samples dropped: %+v", st.Upstreams)
	}
}

// waitLong is waitFor with the patience a loaded machine needs for
// scrapes, remote-write batches and retries.
func waitLong(t *testing.T, what string, cond func() bool, rs *relayServer) {
	t.Helper()
	poll.Until(t, 90*time.Second, cond, "%s; relay stats %+v", what, poll.Latest(func() any { return rs.r.Stats() }))
}

// startTarget serves metrics with UTF-8 names, a native histogram and a
// classic one, which change every 50 ms until the test ends.
func startTarget(t *testing.T) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	native := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "rpc.server.duration", Help: "RPC latency (OpenTelemetry name).", ConstLabels: prometheus.Labels{"service.name": "api"},
		NativeHistogramBucketFactor: 1.1, NativeHistogramZeroThreshold: 1e-6, Buckets: []float64{},
	}, []string{"rpc.method"})
	classic := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "legacy_request_seconds", Help: "A classic histogram.", Buckets: []float64{0.01, 0.1, 0.5, 1, 5},
	})
	ratio := prometheus.NewGauge(prometheus.GaugeOpts{Name: "process.runtime.ratio", Help: "Any float, bit for bit."})
	reg.MustRegister(native, classic, ratio)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Prometheus 3.16 asks for protobuf (the only format with native
		// histograms here) without escaping=allow-utf-8, so client_golang
		// would escape the names to underscores. The target serves them as
		// they are, as an OpenTelemetry SDK's exporter does.
		r.Header.Set("Accept", strings.Replace(r.Header.Get("Accept"), "encoding=delimited", "encoding=delimited;escaping=allow-utf-8", 1))
		h.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		rnd := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			v := rnd.ExpFloat64() / 10
			native.WithLabelValues([]string{"Get", "Put"}[rnd.IntN(2)]).Observe(v)
			native.WithLabelValues("Get").Observe(-v) // negative buckets too
			classic.Observe(v)
			ratio.Set(math.Float64frombits(rnd.Uint64() &^ (0x7ff << 52) >> 1)) // small, denormal, odd bits; never NaN
		}
	})
	t.Cleanup(func() { close(stop); wg.Wait(); _ = srv.Close() })
	return l.Addr().String()
}

// remoteRead reads raw samples and histograms of the series matching
// matchers (op, name, value) from the Prometheus on port, over its remote
// read API: what the TSDB holds, bit for bit.
func remoteRead(t *testing.T, port int, from, to time.Time, matchers [][3]string) []remotewrite.TimeSeries {
	t.Helper()
	var query []byte
	query = protowire.AppendTag(query, 1, protowire.VarintType)
	query = protowire.AppendVarint(query, uint64(from.UnixMilli()))
	query = protowire.AppendTag(query, 2, protowire.VarintType)
	query = protowire.AppendVarint(query, uint64(to.UnixMilli()))
	for _, m := range matchers {
		var mb []byte
		mb = protowire.AppendTag(mb, 1, protowire.VarintType)
		mb = protowire.AppendVarint(mb, map[string]uint64{"=": 0, "!=": 1, "=~": 2, "!~": 3}[m[0]])
		mb = protowire.AppendTag(mb, 2, protowire.BytesType)
		mb = protowire.AppendString(mb, m[1])
		mb = protowire.AppendTag(mb, 3, protowire.BytesType)
		mb = protowire.AppendString(mb, m[2])
		query = protowire.AppendTag(query, 3, protowire.BytesType)
		query = protowire.AppendBytes(query, mb)
	}
	req := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), query)
	hr, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/api/v1/read", port), bytes.NewReader(remotewrite.Encode(nil, req)))
	hr.Header.Set("Content-Type", "application/x-protobuf")
	hr.Header.Set("Content-Encoding", "snappy")
	hr.Header.Set("X-Prometheus-Remote-Read-Version", "0.1.0")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Logf("remote read from :%d: HTTP %d: %s", port, resp.StatusCode, body)
		return nil
	}
	dec, err := remotewrite.Decode(nil, body, 256<<20)
	if err != nil {
		t.Fatalf("remote read: %v", err)
	}
	var out []remotewrite.TimeSeries
	for b := dec; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if num == 1 && typ == protowire.BytesType {
			// A QueryResult holds its series as field 1, as a WriteRequest.
			qr, _ := protowire.ConsumeBytes(b[n:])
			wr, err := remotewrite.Unmarshal(qr)
			if err != nil {
				t.Fatalf("remote read: %v", err)
			}
			out = append(out, wr.Timeseries...)
		}
		b = b[n+m:]
	}
	return out
}

func seriesKey(ls []remotewrite.Label) string {
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "%q=%q,", l.Name, l.Value)
	}
	return b.String()
}

// diffSamples says how b differs from a: float samples by timestamp and
// value bits, histograms by timestamp and everything they count.
func diffSamples(a, b remotewrite.TimeSeries) string {
	type sample struct {
		ts   int64
		bits uint64
	}
	fs := func(ss []remotewrite.Sample) []sample {
		var out []sample
		for _, s := range ss {
			out = append(out, sample{s.Timestamp, math.Float64bits(s.Value)})
		}
		return out
	}
	if sa, sb := fs(a.Samples), fs(b.Samples); !slices.Equal(sa, sb) {
		return fmt.Sprintf("samples differ:\n A %v\n B %v", sa, sb)
	}
	return ""
}

// queryHistograms returns the histogram samples of the series sel selects
// in (at-window, at], by series (sorted labels, as seriesKey), each as the
// query API writes it: timestamp, count, sum and every bucket's bounds and
// count.
func queryHistograms(t *testing.T, port int, sel string, at time.Time, window time.Duration) map[string][]string {
	t.Helper()
	u := fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s&time=%.3f", port,
		url.QueryEscape(fmt.Sprintf("%s[%ds]", sel, int(window.Seconds()))), float64(at.UnixMilli())/1000)
	resp, err := http.Get(u)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Metric     map[string]string
				Histograms [][2]json.RawMessage
			}
		}
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		return nil
	}
	out := map[string][]string{}
	for _, s := range r.Data.Result {
		if len(s.Histograms) == 0 {
			continue
		}
		var ls []remotewrite.Label
		for k, v := range s.Metric {
			ls = append(ls, remotewrite.Label{Name: k, Value: v})
		}
		slices.SortFunc(ls, func(a, b remotewrite.Label) int { return strings.Compare(a.Name, b.Name) })
		for _, h := range s.Histograms {
			out[seriesKey(ls)] = append(out[seriesKey(ls)], string(h[0])+" "+string(h[1]))
		}
	}
	return out
}
