package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// SIGTERM of a master that runs Prometheus with the process driver and the
// relay: the cluster stack stops first, while the relay still answers, so
// Prometheus flushes its remote-write and exits by itself; nothing is
// SIGKILLed, and the agent exits 0.
func TestCleanStopLetsPrometheusFlush(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireBinary(t, "prometheus-node-exporter", "prometheus-node-exporter")
	endpoint := startEtcd(t)
	manager := startPrometheus(t, "manager", "global: {scrape_interval: 1m}\n", "--web.enable-remote-write-receiver")
	a := startStackAgent(t, endpoint, "s1", manager, t.TempDir())
	etcdtest.Eventually(t, 30*time.Second, a.ready, "agent not ready")
	// Prometheus is running and remote-writing through the relay.
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		return query(manager, `node_exporter_build_info{cluster="e2e"}`) == 1
	}, "nothing relayed to the manager")

	a.signal(syscall.SIGTERM)
	start := time.Now()
	code, err := a.wait(60 * time.Second)
	took := time.Since(start)
	if err != nil || code != 0 {
		t.Fatalf("agent after SIGTERM: exit %d, %v", code, err)
	}
	t.Logf("clean stop of the master took %s (the driver's kill timeout is 10s)", took)

	log := readFile(t, a.log)
	if strings.Contains(log, "ignored SIGTERM") {
		t.Fatalf("a workload had to be SIGKILLed:\n%s", log)
	}
	stopped := regexp.MustCompile(`msg="process stopped".* name=agent-prometheus-s1 .*exit_code=(\d+)`).FindStringSubmatch(log)
	if stopped == nil || stopped[1] != "0" {
		t.Fatalf("Prometheus did not exit with status 0 (%v):\n%s", stopped, log)
	}
	promLog := readFile(t, filepath.Join(a.dataDir, "processes", "agent-prometheus-s1.log"))
	if !strings.Contains(promLog, "See you next time!") {
		t.Fatalf("Prometheus did not shut down cleanly:\n%s", promLog)
	}
}
