package stackconfig

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Helm configures Kubernetes mode (stack.driver = "helm"): how the agent
// reaches the Kubernetes API and which charts the master installs as Helm
// releases. Every chart is a reference (a repository, a chart name and an
// exact version, or a local path) plus values: the agent renders its own
// values from the configuration and merges the user's over them.
type Helm struct {
	// Kubeconfig is the kubeconfig file the agent uses; empty: $KUBECONFIG,
	// else the pod's service account (in-cluster).
	Kubeconfig string `mapstructure:"kubeconfig"`
	// Namespace is the agent's own namespace, where the metrics and log
	// releases go and where its pods and Service live; empty: $POD_NAMESPACE,
	// else the service account's namespace file, else "default".
	Namespace string `mapstructure:"namespace"`
	// PodName is this agent's pod, which the master labels so that Service
	// routes to it; empty: $POD_NAME (the chart sets it from the downward
	// API). Without a pod name nothing is labelled.
	PodName string `mapstructure:"pod_name"`
	// Service is the Service of the agent's chart that follows the master:
	// the relay and http_sd URLs the metrics stack is given point at it.
	Service string `mapstructure:"service"`
	// ServicePort is that Service's port of the agent API.
	ServicePort int `mapstructure:"service_port"`
	// TokenSecret names the Secret (key "token") in Namespace that holds
	// api.token_file's token, for the metrics stack's remote_write to the
	// relay; empty: no authorization is sent.
	TokenSecret string `mapstructure:"token_secret"`
	// CASecret names the Secret (key "ca.crt") in Namespace that holds
	// api.ca_file's CA, for the metrics stack to trust the agents' API
	// certificate; required when the API serves TLS (api.cert_file).
	CASecret string `mapstructure:"ca_secret"`
	// Timeout bounds one Helm action (install, upgrade, uninstall).
	Timeout time.Duration `mapstructure:"timeout"`
	// MaxHistory is how many revisions of a release Helm keeps.
	MaxHistory int `mapstructure:"max_history"`
	// ChartCache is where charts from repositories are kept; empty:
	// <data_dir>/charts.
	ChartCache string `mapstructure:"chart_cache"`

	// Metrics is the cluster's metrics stack (kube-prometheus-stack): its
	// Prometheus writes to the relay and scrapes the agents' http_sd.
	Metrics HelmChart `mapstructure:"metrics"`
	// Logs is the log shipper (vector, agent role), one pod per node.
	Logs HelmChart `mapstructure:"logs"`
	// Traces is the trace collector installed in each guid's namespace
	// (jaeger), forwarding to the manager.
	Traces HelmChart `mapstructure:"traces"`
	// AppCharts are the charts an application may name (its "chart"
	// field), by name: the manager picks one of these, never a repository.
	AppCharts map[string]HelmChart `mapstructure:"app_charts"`
}

// HelmChart is one chart the agent installs: where it comes from, the
// release it becomes and the user's values.
type HelmChart struct {
	// Enabled installs it (metrics, logs and traces; app charts are always
	// available).
	Enabled bool `mapstructure:"enabled"`
	// Release is the Helm release name.
	Release string `mapstructure:"release"`
	// Repository is an https:// (or http://) chart repository or an
	// oci:// registry path; Name and Version pick the chart in it. Version
	// is exact, so that an agent restart finds the release unchanged.
	Repository string `mapstructure:"repository"`
	Name       string `mapstructure:"name"`
	Version    string `mapstructure:"version"`
	// Path is a local chart (a directory or a .tgz) instead of a
	// repository chart.
	Path string `mapstructure:"path"`
	// Values is YAML merged over the agent's own values; ValuesFiles are
	// YAML files merged in order before it. Neither is ever templated.
	Values      string   `mapstructure:"values"`
	ValuesFiles []string `mapstructure:"values_files"`
}

// DefaultHelm holds the value of every stack.helm key that is not set: the
// public charts the issue names, at the versions the agent's golden values
// were checked against.
var DefaultHelm = Helm{
	Service:     "agent",
	ServicePort: 9464,
	Timeout:     5 * time.Minute,
	MaxHistory:  5,
	Metrics: HelmChart{
		Enabled:    true,
		Release:    "agent-metrics",
		Repository: "https://prometheus-community.github.io/helm-charts",
		Name:       "kube-prometheus-stack",
		Version:    "88.5.3",
	},
	Logs: HelmChart{
		Enabled:    true,
		Release:    "agent-logs",
		Repository: "https://helm.vector.dev",
		Name:       "vector",
		Version:    "0.57.0",
	},
	Traces: HelmChart{
		Enabled:    true,
		Release:    "agent-traces",
		Repository: "https://jaegertracing.github.io/helm-charts",
		Name:       "jaeger",
		Version:    "4.11.1",
	},
}

// MaxReleaseName is Helm's limit on a release name (it becomes part of
// object names and labels).
const MaxReleaseName = 53

var (
	// chartName is what Helm accepts as a chart name in a repository.
	chartName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9._]{0,248}[a-z0-9])?$`)
	// semverExact is a whole SemVer 2.0 version, with an optional v.
	semverExact = regexp.MustCompile(`^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)
)

// Validate checks every stack.helm key; it is called for every driver, so
// a bad chart reference is found before the agent ever runs in a pod.
func (h *Helm) validate(c *checker) {
	if h.Kubeconfig != "" {
		c.check("stack.helm.kubeconfig", h.Kubeconfig, checkPath(h.Kubeconfig, false))
	}
	if h.Namespace != "" {
		c.dnsLabel("stack.helm.namespace", h.Namespace)
	}
	if h.PodName != "" && !validDNSSubdomain(h.PodName) {
		c.bad("stack.helm.pod_name", "must be a DNS subdomain (lower-case letters, digits, '-' and '.', at most 253 characters), got %q", h.PodName)
	}
	c.dnsLabel("stack.helm.service", h.Service)
	if h.ServicePort < 1 || h.ServicePort > 65535 {
		c.bad("stack.helm.service_port", "must be from 1 to 65535, got %d", h.ServicePort)
	}
	if h.CASecret != "" && !validDNSSubdomain(h.CASecret) {
		c.bad("stack.helm.ca_secret", "must be a DNS subdomain (a Secret name), got %q", h.CASecret)
	}
	if h.TokenSecret != "" && !validDNSSubdomain(h.TokenSecret) {
		c.bad("stack.helm.token_secret", "must be a DNS subdomain (a Secret name), got %q", h.TokenSecret)
	}
	c.positive("stack.helm.timeout", h.Timeout)
	if h.MaxHistory < 1 {
		c.bad("stack.helm.max_history", "must be >= 1, got %d", h.MaxHistory)
	}
	if h.ChartCache != "" {
		c.check("stack.helm.chart_cache", h.ChartCache, checkPath(h.ChartCache, false))
	}
	h.Metrics.validate(c, "stack.helm.metrics", true)
	h.Logs.validate(c, "stack.helm.logs", true)
	h.Traces.validate(c, "stack.helm.traces", true)
	for _, name := range slices.Sorted(maps.Keys(h.AppCharts)) {
		key := "stack.helm.app_charts." + name
		if !ValidDNSLabel(name) {
			c.bad("stack.helm.app_charts", "chart names must be %s, got %q", DNSLabelRule, name)
			continue
		}
		ch := h.AppCharts[name]
		ch.validate(c, key, false)
	}
	seen := map[string]string{}
	for _, o := range []struct {
		key string
		ch  HelmChart
	}{{"stack.helm.metrics", h.Metrics}, {"stack.helm.logs", h.Logs}} {
		if !o.ch.Enabled {
			continue
		}
		if other, ok := seen[o.ch.Release]; ok {
			c.bad(o.key+".release", "must differ from %s.release (both go to the agent's namespace), got %q", other, o.ch.Release)
		}
		seen[o.ch.Release] = o.key
	}
}

func (ch *HelmChart) validate(c *checker, key string, needRelease bool) {
	if needRelease || ch.Release != "" {
		if !ValidDNSLabel(ch.Release) || len(ch.Release) > MaxReleaseName {
			c.bad(key+".release", "must be a DNS label of at most %d characters, got %q", MaxReleaseName, ch.Release)
		}
	}
	if !ch.Enabled && needRelease {
		// A disabled chart may keep a half-written reference; it is
		// checked again when it is enabled.
		return
	}
	switch {
	case ch.Path != "" && (ch.Repository != "" || ch.Name != "" || ch.Version != ""):
		c.bad(key+".path", "set either path or repository, name and version, got path %q and repository %q", ch.Path, ch.Repository)
	case ch.Path != "":
		c.check(key+".path", ch.Path, checkPath(ch.Path, false))
	default:
		c.check(key+".repository", ch.Repository, checkChartRepository(ch.Repository))
		if !chartName.MatchString(ch.Name) {
			c.bad(key+".name", "must be a chart name (lower-case letters, digits, '-', '.', '_'), got %q", ch.Name)
		}
		if !semverExact.MatchString(ch.Version) {
			c.bad(key+".version", "must be an exact version like 1.2.3 (a range would change the release behind the agent's back), got %q", ch.Version)
		}
	}
	if _, err := ParseValues(ch.Values); err != nil {
		c.bad(key+".values", "%v", err)
	}
	for i, f := range ch.ValuesFiles {
		k := fmt.Sprintf("%s.values_files[%d]", key, i)
		if err := checkPath(f, false); err != nil {
			c.check(k, f, err)
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			c.bad(k, "cannot read %q: %v", f, errors.Unwrap(err))
			continue
		}
		if _, err := ParseValues(string(b)); err != nil {
			c.bad(k, "%s: %v", f, err)
		}
	}
}

// checkChartRepository accepts an http(s) chart repository URL or an oci://
// registry path.
func checkChartRepository(s string) error {
	if rest, ok := strings.CutPrefix(s, "oci://"); ok {
		u, err := url.Parse("https://" + rest)
		if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.ContainsFunc(s, func(r rune) bool { return !uriChar(r) }) {
			return errors.New("must be an oci://registry/path reference")
		}
		return checkHost(u.Hostname(), true)
	}
	if err := checkEndpointURL(s); err != nil {
		return fmt.Errorf("must be an oci:// reference or %w", err)
	}
	return nil
}

// ParseValues reads Helm values: a YAML mapping (empty is no values). The
// result has JSON types, as Helm's own values have.
func ParseValues(s string) (map[string]any, error) {
	if strings.TrimSpace(s) == "" {
		return map[string]any{}, nil
	}
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("must be YAML: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		if v == nil {
			return map[string]any{}, nil
		}
		return nil, fmt.Errorf("must be a YAML mapping, got a %T", v)
	}
	return m, nil
}

// UserValues are the chart's values files, in order, then its inline
// values, merged (later wins): what goes over the agent's own values.
func (ch HelmChart) UserValues() (map[string]any, error) {
	out := map[string]any{}
	for _, f := range ch.ValuesFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("values file: %w", err)
		}
		v, err := ParseValues(string(b))
		if err != nil {
			return nil, fmt.Errorf("values file %s: %w", f, err)
		}
		out = MergeValues(out, v)
	}
	v, err := ParseValues(ch.Values)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	return MergeValues(out, v), nil
}

// MergeValues returns base with over merged into it: mappings merge key by
// key, anything else in over replaces what base has (lists too), and a
// null in over removes the key, as Helm's own coalescing does. Neither
// argument is changed.
func MergeValues(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if v == nil {
			delete(out, k)
			continue
		}
		if om, ok := v.(map[string]any); ok {
			if bm, ok := out[k].(map[string]any); ok {
				out[k] = MergeValues(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// dnsSubdomain is a Kubernetes object name (RFC 1123 subdomain).
var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func validDNSSubdomain(s string) bool { return len(s) <= 253 && dnsSubdomain.MatchString(s) }
