package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/freeaddr"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/stackconfig"
)

// The end-to-end test runs real binaries on 127.0.0.1:
//
//	node_exporter <-scrape- Prometheus A -remote_write-> relay -> Prometheus B (remote-write receiver)
//
// Run it with: go test -race -run EndToEnd ./master/relay/ (make test runs it).

func needBinary(t *testing.T, name string) string {
	t.Helper()
	return etcdtest.RequireBinary(t, name, "prometheus prometheus-node-exporter")
}

// freePort is a loopback port reserved for the test (freeaddr.Reserve):
// the processes it is handed to bind it seconds later.
func freePort(t *testing.T) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(freeaddr.Reserve(t))
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// process is a started binary, stopped by stop or at the end of the test.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProcess(t *testing.T, logName string, bin string, args ...string) *process {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), logName+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s log:\n%s", logName, tail(b, 3000))
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func startPrometheus(t *testing.T, name, config, dataDir string, port int) *process {
	t.Helper()
	return startPrometheusBin(t, needBinary(t, "prometheus"), name, config, dataDir, port)
}

// startPrometheusBin runs Prometheus binary bin as a remote-write receiver
// (and whatever config says), with flags added, until it is ready.
func startPrometheusBin(t *testing.T, bin, name, config, dataDir string, port int, flags ...string) *process {
	t.Helper()
	cfgFile := filepath.Join(t.TempDir(), name+".yml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, "prometheus-"+name, bin, append([]string{
		"--config.file=" + cfgFile, "--storage.tsdb.path=" + dataDir,
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port),
		"--web.enable-remote-write-receiver", "--web.enable-lifecycle"}, flags...)...)
	waitFor(t, name+" ready", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/-/ready", port))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// rawSamples returns the timestamps (ms) of the samples of the one series
// query selects over the last window.
func rawSamples(t *testing.T, port int, query string, at time.Time) []int64 {
	t.Helper()
	u := fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s&time=%d", port, url.QueryEscape(query), at.Unix())
	resp, err := http.Get(u)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Metric map[string]string
				Values [][2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Data.Result) != 1 {
		return nil
	}
	var out []int64
	for _, v := range r.Data.Result[0].Values {
		out = append(out, int64(v[0].(float64)*1000))
	}
	return out
}

// relayServer runs a relay on addr until stop.
type relayServer struct {
	r    *Relay
	stop func()
}

func serveRelay(t *testing.T, cfg stackconfig.Relay, addr string) *relayServer {
	t.Helper()
	r, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	waitFor(t, "relay port free", func() bool { l, err = net.Listen("tcp", addr); return err == nil })
	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/write", r)
	srv := &http.Server{Handler: mux}
	ctx, cancel := context.WithCancel(context.Background())
	runDone, srvDone := make(chan error, 1), make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	go func() { srvDone <- srv.Serve(l) }()
	stopped := false
	s := &relayServer{r: r}
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = srv.Close()
		cancel()
		if err := <-runDone; err != nil {
			t.Error(err)
		}
		if err := <-srvDone; !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	}
	t.Cleanup(s.stop)
	return s
}

func TestEndToEndWithPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	needBinary(t, "prometheus")
	nodeExporter := needBinary(t, "prometheus-node-exporter")

	nePort, aPort, bPort, relayPort := freePort(t), freePort(t), freePort(t), freePort(t)
	startProcess(t, "node-exporter", nodeExporter, fmt.Sprintf("--web.listen-address=127.0.0.1:%d", nePort), "--no-collector.systemd")

	bDir := t.TempDir()
	bConfig := "global:\n  scrape_interval: 1m\n"
	b := startPrometheus(t, "b", bConfig, bDir, bPort)

	relayAddr := fmt.Sprintf("127.0.0.1:%d", relayPort)
	cfg := stackconfig.DefaultRelay.WithAgentDefaults("e2e", t.TempDir())
	cfg.Upstream = stackconfig.Upstreams(fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", bPort))
	cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	cfg.FlushDeadline = 200 * time.Millisecond
	rs := serveRelay(t, cfg, relayAddr)

	aConfig := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: node
    static_configs: [{targets: ["127.0.0.1:%d"]}]
remote_write:
  - url: http://%s/api/v1/write
    queue_config: {batch_send_deadline: 500ms, min_backoff: 50ms, max_backoff: 500ms}
`, nePort, relayAddr)
	startPrometheus(t, "a", aConfig, t.TempDir(), aPort)

	const aQuery, bQuery = `up{job="node"}[10m]`, `up{job="node",cluster="e2e"}[10m]`
	eventually := func(what string, cond func() bool) {
		t.Helper()
		poll.Until(t, 60*time.Second, cond, "%s; relay stats %+v", what, poll.Latest(func() any { return rs.r.Stats() }))
	}
	eventually("A's series in B with the external label", func() bool { return len(rawSamples(t, bPort, bQuery, time.Now())) >= 5 })
	firstInB := rawSamples(t, bPort, bQuery, time.Now())[0]

	// Outage: B stops, A keeps scraping and writing to the relay.
	b.stop()
	outage := time.Now()
	eventually("the relay to queue for the dead upstream", func() bool {
		st := rs.r.Stats().Upstreams[0]
		return st.State != "ok" && st.QueueEntries > 0
	})
	eventually("A to scrape during the outage", func() bool {
		ts := rawSamples(t, aPort, aQuery, time.Now())
		return len(ts) > 0 && ts[len(ts)-1] > outage.Add(5*time.Second).UnixMilli()
	})
	// The relay restarts from its queue during the outage.
	rs.stop()
	rs = serveRelay(t, cfg, relayAddr)
	eventually("A to write to the new relay", func() bool { return rs.r.Stats().Upstreams[0].QueueEntries > 0 })

	// B comes back on the same port and data dir.
	startPrometheus(t, "b", bConfig, bDir, bPort)
	end := time.Now()
	eventually("the relay to drain", func() bool {
		ts := rawSamples(t, bPort, bQuery, time.Now())
		return len(ts) > 0 && ts[len(ts)-1] >= end.UnixMilli() && rs.r.Stats().Upstreams[0].QueueEntries == 0
	})

	// No gap: every sample A scraped between B's first one and end is in B.
	at := time.Now()
	inB := map[int64]bool{}
	for _, ts := range rawSamples(t, bPort, bQuery, at) {
		inB[ts] = true
	}
	checked, inOutage := 0, 0
	for _, ts := range rawSamples(t, aPort, aQuery, at) {
		if ts < firstInB || ts > end.UnixMilli() {
			continue
		}
		checked++
		if ts > outage.UnixMilli() {
			inOutage++
		}
		if !inB[ts] {
			t.Errorf("sample at %s (%d ms) scraped by A is missing in B (outage began %s)", time.UnixMilli(ts).Format(time.RFC3339Nano), ts, outage.Format(time.RFC3339Nano))
		}
	}
	if checked < 10 || inOutage < 5 {
		t.Fatalf("only %d samples compared, %d of them from the outage", checked, inOutage)
	}
	t.Logf("compared %d samples (%d from the outage) across a %s outage of B and a relay restart: none missing; relay stats %+v", checked, inOutage, end.Sub(outage).Round(time.Second), rs.r.Stats())
}

// TestKillNineKeepsAcknowledgedData runs the relay as its own process
// (relayload -serve), kills it with SIGKILL while its upstream is down, and
// checks that a new process on the same queue delivers every acknowledged
// sample.
func TestKillNineKeepsAcknowledgedData(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	bin := filepath.Join(t.TempDir(), "relayload")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/agentproj/agent/cmd/relayload").CombinedOutput(); err != nil {
		t.Fatalf("build relayload: %v\n%s", err, out)
	}
	up, bringUp := newDownManager(t)
	queueDir, port := t.TempDir(), freePort(t)
	serve := func() *process {
		p := startProcess(t, "relay", bin, "-serve", fmt.Sprintf("127.0.0.1:%d", port), "-queue-dir", queueDir, "-upstream", up.URL)
		waitFor(t, "relay listening", func() bool {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		return p
	}
	p := serve()
	acked := 0
	for i := range 50 {
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", port), bytes.NewReader(request(fmt.Sprintf("s%d", i), "x")))
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", "application/x-protobuf")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNoContent {
			acked += 2
		}
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	bringUp()
	serve()
	waitFor(t, "every acknowledged sample upstream", func() bool { return len(up.received()) >= acked })
	got := names(up.received())
	for i := range 50 {
		if got[fmt.Sprintf("s%d", i)] == 0 {
			t.Errorf("series s%d acknowledged but never delivered", i)
		}
	}
	if acked != 100 {
		t.Fatalf("only %d of 100 samples acknowledged", acked)
	}
}
