package stackconfig

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/common/model"
)

// Exporter is one [[exporters]] entry: a scrape job on this host that the
// agent publishes as a target group in etcd.
type Exporter struct {
	// Job names the scrape job; it is a file name (<job>.json) and an etcd
	// key segment on the master.
	Job string `mapstructure:"job"`
	// Address is one host:port; Addresses lists several. One of them.
	Address   string   `mapstructure:"address"`
	Addresses []string `mapstructure:"addresses"`
	// MetricsPath and Scheme are optional (Prometheus defaults /metrics, http).
	MetricsPath string            `mapstructure:"metrics_path"`
	Scheme      string            `mapstructure:"scheme"`
	Labels      map[string]string `mapstructure:"labels"`
}

// Targets are the exporter's host:port addresses.
func (e Exporter) Targets() []string {
	if e.Address != "" {
		return append([]string{e.Address}, e.Addresses...)
	}
	return e.Addresses
}

// ValidLabelName reports whether s is a legacy Prometheus label name
// ([a-zA-Z_][a-zA-Z0-9_]*, the labelName pattern), without a regexp: the
// relay and the target sync call it often.
func ValidLabelName(s string) bool {
	for i, c := range []byte(s) {
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return s != ""
}

// AgentLabels are the target labels the agent sets itself; exporters may not
// set them.
var AgentLabels = []string{"job", "node", "cluster", "instance"}

// ValidateTargetLabels checks label names and values as Prometheus will
// treat them: legacy charset names, UTF-8 values.
func ValidateTargetLabels(labels map[string]string) error {
	for name, value := range labels {
		if !ValidLabelName(name) {
			return fmt.Errorf("label name must match %s, got %q", labelName, name)
		}
		if !utf8.ValidString(value) {
			return fmt.Errorf("label %s: value must be UTF-8, got %q", name, value)
		}
	}
	return nil
}

// ValidateExporters checks every [[exporters]] entry; errors name the entry
// by index: exporters[1].address.
func ValidateExporters(exps []Exporter) []error {
	var errs []error
	bad := func(i int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("exporters[%d].%s", i, fmt.Sprintf(format, args...)))
	}
	for i, e := range exps {
		if !ValidJobName(e.Job) {
			bad(i, "job: must be %s, got %q", JobNameRule, e.Job)
		}
		targets := e.Targets()
		if len(targets) == 0 {
			bad(i, "address: set address or addresses")
		}
		for _, t := range targets {
			if err := checkTarget(t); err != nil {
				bad(i, "address: %v, got %q", err, t)
			}
		}
		if e.MetricsPath != "" {
			if err := checkMetricsPath(e.MetricsPath); err != nil {
				bad(i, "metrics_path: %v, got %q", err, e.MetricsPath)
			}
		}
		if e.Scheme != "" && e.Scheme != "http" && e.Scheme != "https" {
			bad(i, "scheme: must be http or https, got %q", e.Scheme)
		}
		if n := publishedSize(e); n > MaxTargetGroupBytes {
			bad(i, "addresses: with its labels the target group would be %d bytes, more than the %d the master accepts; split the addresses over several [[exporters]] entries of the same job", n, MaxTargetGroupBytes)
		}
		if err := ValidateTargetLabels(e.Labels); err != nil {
			bad(i, "labels: %v", err)
		}
		for name := range e.Labels {
			for _, own := range AgentLabels {
				if name == own {
					bad(i, "labels: %q is set by the agent and cannot be overridden", name)
				}
			}
			if strings.HasPrefix(name, "__") {
				bad(i, "labels: %q: names starting with __ are reserved; use metrics_path and scheme", name)
			}
		}
	}
	return errs
}

// publishedSize is an upper bound of the size of e's group in etcd: its
// targets and labels as the agent publishes them, with node and cluster
// names of the longest length allowed.
func publishedSize(e Exporter) int {
	longest := model.LabelValue(strings.Repeat("x", 63))
	ls := model.LabelSet{"node": longest, "cluster": longest, model.MetricsPathLabel: model.LabelValue(e.MetricsPath), model.SchemeLabel: model.LabelValue(e.Scheme)}
	for k, v := range e.Labels {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	b, err := json.Marshal(TargetGroup{Targets: e.Targets(), Labels: ls})
	if err != nil {
		return 0
	}
	return len(b)
}
