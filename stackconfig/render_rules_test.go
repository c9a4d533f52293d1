package stackconfig

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/process/processtest"
)

func TestRenderRulesGolden(t *testing.T) {
	b, err := RenderRules(RulesInput{ScrapeInterval: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "monitor.rules.yml.golden", b)
	// A slow scrape widens the window to four scrapes.
	b, err = RenderRules(RulesInput{ScrapeInterval: time.Minute})
	if err != nil || !strings.Contains(string(b), "[4m])") || strings.Contains(string(b), "[1m])") {
		t.Fatalf("window for a 1m scrape: %v\n%s", err, b)
	}
	if _, err := RenderRules(RulesInput{}); err == nil || !strings.Contains(err.Error(), "render rules: scrape_interval: must be > 0") {
		t.Fatalf("zero scrape interval: %v", err)
	}
}

// The real promtool checks the rules, loads them through prometheus.yml's
// rule_files, and runs unit tests of what they compute.
func TestRenderRulesPromtool(t *testing.T) {
	promtool := processtest.LookPath(t, "promtool", "apt-get install prometheus")
	dir := t.TempDir()
	rules, err := RenderRules(RulesInput{ScrapeInterval: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	in := testPrometheusInput()
	in.SDDir = filepath.Join(dir, "sd")
	in.RuleFiles = []string{filepath.Join(dir, RulesFile)}
	cfg, err := RenderPrometheus(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "rule_files:\n  - "+in.RuleFiles[0]) {
		t.Fatalf("prometheus.yml does not load the rules:\n%s", cfg)
	}
	for name, b := range map[string][]byte{RulesFile: rules, "prometheus.yml": cfg, "rules_test.yml": []byte(rulesUnitTest)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"check", "rules", filepath.Join(dir, RulesFile)},
		{"check", "config", filepath.Join(dir, "prometheus.yml")},
		{"test", "rules", filepath.Join(dir, "rules_test.yml")},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Fatalf("promtool %s: %v\n%s\n%s", strings.Join(args[:2], " "), err, out, rules)
		}
	}
}

// rulesUnitTest feeds a node with a guid app in a container, a process
// group of the same guid, and a container and group without one; and two
// Kubernetes nodes with the pods of a guid namespace (a Deployment of two
// pods, one per node, and a StatefulSet), a DaemonSet's pod in a namespace
// without a guid and a bare pod.
const rulesUnitTest = `
rule_files: [monitor.rules.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      # 0.5 cores, 100 MB, 1000 B/s written, 200 B/s received
      - series: 'container_cpu_usage_seconds_total{job="agent-monitor",cluster="c",node="n1",name="shop",guid="shop-1"}'
        values: '0+7.5x8'
      - series: 'container_memory_working_set_bytes{job="agent-monitor",cluster="c",node="n1",name="shop",guid="shop-1"}'
        values: '100000000x8'
      - series: 'container_fs_writes_bytes_total{job="agent-monitor",cluster="c",node="n1",name="shop",guid="shop-1"}'
        values: '0+15000x8'
      - series: 'container_network_receive_bytes_total{job="agent-monitor",cluster="c",node="n1",name="shop",guid="shop-1"}'
        values: '0+3000x8'
      - series: 'container_up{job="agent-monitor",cluster="c",node="n1",name="shop",guid="shop-1"}'
        values: '1x8'
      # a process group of the same guid: 0.25 cores in two modes, 50 MB
      - series: 'namedprocess_namegroup_cpu_seconds_total{job="agent-monitor",cluster="c",node="n1",group="worker",guid="shop-1",mode="user"}'
        values: '0+3x8'
      - series: 'namedprocess_namegroup_cpu_seconds_total{job="agent-monitor",cluster="c",node="n1",group="worker",guid="shop-1",mode="system"}'
        values: '0+0.75x8'
      - series: 'namedprocess_namegroup_memory_bytes{job="agent-monitor",cluster="c",node="n1",group="worker",guid="shop-1",memtype="resident"}'
        values: '50000000x8'
      - series: 'namedprocess_namegroup_memory_bytes{job="agent-monitor",cluster="c",node="n1",group="worker",guid="shop-1",memtype="virtual"}'
        values: '900000000x8'
      - series: 'namedprocess_namegroup_up{job="agent-monitor",cluster="c",node="n1",group="worker",guid="shop-1"}'
        values: '1 1 1 1 0 0 0 0 0'
      # no guid: counts for the node only; 1 core
      - series: 'container_cpu_usage_seconds_total{job="agent-monitor",cluster="c",node="n1",name="db"}'
        values: '0+15x8'
      - series: 'container_memory_working_set_bytes{job="agent-monitor",cluster="c",node="n1",name="db"}'
        values: '300000000x8'
      - series: 'container_up{job="agent-monitor",cluster="c",node="n1",name="db"}'
        values: '1x8'
      - series: 'namedprocess_namegroup_up{job="agent-monitor",cluster="c",node="n1",group="sshd"}'
        values: '1x8'
      # another job's series of the same name are not the monitor's
      - series: 'container_cpu_usage_seconds_total{job="cadvisor",cluster="c",node="n1",name="db"}'
        values: '0+150x8'
      # pods: namespace shop-2 (guid shop-2) has Deployment web (web-a on
      # n1: 0.5 cores; web-b on n2: 1 core) and StatefulSet db (db-0 on n1:
      # 0.25 cores); kube-system a DaemonSet's pod on n1 (0.25 cores);
      # default a bare pod on n2 (0.05 cores).
      - series: 'pod_cpu_usage_seconds_total{job="agent-monitor",cluster="c",node="n1",namespace="shop-2",pod="web-a",uid="u1",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '0+7.5x8'
      - series: 'pod_cpu_usage_seconds_total{job="agent-monitor",cluster="c",node="n2",namespace="shop-2",pod="web-b",uid="u2",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '0+15x8'
      - series: 'pod_cpu_usage_seconds_total{job="agent-monitor",cluster="c",node="n1",namespace="shop-2",pod="db-0",uid="u3",qos="Guaranteed",owner_kind="StatefulSet",owner_name="db",guid="shop-2"}'
        values: '0+3.75x8'
      - series: 'pod_cpu_usage_seconds_total{job="agent-monitor",cluster="c",node="n1",namespace="kube-system",pod="kube-proxy-x",uid="u4",qos="BestEffort",owner_kind="DaemonSet",owner_name="kube-proxy"}'
        values: '0+3.75x8'
      - series: 'pod_cpu_usage_seconds_total{job="agent-monitor",cluster="c",node="n2",namespace="default",pod="debug",uid="u5",qos="BestEffort"}'
        values: '0+0.75x8'
      - series: 'pod_memory_working_set_bytes{job="agent-monitor",cluster="c",node="n1",namespace="shop-2",pod="web-a",uid="u1",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '100000000x8'
      - series: 'pod_memory_working_set_bytes{job="agent-monitor",cluster="c",node="n2",namespace="shop-2",pod="web-b",uid="u2",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '50000000x8'
      - series: 'pod_memory_working_set_bytes{job="agent-monitor",cluster="c",node="n1",namespace="shop-2",pod="db-0",uid="u3",qos="Guaranteed",owner_kind="StatefulSet",owner_name="db",guid="shop-2"}'
        values: '300000000x8'
      - series: 'pod_memory_working_set_bytes{job="agent-monitor",cluster="c",node="n1",namespace="kube-system",pod="kube-proxy-x",uid="u4",qos="BestEffort",owner_kind="DaemonSet",owner_name="kube-proxy"}'
        values: '20000000x8'
      - series: 'pod_memory_working_set_bytes{job="agent-monitor",cluster="c",node="n2",namespace="default",pod="debug",uid="u5",qos="BestEffort"}'
        values: '10000000x8'
      - series: 'pod_memory_usage_bytes{job="agent-monitor",cluster="c",node="n1",namespace="shop-2",pod="web-a",uid="u1",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '150000000x8'
      - series: 'pod_memory_usage_bytes{job="agent-monitor",cluster="c",node="n2",namespace="shop-2",pod="web-b",uid="u2",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '60000000x8'
      - series: 'pod_memory_usage_bytes{job="agent-monitor",cluster="c",node="n1",namespace="shop-2",pod="db-0",uid="u3",qos="Guaranteed",owner_kind="StatefulSet",owner_name="db",guid="shop-2"}'
        values: '400000000x8'
      - series: 'pod_memory_usage_bytes{job="agent-monitor",cluster="c",node="n1",namespace="kube-system",pod="kube-proxy-x",uid="u4",qos="BestEffort",owner_kind="DaemonSet",owner_name="kube-proxy"}'
        values: '30000000x8'
      - series: 'pod_memory_usage_bytes{job="agent-monitor",cluster="c",node="n2",namespace="default",pod="debug",uid="u5",qos="BestEffort"}'
        values: '10000000x8'
      # web-b of shop-2 crashed; shop-3 has one pod, running.
      - series: 'pod_up{job="agent-monitor",cluster="c",node="n1",namespace="shop-2",pod="web-a",uid="u1",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '1x8'
      - series: 'pod_up{job="agent-monitor",cluster="c",node="n2",namespace="shop-2",pod="web-b",uid="u2",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '0x8'
      - series: 'pod_up{job="agent-monitor",cluster="c",node="n2",namespace="shop-3",pod="api-0",uid="u6",qos="BestEffort",owner_kind="StatefulSet",owner_name="api",guid="shop-3"}'
        values: '1x8'
      - series: 'pod_up{job="agent-monitor",cluster="c",node="n1",namespace="kube-system",pod="kube-proxy-x",uid="u4",qos="BestEffort",owner_kind="DaemonSet",owner_name="kube-proxy"}'
        values: '0x8'
      # web-a writes 100 B/s; web-a and web-b receive 200 and 100 B/s.
      - series: 'pod_fs_writes_bytes_total{job="agent-monitor",cluster="c",node="n1",namespace="shop-2",pod="web-a",uid="u1",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '0+1500x8'
      - series: 'pod_network_receive_bytes_total{job="agent-monitor",cluster="c",node="n1",namespace="shop-2",pod="web-a",uid="u1",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '0+3000x8'
      - series: 'pod_network_receive_bytes_total{job="agent-monitor",cluster="c",node="n2",namespace="shop-2",pod="web-b",uid="u2",qos="Burstable",owner_kind="Deployment",owner_name="web",guid="shop-2"}'
        values: '0+1500x8'
    promql_expr_test:
      - expr: guid:cpu_cores:rate{guid="shop-1"}
        eval_time: 2m
        exp_samples: [{labels: 'guid:cpu_cores:rate{cluster="c",guid="shop-1"}', value: 0.75}]
      - expr: guid:memory_bytes:sum{guid="shop-1"}
        eval_time: 2m
        exp_samples: [{labels: 'guid:memory_bytes:sum{cluster="c",guid="shop-1"}', value: 150000000}]
      - expr: guid:fs_write_bytes:rate{guid="shop-1"}
        eval_time: 2m
        exp_samples: [{labels: 'guid:fs_write_bytes:rate{cluster="c",guid="shop-1"}', value: 1000}]
      - expr: guid:network_receive_bytes:rate{guid="shop-1"}
        eval_time: 2m
        exp_samples: [{labels: 'guid:network_receive_bytes:rate{cluster="c",guid="shop-1"}', value: 200}]
      - expr: guid:up:min
        eval_time: 2m
        exp_samples:
          - {labels: 'guid:up:min{cluster="c",guid="shop-1"}', value: 0}
          - {labels: 'guid:up:min{cluster="c",guid="shop-2"}', value: 0}
          - {labels: 'guid:up:min{cluster="c",guid="shop-3"}', value: 1}
      - expr: node:container_cpu_cores:rate
        eval_time: 2m
        exp_samples: [{labels: 'node:container_cpu_cores:rate{cluster="c",node="n1"}', value: 1.5}]
      - expr: node:container_memory_working_set_bytes:sum
        eval_time: 2m
        exp_samples: [{labels: 'node:container_memory_working_set_bytes:sum{cluster="c",node="n1"}', value: 400000000}]
      - expr: node:process_group_cpu_cores:rate
        eval_time: 2m
        exp_samples: [{labels: 'node:process_group_cpu_cores:rate{cluster="c",node="n1"}', value: 0.25}]
      - expr: node:containers_running:sum
        eval_time: 2m
        exp_samples: [{labels: 'node:containers_running:sum{cluster="c",node="n1"}', value: 2}]
      - expr: node:process_groups_down:count
        eval_time: 2m
        exp_samples: [{labels: 'node:process_groups_down:count{cluster="c",node="n1"}', value: 1}]
      - expr: pod:cpu_cores:rate{pod="web-a"}
        eval_time: 2m
        exp_samples: [{labels: 'pod:cpu_cores:rate{cluster="c",node="n1",namespace="shop-2",pod="web-a",owner_kind="Deployment",owner_name="web",guid="shop-2"}', value: 0.5}]
      - expr: namespace:pod_cpu_cores:rate
        eval_time: 2m
        exp_samples:
          - {labels: 'namespace:pod_cpu_cores:rate{cluster="c",namespace="shop-2",guid="shop-2"}', value: 1.75}
          - {labels: 'namespace:pod_cpu_cores:rate{cluster="c",namespace="kube-system"}', value: 0.25}
          - {labels: 'namespace:pod_cpu_cores:rate{cluster="c",namespace="default"}', value: 0.05}
      - expr: workload:pod_cpu_cores:rate
        eval_time: 2m
        exp_samples:
          - {labels: 'workload:pod_cpu_cores:rate{cluster="c",namespace="shop-2",owner_kind="Deployment",owner_name="web",guid="shop-2"}', value: 1.5}
          - {labels: 'workload:pod_cpu_cores:rate{cluster="c",namespace="shop-2",owner_kind="StatefulSet",owner_name="db",guid="shop-2"}', value: 0.25}
          - {labels: 'workload:pod_cpu_cores:rate{cluster="c",namespace="kube-system",owner_kind="DaemonSet",owner_name="kube-proxy"}', value: 0.25}
      - expr: node:pod_cpu_cores:rate
        eval_time: 2m
        exp_samples:
          - {labels: 'node:pod_cpu_cores:rate{cluster="c",node="n1"}', value: 1}
          - {labels: 'node:pod_cpu_cores:rate{cluster="c",node="n2"}', value: 1.05}
      - expr: workload:pod_memory_working_set_bytes:sum{owner_name="web"}
        eval_time: 2m
        exp_samples: [{labels: 'workload:pod_memory_working_set_bytes:sum{cluster="c",namespace="shop-2",owner_kind="Deployment",owner_name="web",guid="shop-2"}', value: 150000000}]
      - expr: node:pod_memory_working_set_bytes:sum
        eval_time: 2m
        exp_samples:
          - {labels: 'node:pod_memory_working_set_bytes:sum{cluster="c",node="n1"}', value: 420000000}
          - {labels: 'node:pod_memory_working_set_bytes:sum{cluster="c",node="n2"}', value: 60000000}
      - expr: workload:pod_fs_write_bytes:rate
        eval_time: 2m
        exp_samples: [{labels: 'workload:pod_fs_write_bytes:rate{cluster="c",namespace="shop-2",owner_kind="Deployment",owner_name="web",guid="shop-2"}', value: 100}]
      - expr: namespace:pod_network_receive_bytes:rate
        eval_time: 2m
        exp_samples: [{labels: 'namespace:pod_network_receive_bytes:rate{cluster="c",namespace="shop-2",guid="shop-2"}', value: 300}]
      - expr: node:pods:count
        eval_time: 2m
        exp_samples:
          - {labels: 'node:pods:count{cluster="c",node="n1"}', value: 3}
          - {labels: 'node:pods:count{cluster="c",node="n2"}', value: 2}
      # The guid's roll-ups take its pods beside its containers and groups.
      - expr: guid:cpu_cores:rate{guid="shop-2"}
        eval_time: 2m
        exp_samples: [{labels: 'guid:cpu_cores:rate{cluster="c",guid="shop-2"}', value: 1.75}]
      - expr: guid:memory_bytes:sum{guid="shop-2"}
        eval_time: 2m
        exp_samples: [{labels: 'guid:memory_bytes:sum{cluster="c",guid="shop-2"}', value: 450000000}]
      - expr: guid:network_receive_bytes:rate{guid="shop-2"}
        eval_time: 2m
        exp_samples: [{labels: 'guid:network_receive_bytes:rate{cluster="c",guid="shop-2"}', value: 300}]
`
