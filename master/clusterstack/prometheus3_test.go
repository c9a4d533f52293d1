package clusterstack

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/process"
	"github.com/agentproj/agent/drivers/process/processtest"
	"github.com/agentproj/agent/master/relay"
	"github.com/agentproj/agent/stackconfig"
)

// TestStackRunsPrometheus3 (issue 15): with stack.prometheus.binary a
// Prometheus 3, the term finds its version from the binary, renders a
// config asking for remote-write 2.0, and that Prometheus writes 2.0 into
// a real relay.
func TestStackRunsPrometheus3(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	bin := processtest.Testbin(t, "prometheus3", "prometheus")
	d, err := process.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(up.Close)
	rcfg := stackconfig.DefaultRelay.WithAgentDefaults("c1", t.TempDir())
	rcfg.Upstream = stackconfig.Upstreams(up.URL)
	reg := prometheus.NewRegistry()
	rel, err := relay.New(rcfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rel, ReadHeaderTimeout: 5 * time.Second}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- rel.Run(rctx) }()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close(); rcancel(); <-rdone })

	cfg := testConfig(t)
	cfg.Driver = process.DriverName
	cfg.Stack.Jaeger.Enabled = false
	cfg.Stack.Prometheus.Binary = bin
	cfg.Stack.Prometheus.Listen = etcdtest.FreeAddr(t)
	cfg.Stack.Prometheus.ScrapeInterval, cfg.Stack.Prometheus.ScrapeTimeout = time.Second, time.Second
	cfg.RelayURL = "http://" + l.Addr().String() + "/api/v1/write"
	s, err := New(cfg, d, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, etcd.Leader{}) }()
	defer func() { cancel(); <-done }()

	url := "http://" + cfg.Stack.Prometheus.Listen
	etcdtest.Eventually(t, 30*time.Second, func() bool { return processtest.HTTPGet(url+"/-/ready") != "" }, "Prometheus 3 not ready")
	if c := processtest.HTTPGet(url + "/api/v1/status/config"); !strings.Contains(c, "protobuf_message: io.prometheus.write.v2.Request") {
		t.Fatalf("Prometheus 3 runs a config without remote-write 2.0:\n%s", c)
	}
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		n, _ := testutil.GatherAndCount(reg, "relay_write_requests_total")
		return n > 0 && counter(reg, `relay_write_requests_total{code="204",protocol="2.0"}`) > 0
	}, "Prometheus 3 did not write 2.0 into the relay")
}

// counter reads one series of a counter from reg, by its text form.
func counter(reg *prometheus.Registry, series string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var b strings.Builder
			b.WriteString(mf.GetName())
			b.WriteString("{")
			for i, l := range m.GetLabel() {
				if i > 0 {
					b.WriteString(",")
				}
				b.WriteString(l.GetName() + `="` + l.GetValue() + `"`)
			}
			b.WriteString("}")
			if b.String() == series && m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
