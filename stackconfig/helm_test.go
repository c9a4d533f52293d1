package stackconfig

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestHelmValidateNamesKeyAndValue(t *testing.T) {
	dir := t.TempDir()
	notMap := filepath.Join(dir, "list.yaml")
	if err := os.WriteFile(notMap, []byte("- a\n- b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mutate func(h *Helm)
		want   string
	}{
		{func(h *Helm) { h.Kubeconfig = "kube/config" }, `stack.helm.kubeconfig: must be an absolute path, got "kube/config"`},
		{func(h *Helm) { h.Namespace = "Agent" }, `stack.helm.namespace: must be lower-case letters, digits and '-'`},
		{func(h *Helm) { h.PodName = "agent_1" }, `stack.helm.pod_name: must be a DNS subdomain`},
		{func(h *Helm) { h.Service = "" }, `stack.helm.service: must be lower-case letters`},
		{func(h *Helm) { h.ServicePort = 0 }, `stack.helm.service_port: must be from 1 to 65535, got 0`},
		{func(h *Helm) { h.TokenSecret = "Token" }, `stack.helm.token_secret: must be a DNS subdomain (a Secret name), got "Token"`},
		{func(h *Helm) { h.CASecret = "CA_secret" }, `stack.helm.ca_secret: must be a DNS subdomain (a Secret name), got "CA_secret"`},
		{func(h *Helm) { h.Timeout = 0 }, `stack.helm.timeout: must be > 0, got 0s`},
		{func(h *Helm) { h.MaxHistory = 0 }, `stack.helm.max_history: must be >= 1, got 0`},
		{func(h *Helm) { h.Metrics.Release = strings.Repeat("a", 54) }, `stack.helm.metrics.release: must be a DNS label of at most 53 characters`},
		{func(h *Helm) { h.Metrics.Version = "^88.0.0" }, `stack.helm.metrics.version: must be an exact version like 1.2.3 (a range would change the release behind the agent's back), got "^88.0.0"`},
		{func(h *Helm) { h.Logs.Name = "Vector" }, `stack.helm.logs.name: must be a chart name (lower-case letters, digits, '-', '.', '_'), got "Vector"`},
		{func(h *Helm) { h.Logs.Repository = "ftp://charts" }, `stack.helm.logs.repository: must be an oci:// reference or must be an http:// or https:// URL with a host, got "ftp://charts"`},
		{func(h *Helm) { h.Logs.Repository = "oci://" }, `stack.helm.logs.repository: must be an oci://registry/path reference, got "oci://"`},
		{func(h *Helm) { h.Traces.Path = "/charts/jaeger" }, `stack.helm.traces.path: set either path or repository, name and version, got path "/charts/jaeger" and repository "https://jaegertracing.github.io/helm-charts"`},
		{func(h *Helm) { h.Traces = HelmChart{Enabled: true, Release: "t", Path: "charts/j"} }, `stack.helm.traces.path: must be an absolute path, got "charts/j"`},
		{func(h *Helm) { h.Traces.Values = "a: [1" }, `stack.helm.traces.values: must be YAML`},
		{func(h *Helm) { h.Traces.Values = "just a string" }, `stack.helm.traces.values: must be a YAML mapping, got a string`},
		{func(h *Helm) { h.Metrics.ValuesFiles = []string{notMap} }, `stack.helm.metrics.values_files[0]: ` + notMap + `: must be a YAML mapping, got a []interface {}`},
		{func(h *Helm) { h.Metrics.ValuesFiles = []string{filepath.Join(dir, "none.yaml")} }, `stack.helm.metrics.values_files[0]: cannot read`},
		{func(h *Helm) { h.Logs.Release = h.Metrics.Release }, `stack.helm.logs.release: must differ from stack.helm.metrics.release (both go to the agent's namespace), got "agent-metrics"`},
		{func(h *Helm) { h.AppCharts = map[string]HelmChart{"Web": {Path: "/c"}} }, `stack.helm.app_charts: chart names must be lower-case letters`},
		{func(h *Helm) { h.AppCharts = map[string]HelmChart{"web": {}} }, `stack.helm.app_charts.web.repository: must be an oci:// reference or must be an http:// or https:// URL with a host, got ""`},
	} {
		s := DefaultStack
		s.Prometheus.ExternalLabels = nil
		tc.mutate(&s.Helm)
		err := errors.Join(s.Validate()...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v\nwant it to contain %q", err, tc.want)
		}
	}

	// A disabled chart is not checked beyond its release name.
	s := DefaultStack
	s.Helm.Logs = HelmChart{Release: "agent-logs", Version: "latest"}
	if err := errors.Join(s.Validate()...); err != nil {
		t.Fatalf("disabled chart: %v", err)
	}
}

func TestHelmSectionLoadsFromTOML(t *testing.T) {
	dir := t.TempDir()
	vf := filepath.Join(dir, "metrics.yaml")
	if err := os.WriteFile(vf, []byte("grafana:\n  enabled: true\nprometheus:\n  prometheusSpec:\n    retention: 2d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "agent.toml")
	err := os.WriteFile(path, []byte(`
node = "n1"
[stack]
driver = "helm"
[stack.helm]
namespace = "observability"
timeout = "2m"
[stack.helm.metrics]
values_files = ["`+vf+`"]
values = '''
prometheus:
  prometheusSpec:
    retention: 6h
    scrapeInterval: 30s
'''
[stack.helm.logs]
enabled = false
[stack.helm.app_charts.web]
path = "/srv/charts/web"
values = "replicaCount: 2"
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, joinFlags(t), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Stack.Helm
	if cfg.Stack.Driver != "helm" || h.Namespace != "observability" || h.Timeout != 2*time.Minute || h.Logs.Enabled ||
		h.Metrics.Version != DefaultHelm.Metrics.Version || h.AppCharts["web"].Path != "/srv/charts/web" {
		t.Fatalf("loaded %+v", h)
	}
	// Case survives: viper lower-cases keys, never the YAML inside values.
	got, err := h.Metrics.UserValues()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"grafana":    map[string]any{"enabled": true},
		"prometheus": map[string]any{"prometheusSpec": map[string]any{"retention": "6h", "scrapeInterval": "30s"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("user values = %v\nwant %v", got, want)
	}

	if err := os.WriteFile(path, []byte("[stack.helm.app_charts.web]\npath = \"/c\"\nversio = \"1.0.0\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path, joinFlags(t), JoinOptions)
	if err == nil || !strings.Contains(err.Error(), "unknown key stack.helm.app_charts.web.versio (did you mean stack.helm.app_charts.web.version?)") {
		t.Fatalf("unknown key in an app chart: %v", err)
	}
}

func TestMergeValues(t *testing.T) {
	base := map[string]any{
		"a": map[string]any{"x": 1, "y": map[string]any{"k": "v"}},
		"l": []any{1, 2},
		"d": "gone",
	}
	over := map[string]any{
		"a": map[string]any{"y": map[string]any{"k2": "v2"}, "z": true},
		"l": []any{3},
		"d": nil,
	}
	got := MergeValues(base, over)
	want := map[string]any{
		"a": map[string]any{"x": 1, "y": map[string]any{"k": "v", "k2": "v2"}, "z": true},
		"l": []any{3},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("MergeValues = %v\nwant %v", got, want)
	}
	if _, ok := base["d"]; !ok || len(base["a"].(map[string]any)["y"].(map[string]any)) != 1 {
		t.Fatalf("MergeValues changed its base: %v", base)
	}
}
