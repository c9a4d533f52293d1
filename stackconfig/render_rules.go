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
// series up per guid and per node, so the manager can query an
// application's or a host's CPU cores, memory and I/O and network rates
// without summing containers and processes itself. The names follow
// level:metric:operation; docs/monitor.md lists them.
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
	// A guid is a container's or a process group's: both metrics count.
	rateEither := func(container, group string) string {
		return fmt.Sprintf(`rate({__name__=~"%s|%s",job="%s",guid!=""}[%s])`, container, group, MonitorJob, w)
	}
	sum := func(labels, expr string) string { return "sum by (" + labels + ") (" + expr + ")" }
	const guid, node, hasGUID = "cluster, guid", "cluster, node", `,guid!=""`

	guidRules := []promRule{
		{Record: "guid:cpu_cores:rate", Expr: sum(guid, rateEither("container_cpu_usage_seconds_total", "namedprocess_namegroup_cpu_seconds_total"))},
		{Record: "guid:memory_bytes:sum", Expr: sum(guid, m("container_memory_working_set_bytes", hasGUID)+" or "+
			m("namedprocess_namegroup_memory_bytes", hasGUID+`,memtype="resident"`))},
		{Record: "guid:fs_read_bytes:rate", Expr: sum(guid, rateEither("container_fs_reads_bytes_total", "namedprocess_namegroup_read_bytes_total"))},
		{Record: "guid:fs_write_bytes:rate", Expr: sum(guid, rateEither("container_fs_writes_bytes_total", "namedprocess_namegroup_write_bytes_total"))},
		{Record: "guid:network_receive_bytes:rate", Expr: sum(guid, rateEither("container_network_receive_bytes_total", "namedprocess_namegroup_network_receive_bytes_total"))},
		{Record: "guid:network_transmit_bytes:rate", Expr: sum(guid, rateEither("container_network_transmit_bytes_total", "namedprocess_namegroup_network_transmit_bytes_total"))},
		{Record: "guid:up:min", Expr: "min by (" + guid + ") (" + m("container_up", hasGUID) + " or " + m("namedprocess_namegroup_up", hasGUID) + ")"},
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
	}})
	if err != nil {
		return nil, fmt.Errorf("render rules: %w", err)
	}
	return b, nil
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
