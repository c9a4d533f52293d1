package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// Two agents publish real node_exporters. One Prometheus discovers them
// through the master's file_sd directory, another through /sd/http of the
// surviving agent. Both scrape them as healthy; kill -9 one agent and its
// target leaves both.
func TestPrometheusDiscoversTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	endpoint := startEtcd(t)
	sdDir := t.TempDir() // one directory: a failover must hand it over cleanly
	agents := map[string]*agentProc{}
	for _, node := range []string{"a", "b"} {
		exporter := startNodeExporter(t)
		cfg := filepath.Join(t.TempDir(), "agent.toml")
		// The test runs its own node_exporters; the stack's would be a third,
		// and the node monitor's target (job agent-monitor) another job.
		toml := fmt.Sprintf("[[exporters]]\njob = \"node\"\naddress = %q\nlabels = { rack = \"r-%s\" }\n[stack.node_exporter]\nenabled = false\n[monitor]\nenabled = false\n", exporter, node)
		if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
		agents[node] = startAgent(t, endpoint, node, "2s", "--config", cfg, "--sd-dir", sdDir)
	}
	for _, a := range agents {
		etcdtest.Eventually(t, 20*time.Second, a.ready, "agent %s not ready", a.node)
	}
	fileSD := startPrometheus(t, "prometheus-file-sd", fmt.Sprintf(`
global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
  - job_name: agent-targets
    file_sd_configs: [{files: [%q], refresh_interval: 1s}]
`, filepath.Join(sdDir, "*.json")))
	httpSD := startPrometheus(t, "prometheus-http-sd", fmt.Sprintf(`
global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
  - job_name: agent-targets
    http_sd_configs: [{url: "http://%s/sd/http?job=node", refresh_interval: 1s}]
`, agents["b"].api))

	healthy := func(prom string, want ...string) func() bool {
		return func() bool {
			var nodes []string
			for _, tg := range activeTargets(t, prom) {
				if tg.Health != "up" || tg.Labels["job"] != "node" || tg.Labels["rack"] != "r-"+tg.Labels["node"] || tg.Labels["cluster"] != "e2e" {
					return false
				}
				nodes = append(nodes, tg.Labels["node"])
			}
			sort.Strings(nodes)
			return strings.Join(nodes, ",") == strings.Join(want, ",")
		}
	}
	for name, prom := range map[string]string{"file_sd": fileSD, "http_sd": httpSD} {
		etcdtest.Eventually(t, 30*time.Second, healthy(prom, "a", "b"), "%s: Prometheus does not scrape both node_exporters as healthy: %+v", name, activeTargets(t, prom))
	}

	agents["a"].kill()
	for name, prom := range map[string]string{"file_sd": fileSD, "http_sd": httpSD} {
		etcdtest.Eventually(t, 30*time.Second, healthy(prom, "b"), "%s: agent a's target did not leave: %+v", name, activeTargets(t, prom))
	}
}
