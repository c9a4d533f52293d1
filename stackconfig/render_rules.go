package stackconfig

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"
)

// RulesInput is what the cluster Prometheus' recording rules are made of.
type RulesInput struct {
	// ScrapeInterval sets the rate window: four scrapes, at least a minute,
	// so that a rate always has two samples even when a scrape fails.
	ScrapeInterval time.Duration
}

// MonitorJob is the job of every agent's node monitor target.
const MonitorJob = "agent-monitor"

// RulesFile is the name of the rules file beside prometheus.yml.
const RulesFile = "monitor.rules.yml"

// RenderRules renders the recording rules that roll the node monitors'
// series up per guid and per node, and on Kubernetes per pod, namespace,
// workload (a pod's owner: Deployment, StatefulSet, DaemonSet) and node,
// so the manager can query an application's or a host's CPU cores,
// memory and I/O and network rates without summing containers, pods and
// processes itself. The names follow level:metric:operation;
// docs/monitor.md lists them.
func RenderRules(in RulesInput) ([]byte, error) {
	var c checker
	c.positive("scrape_interval", in.ScrapeInterval)
	if err := c.err("render rules"); err != nil {
		return nil, err
	}
	w := model.Duration(max(time.Minute, 4*in.ScrapeInterval)).String()
	// m selects a metric of the monitors; extra adds matchers.
	m := func(name, extra string) string { return name + `{job="` + MonitorJob + `"` + extra + `}` }
	rate := func(name, extra string) string { return "rate(" + m(name, extra) + "[" + w + "])" }
	// A guid is a container's, a process group's or (on Kubernetes) a
	// pod's, from its namespace's label: every one of them counts.
	rateEither := func(container, group, pod string) string {
		return fmt.Sprintf(`rate({__name__=~"%s|%s|%s",job="%s",guid!=""}[%s])`, container, group, pod, MonitorJob, w)
	}
	sum := func(labels, expr string) string { return "sum by (" + labels + ") (" + expr + ")" }
	const guid, node, hasGUID = "cluster, guid", "cluster, node", `,guid!=""`

	guidRules := []promRule{
		{Record: "guid:cpu_cores:rate", Expr: sum(guid, rateEither("container_cpu_usage_seconds_total", "namedprocess_namegroup_cpu_seconds_total", "pod_cpu_usage_seconds_total"))},
		{Record: "guid:memory_bytes:sum", Expr: sum(guid, m("container_memory_working_set_bytes", hasGUID)+" or "+
			m("namedprocess_namegroup_memory_bytes", hasGUID+`,memtype="resident"`)+" or "+m("pod_memory_working_set_bytes", hasGUID))},
		{Record: "guid:fs_read_bytes:rate", Expr: sum(guid, rateEither("container_fs_reads_bytes_total", "namedprocess_namegroup_read_bytes_total", "pod_fs_reads_bytes_total"))},
		{Record: "guid:fs_write_bytes:rate", Expr: sum(guid, rateEither("container_fs_writes_bytes_total", "namedprocess_namegroup_write_bytes_total", "pod_fs_writes_bytes_total"))},
		{Record: "guid:network_receive_bytes:rate", Expr: sum(guid, rateEither("container_network_receive_bytes_total", "namedprocess_namegroup_network_receive_bytes_total", "pod_network_receive_bytes_total"))},
		{Record: "guid:network_transmit_bytes:rate", Expr: sum(guid, rateEither("container_network_transmit_bytes_total", "namedprocess_namegroup_network_transmit_bytes_total", "pod_network_transmit_bytes_total"))},
		{Record: "guid:up:min", Expr: "min by (" + guid + ") (" + m("container_up", hasGUID) + " or " + m("namedprocess_namegroup_up", hasGUID) + " or " + m("pod_up", hasGUID) + ")"},
	}
	nodeRules := []promRule{
		{Record: "node:container_cpu_cores:rate", Expr: sum(node, rate("container_cpu_usage_seconds_total", ""))},
		{Record: "node:container_memory_working_set_bytes:sum", Expr: sum(node, m("container_memory_working_set_bytes", ""))},
		{Record: "node:container_fs_read_bytes:rate", Expr: sum(node, rate("container_fs_reads_bytes_total", ""))},
		{Record: "node:container_fs_write_bytes:rate", Expr: sum(node, rate("container_fs_writes_bytes_total", ""))},
		{Record: "node:container_network_receive_bytes:rate", Expr: sum(node, rate("container_network_receive_bytes_total", ""))},
		{Record: "node:container_network_transmit_bytes:rate", Expr: sum(node, rate("container_network_transmit_bytes_total", ""))},
		{Record: "node:containers_running:sum", Expr: sum(node, m("container_up", ""))},
		{Record: "node:process_group_cpu_cores:rate", Expr: sum(node, rate("namedprocess_namegroup_cpu_seconds_total", ""))},
		{Record: "node:process_group_memory_resident_bytes:sum", Expr: sum(node, m("namedprocess_namegroup_memory_bytes", `,memtype="resident"`))},
		{Record: "node:process_groups_down:count", Expr: "count by (" + node + ") (" + m("namedprocess_namegroup_up", "") + " == 0)"},
	}
	b, err := encodeYAML(promRules{Groups: []promRuleGroup{
		{Name: "agent-monitor-guid", Rules: guidRules},
		{Name: "agent-monitor-node", Rules: nodeRules},
		{Name: "agent-monitor-pods", Rules: podRules(m, rate)},
	}})
	if err != nil {
		return nil, fmt.Errorf("render rules: %w", err)
	}
	return b, nil
}

// podRules roll the pod monitor's series (slave/monitor/kubepods) up:
// first per pod, then from those per namespace, per workload (the pod's
// owner: a Deployment, StatefulSet, DaemonSet, Job...; bare pods have
// none) and per node. Rules of one group run in order, so each level
// reads the pod level of the same evaluation. The guid, from the
// namespace's label, stays on the pod, namespace and workload levels.
func podRules(m, rate func(name, extra string) string) []promRule {
	const (
		podBy       = "cluster, node, namespace, pod, owner_kind, owner_name, guid"
		namespaceBy = "cluster, namespace, guid"
		workloadBy  = "cluster, namespace, owner_kind, owner_name, guid"
		nodeBy      = "cluster, node"
	)
	sum := func(labels, expr string) string { return "sum by (" + labels + ") (" + expr + ")" }
	figures := []struct{ name, pod string }{
		{"cpu_cores:rate", rate("pod_cpu_usage_seconds_total", "")},
		{"memory_working_set_bytes:sum", m("pod_memory_working_set_bytes", "")},
		{"fs_read_bytes:rate", rate("pod_fs_reads_bytes_total", "")},
		{"fs_write_bytes:rate", rate("pod_fs_writes_bytes_total", "")},
		{"network_receive_bytes:rate", rate("pod_network_receive_bytes_total", "")},
		{"network_transmit_bytes:rate", rate("pod_network_transmit_bytes_total", "")},
	}
	var rules []promRule
	for _, f := range figures {
		rules = append(rules, promRule{Record: "pod:" + f.name, Expr: sum(podBy, f.pod)})
	}
	for _, f := range figures {
		perPod := "pod:" + f.name
		rules = append(rules,
			promRule{Record: "namespace:pod_" + f.name, Expr: sum(namespaceBy, perPod)},
			promRule{Record: "workload:pod_" + f.name, Expr: sum(workloadBy, perPod+`{owner_name!=""}`)},
			promRule{Record: "node:pod_" + f.name, Expr: sum(nodeBy, perPod)},
		)
	}
	return append(rules, promRule{Record: "node:pods:count", Expr: "count by (" + nodeBy + ") (" + m("pod_memory_usage_bytes", "") + ")"})
}

// The prom*Rule* types are Prometheus' rule file format.
type promRules struct {
	Groups []promRuleGroup `yaml:"groups"`
}

type promRuleGroup struct {
	Name  string     `yaml:"name"`
	Rules []promRule `yaml:"rules"`
}

type promRule struct {
	Record string `yaml:"record"`
	Expr   string `yaml:"expr"`
}
