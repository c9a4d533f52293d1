package stackconfig

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/agentproj/agent/drivers/process/processtest"
)

// hostile are values built to break YAML, TOML, JSON, VRL or the stack's own
// expansion (${...}, $VAR, SECRET[...], {{ }}): wherever one is accepted it
// must come out of the parser exactly as it went in.
var hostile = []string{
	`"`, `'`, `\`, "`", "\n", "\r\n", "\t", "\x00", "a\nb: c", "- x", ": ", "#", " # c",
	"}", "{", "{{ .x }}", "]]", "[sinks.evil]\ntype = 'x'", `"""`, "'''",
	"${HOME}", "$HOME", "$$", "${file:/etc/passwd}", "SECRET[a.b]",
	"*a", "&a", "!!binary x", "%TAG", "@", "yes", "null", "1e3", "0x10", "~", "é✓", " lead", "trail ",
}

func testPrometheusInput() PrometheusInput {
	return PrometheusInput{
		ScrapeInterval:     15 * time.Second,
		ScrapeTimeout:      10 * time.Second,
		EvaluationInterval: 30 * time.Second,
		ExternalLabels:     model.LabelSet{"cluster": "prod-eu", "env": "prod"},
		SDDir:              "/var/lib/agent/sd",
		SDRefreshInterval:  time.Minute,
		Listen:             "0.0.0.0:9090",
		RemoteWriteURL:     "http://10.0.0.1:9464/api/v1/write",
	}
}

func TestRenderPrometheusGolden(t *testing.T) {
	in := testPrometheusInput()
	b, err := RenderPrometheus(in)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "prometheus.yml.golden", b)

	in.RemoteWriteURL, in.ExternalLabels = "", nil
	b, err = RenderPrometheus(in)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "prometheus-no-relay.yml.golden", b)

	in = testPrometheusInput()
	in.Major, in.NativeHistograms = 3, true
	b, err = RenderPrometheus(in)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "prometheus3.yml.golden", b)
}

func TestRenderPrometheusParsesBack(t *testing.T) {
	for _, v := range hostile {
		in := testPrometheusInput()
		in.ExternalLabels = model.LabelSet{"cluster": model.LabelValue(v), "x_y": model.LabelValue("pre" + v + "post")}
		in.RemoteWriteURL = "https://relay.example:9464/api/v1/write?a='$x'&b=$$"
		b, err := RenderPrometheus(in)
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		var got promConfig
		if err := yaml.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q: parse back: %v\n%s", v, err, b)
		}
		want := promConfig{
			Global: promGlobal{
				ScrapeInterval:     model.Duration(in.ScrapeInterval),
				ScrapeTimeout:      model.Duration(in.ScrapeTimeout),
				EvaluationInterval: model.Duration(in.EvaluationInterval),
				ExternalLabels:     in.ExternalLabels,
			},
			ScrapeConfigs: []promScrapeConfig{
				{JobName: JobTargets, FileSDConfigs: []promFileSDConfig{{Files: []string{"/var/lib/agent/sd/*.json"}, RefreshInterval: model.Duration(time.Minute)}}},
				{JobName: JobPrometheus, StaticConfigs: []promStaticConfig{{Targets: []string{"127.0.0.1:9090"}}}},
			},
			RemoteWrite: []promRemoteWrite{{
				URL: in.RemoteWriteURL, Name: "relay", RemoteTimeout: model.Duration(30 * time.Second), QueueConfig: relayQueue, SendNativeHistograms: true,
				MetadataConfig: promMetadataConfig{Send: true, SendInterval: model.Duration(time.Minute)},
			}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q: parsed back\n%+v\nwant\n%+v\n%s", v, got, want, b)
		}
	}
}

func TestRenderPrometheusRejects(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*PrometheusInput)
		want   string
	}{
		{func(in *PrometheusInput) { in.ScrapeInterval = 0 }, "render prometheus: scrape_interval: must be > 0, got 0s"},
		{func(in *PrometheusInput) { in.ScrapeTimeout = time.Hour }, "scrape_timeout: must be <= scrape_interval (15s), got 1h0m0s"},
		{func(in *PrometheusInput) { in.SDRefreshInterval = 0 }, "sd_refresh_interval: must be > 0, got 0s"},
		{func(in *PrometheusInput) { in.ExternalLabels = model.LabelSet{"a\nb": "x"} }, `external_labels: label name must match ^[a-zA-Z_][a-zA-Z0-9_]*$, got "a\nb"`},
		{func(in *PrometheusInput) { in.ExternalLabels = model.LabelSet{"__name__": "x"} }, `external_labels: label names starting with __ are reserved, got "__name__"`},
		{func(in *PrometheusInput) { in.SDDir = "sd" }, `sd_dir: must be an absolute path, got "sd"`},
		{func(in *PrometheusInput) { in.SDDir = "/var/lib/agent/sd\n- /etc" }, `sd_dir: must not contain control characters`},
		{func(in *PrometheusInput) { in.SDDir = "/var/lib/*" }, `sd_dir: must not contain glob characters * ? [ ], got "/var/lib/*"`},
		{func(in *PrometheusInput) { in.Listen = "localhost" }, `listen: must be host:port, got "localhost"`},
		{func(in *PrometheusInput) { in.RemoteWriteURL = "http://x/write\"\nremote_read: []" }, `remote_write_url: must be an http:// or https:// URL with a host and only URL characters`},
		{func(in *PrometheusInput) { in.RemoteWriteURL = "http:///write" }, `remote_write_url: must be an http:// or https:// URL with a host, got "http:///write"`},
		{func(in *PrometheusInput) { in.NativeHistograms = true }, `native_histograms: needs Prometheus 3 or later (2.x takes --enable-feature=native-histograms), got version 2`},
	} {
		in := testPrometheusInput()
		tc.mutate(&in)
		_, err := RenderPrometheus(in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RenderPrometheus() = %v\nwant it to contain %q", err, tc.want)
		}
	}
}

// TestRenderPrometheusPromtool has the real promtool of Prometheus 2.42
// (Debian) and 3.16 (testbin) check the rendered configurations together
// with a file_sd file from RenderFileSD (promtool reads the files the glob
// matches): the config for 2 must pass both, the one for 3 (remote-write
// 2.0, native histograms) Prometheus 3's.
func TestRenderPrometheusPromtool(t *testing.T) {
	promtool2 := lookPathOrSkip(t, "promtool", "apt-get install prometheus")
	promtool3 := processtest.Testbin(t, "prometheus3", "promtool")
	for _, tc := range []struct {
		major     int
		promtools []string
	}{
		{2, []string{promtool2, promtool3}},
		{3, []string{promtool3}},
	} {
		dir := t.TempDir()
		in := testPrometheusInput()
		in.Major, in.NativeHistograms = tc.major, tc.major >= 3
		in.SDDir = filepath.Join(dir, "sd")
		in.ExternalLabels = model.LabelSet{"cluster": "c1", "note": model.LabelValue(strings.Join(hostile, ""))}
		in.RemoteWriteTokenFile = filepath.Join(dir, "token") // the relay behind the API token
		if err := os.WriteFile(in.RemoteWriteTokenFile, []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := RenderPrometheus(in)
		if err != nil {
			t.Fatal(err)
		}
		sd, err := RenderFileSD(testTargetGroups())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(in.SDDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{"prometheus.yml": cfg, "sd/node.json": sd} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, promtool := range tc.promtools {
			out, err := exec.Command(promtool, "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "SUCCESS") || strings.Contains(string(out), "WARNING") {
				t.Fatalf("config for Prometheus %d: %s check config: %v\n%s\n%s", tc.major, promtool, err, out, cfg)
			}
		}
	}
}

func TestPrometheusMajor(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		p      PrometheusStack
		driver string
		want   int
	}{
		{PrometheusStack{Version: "3.16.0", Image: "prom/prometheus:v2.42.0"}, "docker", 3},
		{PrometheusStack{Version: "2"}, "process", 2},
		{PrometheusStack{Image: "prom/prometheus:v3.5.1"}, "docker", 3},
		{PrometheusStack{Image: "registry.example:5000/prom/prometheus:v2.53.0"}, "docker", 2},
		{PrometheusStack{Image: "registry.example:5000/prometheus"}, "docker", 2},
		{PrometheusStack{Image: "prom/prometheus:latest"}, "docker", 2},
		{PrometheusStack{Binary: "/nonexistent/prometheus", Image: "prom/prometheus:v3.0.0"}, "process", 2},
		{PrometheusStack{}, "none", 2},
	} {
		if got, how := PrometheusMajor(ctx, tc.p, tc.driver); got != tc.want {
			t.Errorf("%+v with %s: %d (%s), want %d", tc.p, tc.driver, got, how, tc.want)
		}
	}
	// The real binaries say what they are.
	debian := lookPathOrSkip(t, "prometheus", "apt-get install prometheus")
	if got, how := PrometheusMajor(ctx, PrometheusStack{Binary: debian, Image: "prom/prometheus:v3.0.0"}, "process"); got != 2 {
		t.Errorf("%s: %d (%s), want 2", debian, got, how)
	}
	p3 := processtest.Testbin(t, "prometheus3", "prometheus")
	if got, how := PrometheusMajor(ctx, PrometheusStack{Binary: p3}, "process"); got != 3 || !strings.Contains(how, "3.16.0") {
		t.Errorf("%s: %d (%s), want 3 from its --version", p3, got, how)
	}
}

// lookPathOrSkip finds a tool the test needs: missing, the test is skipped,
// except in CI (CI=true) where it fails.
func lookPathOrSkip(t *testing.T, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (CI=true): %s", name, install)
	}
	t.Skipf("%s not found: %s", name, install)
	return ""
}
