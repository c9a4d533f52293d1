package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// startInfluxDB runs the Debian influxd on loopback with its data under a
// temporary folder, creates database db and returns its base URL.
func startInfluxDB(t *testing.T, db string) string {
	t.Helper()
	bin := requireBinary(t, "influxd", "influxdb")
	dir := t.TempDir()
	httpAddr := etcdtest.FreeAddr(t)
	conf := fmt.Sprintf(`reporting-disabled = true
bind-address = %q
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
[http]
  bind-address = %q
  log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
`, etcdtest.FreeAddr(t), filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpAddr)
	cfg := filepath.Join(dir, "influxdb.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, "influxd", bin, "-config", cfg)
	base := "http://" + httpAddr
	etcdtest.Eventually(t, 30*time.Second, func() bool { return httpCode(base+"/ping") == http.StatusNoContent }, "influxd not up at %s", base)
	resp, err := http.PostForm(base+"/query", url.Values{"q": {"CREATE DATABASE " + db}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("create database: %v %v", resp, err)
	}
	resp.Body.Close()
	return base
}

// influxValue runs an InfluxQL query that selects one value and returns
// it; -1 when there is none yet.
func influxValue(base, db, q string) float64 {
	resp, err := http.Get(base + "/query?" + url.Values{"db": {db}, "q": {q}}.Encode())
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var body struct {
		Results []struct {
			Series []struct {
				Values [][]any `json:"values"`
			} `json:"series"`
		} `json:"results"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil || len(body.Results) == 0 || len(body.Results[0].Series) == 0 ||
		len(body.Results[0].Series[0].Values) == 0 || len(body.Results[0].Series[0].Values[0]) < 2 {
		return -1
	}
	v, _ := body.Results[0].Series[0].Values[0][1].(float64)
	return v
}

// promSeries returns the label sets of an instant query's result.
func promSeries(prom, q string) []map[string]string {
	resp, err := http.Get(prom + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	var out []map[string]string
	for _, r := range body.Data.Result {
		out = append(out, r.Metric)
	}
	return out
}

// The node monitor end to end: an agent measures a busy process picked by
// its pidfile; the master's Prometheus scrapes the monitor as job
// agent-monitor and evaluates the roll-ups; the relay forwards everything
// to a manager Prometheus and to an InfluxDB 1.x, where the process's CPU
// is queried with InfluxQL.
func TestMonitorSeriesReachManagerAndInfluxDB(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	endpoint := startEtcd(t)
	manager := startPrometheus(t, "manager", "global: {scrape_interval: 1m}\n", "--web.enable-remote-write-receiver")
	influx := startInfluxDB(t, "agent")

	dir := t.TempDir()
	busy := startProc(t, "busy", "/bin/sh", "-c", "while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.1; done")
	pidfile := filepath.Join(dir, "busy.pid")
	if err := os.WriteFile(pidfile, []byte(strconv.Itoa(busy.cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := etcdtest.FreeAddr(t)
	cfg := filepath.Join(dir, "agent.toml")
	toml := fmt.Sprintf(`
[stack.prometheus]
listen = %q
scrape_interval = "1s"
scrape_timeout = "1s"
evaluation_interval = "1s"
file_sd_refresh_interval = "1s"
[stack.node_exporter]
enabled = false
[relay]
upstream = [%q, %q]
flush_deadline = "100ms"
[monitor]
interval = "1s"
containers = false
[[monitor.processes]]
name = "busy"
pidfile = %q
guid = "shop-1"
`, prom, manager+"/api/v1/write", influx+"/api/v1/prom/write?db=agent", pidfile)
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	t.Cleanup(func() { removeProcesses(t, dataDir) })
	a := startAgentIn(t, endpoint, "m1", "2s", dataDir, "--config", cfg, "--driver", "process")
	etcdtest.Eventually(t, 20*time.Second, a.ready, "agent not ready")

	// The agent serves the group itself.
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + a.api + "/metrics/monitor")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `namedprocess_namegroup_up{group="busy",guid="shop-1",ip="",service=""} 1`)
	}, "GET /metrics/monitor does not show the busy group up")

	// Scraped by the master's Prometheus, relayed to the manager with
	// node, cluster and guid.
	sel := `namedprocess_namegroup_cpu_seconds_total{job="agent-monitor",node="m1",cluster="e2e",group="busy",guid="shop-1",mode="user"}`
	etcdtest.Eventually(t, 60*time.Second, func() bool { return query(manager, sel+" > 0") == 1 },
		"the busy group's CPU did not reach the manager")
	// The roll-up, evaluated on the master and relayed too.
	etcdtest.Eventually(t, 60*time.Second, func() bool { return query(manager, `guid:cpu_cores:rate{cluster="e2e",guid="shop-1"} > 0`) == 1 },
		"the guid roll-up did not reach the manager")
	// No label of the monitor clashed with a target label.
	for _, m := range promSeries(manager, `{job="agent-monitor"}`) {
		for k := range m {
			if strings.HasPrefix(k, "exported_") {
				t.Fatalf("a monitor series has %s: %v", k, m)
			}
		}
	}

	// InfluxDB took the same remote-write: the CPU is there for InfluxQL.
	q := `SELECT last("value") FROM "namedprocess_namegroup_cpu_seconds_total" WHERE "group" = 'busy' AND "mode" = 'user' AND "node" = 'm1' AND "guid" = 'shop-1'`
	var cpu float64
	etcdtest.Eventually(t, 60*time.Second, func() bool { cpu = influxValue(influx, "agent", q); return cpu > 0 },
		"the busy group's CPU is not in InfluxDB")
	t.Logf("InfluxQL %s = %v", q, cpu)
	// A gone process: its group is down, and the series that vanish with
	// it (its start time) get Prometheus' stale markers, NaN values that
	// InfluxDB must not refuse (a refused batch would be dropped whole).
	busy.kill()
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		return query(manager, `namedprocess_namegroup_up{node="m1",group="busy"} == 0`) == 1 &&
			query(manager, `namedprocess_namegroup_oldest_start_time_seconds{node="m1",group="busy"}`) == 0
	}, "the gone process is not down at the manager")
	upq := `SELECT last("value") FROM "namedprocess_namegroup_up" WHERE "group" = 'busy' AND "node" = 'm1'`
	etcdtest.Eventually(t, 60*time.Second, func() bool { return influxValue(influx, "agent", upq) == 0 },
		"the gone process is not down in InfluxDB")
	// InfluxDB answers 204, and the relay lost nothing on the way.
	resp, err := http.Get("http://" + a.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var accepted bool
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "/api/v1/prom/write?db=agent") {
			continue
		}
		if strings.HasPrefix(line, "relay_upstream_requests_total") && strings.Contains(line, `code="204"`) {
			accepted = true
		}
		if strings.HasPrefix(line, "relay_upstream_requests_total") && !strings.Contains(line, `code="204"`) {
			t.Errorf("InfluxDB answered other than 204: %s", line)
		}
		if strings.HasPrefix(line, "relay_samples_dropped_total") && !strings.HasSuffix(line, " 0") {
			t.Errorf("the relay dropped samples for InfluxDB: %s", line)
		}
	}
	if !accepted {
		t.Errorf("no 204 from InfluxDB in the relay's metrics:\n%s", b)
	}

	a.signal(syscall.SIGTERM)
	if code, err := a.wait(20 * time.Second); err != nil || code != 0 {
		t.Fatalf("agent exit %d, %v", code, err)
	}
}

// A bad selector stops the agent at start, with exit code 2 and the field
// and value, like every configuration error.
func TestBadMonitorSelectorStopsTheAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the agent")
	}
	cfg := filepath.Join(t.TempDir(), "agent.toml")
	toml := "[[monitor.processes]]\nname = \"app\"\ncmdline = \"java (\"\n"
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "agent-bad", agentBinary(t), "join", "--node", "n1", "--data-dir", t.TempDir(), "--config", cfg,
		"--listen", etcdtest.FreeAddr(t), "--driver", "none")
	code, err := p.wait(30 * time.Second)
	if err != nil || code != 2 {
		t.Fatalf("exit %d, %v; want 2", code, err)
	}
	if log := readFile(t, p.log); !strings.Contains(log, `monitor.processes[0].cmdline: invalid regular expression "java ("`) {
		t.Fatalf("the error does not name the field and value:\n%s", log)
	}
}
