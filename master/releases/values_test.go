package releases

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"sigs.k8s.io/yaml"

	"github.com/agentproj/agent/drivers/helm"
	"github.com/agentproj/agent/drivers/process/processtest"
	"github.com/agentproj/agent/slave/apps"
	"github.com/agentproj/agent/stackconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/helm/values")

// goldenInput is a configuration with every feature on: relay with a
// token, logs and traces to the manager, external labels.
func goldenInput() Input {
	prom := stackconfig.DefaultStack.Prometheus
	prom.ExternalLabels = map[string]string{"region": "eu-1"}
	return Input{
		Cluster: "prod", Namespace: "observability",
		Service: "agent", ServicePort: 9464, TokenSecret: "agent-token",
		Relay: true, Prometheus: prom,
		Manager: stackconfig.Manager{
			LogsURL:            "https://manager.example/logs?tenant=$t",
			TracesOTLPEndpoint: "https://manager.example:4317", TracesOTLPProtocol: "grpc",
		},
		TracesRelease: "agent-traces", TracesQueueSize: 5000,
	}
}

func goldenApp() apps.Record {
	return apps.Record{Spec: apps.AppSpec{
		GUID: "shop-1", Image: "registry.example/team/shop:2.1", Args: []string{"--listen", ":8080"},
		Env:     map[string]string{"GREETING": "costs $(HOME) and $5", "MODE": "prod"},
		Metrics: &apps.Metrics{Port: 9102, Path: "/metrics"},
		Labels:  map[string]string{"team": "web shop", "tier": "front"},
	}, Node: "n1"}
}

// golden compares v, as YAML (keys sorted), with testdata/helm/values/name;
// -update rewrites it. These are the values the driver gives the default
// upstream charts: their keys were checked against each chart's own
// values.yaml at the configured version (docs/architecture.md, "Kubernetes
// mode").
func golden(t *testing.T, name string, v map[string]any) {
	t.Helper()
	got, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "testdata", "helm", "values", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n%s", name, got)
	}
}

func TestValuesGolden(t *testing.T) {
	in := goldenInput()
	metrics, err := MetricsValues(in)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "kube-prometheus-stack.yaml", metrics)
	logs, ok, err := LogsValues(in)
	if err != nil || !ok {
		t.Fatalf("LogsValues = %v, %v", ok, err)
	}
	golden(t, "vector.yaml", logs)
	traces, ok, err := TracesValues(in, "shop-1")
	if err != nil || !ok {
		t.Fatalf("TracesValues = %v, %v", ok, err)
	}
	golden(t, "jaeger.yaml", traces)
	golden(t, "app-image.yaml", AppValues(in, goldenApp(), true))
	golden(t, "app-chart.yaml", ChartAppValues(in, goldenApp(), true))

	tlsIn := in
	tlsIn.CASecret = "agent-ca"
	metrics, err = MetricsValues(tlsIn)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "kube-prometheus-stack-tls.yaml", metrics)

	noRelay := in
	noRelay.Relay, noRelay.TokenSecret = false, ""
	metrics, err = MetricsValues(noRelay)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := dig(metrics, "prometheus", "prometheusSpec").(map[string]any)["remoteWrite"]; ok {
		t.Error("remoteWrite without a relay")
	}
	none := in
	none.Manager = stackconfig.Manager{TracesOTLPProtocol: "grpc"}
	if _, ok, _ := LogsValues(none); ok {
		t.Error("logs values without manager.logs_url")
	}
	if _, ok, _ := TracesValues(none, "g"); ok {
		t.Error("traces values without manager.traces_otlp_endpoint")
	}
	if env := AppValues(none, goldenApp(), false)["env"].([]any); len(env) != 5 {
		t.Errorf("env without traces = %v, want K8S_NODE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME and the app's two", env)
	}
}

// The vector chart runs its values through tpl: a template in a value the
// agent renders is refused rather than executed.
func TestLogsValuesRefuseTemplates(t *testing.T) {
	in := goldenInput()
	in.Manager.LogsURL = "https://m.example/{{ .Release.Name }}"
	if _, _, err := LogsValues(in); err == nil || !strings.Contains(err.Error(), "a value holds a template opening {{") {
		t.Fatalf("LogsValues = %v", err)
	}
}

// The trace collector's configuration is checked by the real Jaeger v2
// (`jaeger validate`), as the chart's pod would read it.
func TestTracesConfigValidatesWithJaeger(t *testing.T) {
	bin := processtest.Testbin(t, "jaeger", "jaeger")
	for _, proto := range []struct{ protocol, endpoint string }{{"grpc", "https://manager.example:4317"}, {"http", "http://manager.example:4318/otlp"}} {
		in := goldenInput()
		in.Manager.TracesOTLPProtocol, in.Manager.TracesOTLPEndpoint = proto.protocol, proto.endpoint
		v, _, err := TracesValues(in, "shop-1")
		if err != nil {
			t.Fatal(err)
		}
		b, err := yaml.Marshal(v["userconfig"])
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "user-config.yaml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, bin, "validate", "--config=file:"+path).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("jaeger validate (%s): %v\n%s\n%s", proto.protocol, err, out, b)
		}
	}
}

// The built-in app chart is lint-clean and renders what the app spec says.
func TestAppChartLintsAndRenders(t *testing.T) {
	ch, err := helm.LoadFS(appChartFS, "appchart")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := chartutil.Save(ch.Chart, dir); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, ch.Metadata.Name+"-"+ch.Metadata.Version+".tgz")
	lint := action.NewLint()
	lint.Strict = true
	res := lint.Run([]string{archive}, AppValues(goldenInput(), goldenApp(), true))
	for _, m := range res.Messages {
		if m.Severity >= support.WarningSev { // INFO (an icon) is advice
			t.Errorf("helm lint: %s", m)
		}
	}
	for _, e := range res.Errors {
		t.Errorf("helm lint error: %v", e)
	}
}

// The metrics stack's own scrape configs are raw Prometheus config: the
// real promtool of Prometheus 2.42 (Debian) and 3.16 (testbin) check
// them, with the agents' API on http and on https (the CA from the
// Secret the operator mounts, the Service's name for every pod).
func TestMetricsScrapeConfigsPromtool(t *testing.T) {
	promtools := []string{
		processtest.LookPath(t, "promtool", "apt-get install prometheus"),
		processtest.Testbin(t, "prometheus3", "promtool"),
	}
	for _, caSecret := range []string{"", "agent-ca"} {
		in := goldenInput()
		in.CASecret = caSecret
		v, err := MetricsValues(in)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := yaml.Marshal(map[string]any{"scrape_configs": dig(v, "prometheus", "prometheusSpec", "additionalScrapeConfigs")})
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "prometheus.yml")
		if err := os.WriteFile(file, cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, promtool := range promtools {
			out, err := exec.Command(promtool, "check", "config", "--syntax-only", file).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "SUCCESS") || strings.Contains(string(out), "WARNING") {
				t.Fatalf("CA secret %q: %s check config: %v\n%s\n%s", caSecret, promtool, err, out, cfg)
			}
		}
	}
}
