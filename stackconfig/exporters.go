package stackconfig

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"unicode/utf8"
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

var jobName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

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
		if !jobName.MatchString(e.Job) {
			bad(i, "job: must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit, got %q", e.Job)
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
		if e.MetricsPath != "" && (!strings.HasPrefix(e.MetricsPath, "/") || strings.ContainsAny(e.MetricsPath, " \t\r\n?#")) {
			bad(i, "metrics_path: must be an absolute URL path without spaces, '?' or '#', got %q", e.MetricsPath)
		}
		if e.Scheme != "" && e.Scheme != "http" && e.Scheme != "https" {
			bad(i, "scheme: must be http or https, got %q", e.Scheme)
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

// checkTarget accepts host:port with a non-empty host and a numeric port.
func checkTarget(t string) error {
	host, port, err := net.SplitHostPort(t)
	if err != nil || host == "" || port == "" || strings.ContainsAny(t, "/ \t\r\n") {
		return errors.New("must be host:port")
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return errors.New("port must be a number")
		}
	}
	return nil
}
