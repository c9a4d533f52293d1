package stackconfig

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
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

// testPrometheusTLSInput is testPrometheusInput for agents whose API
// speaks https: the relay is reached over https, the agents' CA trusted.
func testPrometheusTLSInput() PrometheusInput {
	in := testPrometheusInput()
	in.RemoteWriteURL = "https://10.0.0.1:9464/api/v1/write"
	in.AgentCAFile = "/etc/agent/tls/ca.pem"
	return in
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

	b, err = RenderPrometheus(testPrometheusTLSInput())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "prometheus-api-tls.yml.golden", b)
}

func TestRenderPrometheusParsesBack(t *testing.T) {
	// A path checkPath lets through that YAML would otherwise misread.
	const caFile = "/etc/agent tls/ca #1: - yes.pem"
	for _, v := range hostile {
		for _, tls := range []bool{false, true} {
			in := testPrometheusInput()
			in.ExternalLabels = model.LabelSet{"cluster": model.LabelValue(v), "x_y": model.LabelValue("pre" + v + "post")}
			in.RemoteWriteURL = "https://relay.example:9464/api/v1/write?a='$x'&b=$$"
			if tls {
				in.AgentCAFile = caFile
			}
			b, err := RenderPrometheus(in)
			if err != nil {
				t.Fatalf("%q: %v", v, err)
			}
			var got promConfig
			if err := yaml.Unmarshal(b, &got); err != nil {
				t.Fatalf("%q: parse back: %v\n%s", v, err, b)
			}
			fileSD := []promFileSDConfig{{Files: []string{"/var/lib/agent/sd/*.json"}, RefreshInterval: model.Duration(time.Minute)}}
			want := promConfig{
				Global: promGlobal{
					ScrapeInterval:     model.Duration(in.ScrapeInterval),
					ScrapeTimeout:      model.Duration(in.ScrapeTimeout),
					EvaluationInterval: model.Duration(in.EvaluationInterval),
					ExternalLabels:     in.ExternalLabels,
				},
				ScrapeConfigs: []promScrapeConfig{
					{JobName: JobTargets, FileSDConfigs: fileSD},
					{JobName: JobPrometheus, StaticConfigs: []promStaticConfig{{Targets: []string{"127.0.0.1:9090"}}}},
				},
				RemoteWrite: []promRemoteWrite{{
					URL: in.RemoteWriteURL, Name: "relay", RemoteTimeout: model.Duration(30 * time.Second), QueueConfig: relayQueue, SendNativeHistograms: true,
					MetadataConfig: promMetadataConfig{Send: true, SendInterval: model.Duration(time.Minute)},
				}},
			}
			if tls {
				rule := func(action string) []promRelabelConfig {
					return []promRelabelConfig{{SourceLabels: []string{"job", "__scheme__"}, Regex: "agent-monitor;https", Action: action}}
				}
				want.ScrapeConfigs = []promScrapeConfig{
					{JobName: JobTargets, FileSDConfigs: fileSD, RelabelConfigs: rule("drop")},
					{JobName: JobAgentAPI, TLSConfig: &promTLSConfig{CAFile: caFile}, FileSDConfigs: fileSD, RelabelConfigs: rule("keep")},
					want.ScrapeConfigs[1],
				}
				want.RemoteWrite[0].TLSConfig = &promTLSConfig{CAFile: caFile}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%q (agent CA %t): parsed back\n%+v\nwant\n%+v\n%s", v, tls, got, want, b)
			}
		}
	}
}

// TestRenderPrometheusAgentAPITargets checks, without a running
// Prometheus, that the agent-targets and agent-api scrape configs split
// the file_sd targets between them: each target is scraped by exactly one,
// agent-api (with the agents' CA) taking only node monitors served over
// https. The relabelling is modelled as Prometheus does it (promtool
// checks the config is valid; an end-to-end test scrapes for real): a
// target's job is its group's or else the job_name, its __scheme__ its
// group's or else the scrape config's (http); source label values are
// joined by ';' and the regex is anchored at both ends.
func TestRenderPrometheusAgentAPITargets(t *testing.T) {
	b, err := RenderPrometheus(testPrometheusTLSInput())
	if err != nil {
		t.Fatal(err)
	}
	var cfg promConfig
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.ScrapeConfigs) != 3 || cfg.ScrapeConfigs[0].JobName != JobTargets || cfg.ScrapeConfigs[1].JobName != JobAgentAPI {
		t.Fatalf("scrape configs: want %s, %s, %s, got\n%s", JobTargets, JobAgentAPI, JobPrometheus, b)
	}
	targets, api := cfg.ScrapeConfigs[0], cfg.ScrapeConfigs[1]
	if !reflect.DeepEqual(targets.FileSDConfigs, api.FileSDConfigs) {
		t.Errorf("%s and %s read different file_sd files:\n%s", JobTargets, JobAgentAPI, b)
	}
	if targets.TLSConfig != nil || api.TLSConfig == nil || api.TLSConfig.CAFile != "/etc/agent/tls/ca.pem" {
		t.Errorf("only %s trusts the agents' CA:\n%s", JobAgentAPI, b)
	}
	// The two rules are one condition, dropped on one side, kept on the other.
	if len(targets.RelabelConfigs) != 1 || len(api.RelabelConfigs) != 1 {
		t.Fatalf("want one relabel rule each:\n%s", b)
	}
	drop, keep := targets.RelabelConfigs[0], api.RelabelConfigs[0]
	if drop.Action != "drop" || keep.Action != "keep" {
		t.Errorf("actions: %s has %q, %s has %q; want drop and keep", JobTargets, drop.Action, JobAgentAPI, keep.Action)
	}
	wantLabels := []string{"job", "__scheme__"}
	if !reflect.DeepEqual(drop.SourceLabels, wantLabels) || !reflect.DeepEqual(keep.SourceLabels, wantLabels) ||
		drop.Regex != "agent-monitor;https" || keep.Regex != drop.Regex {
		t.Errorf("rules: %+v and %+v, want source_labels %v with regex agent-monitor;https", drop, keep, wantLabels)
	}

	scrapedBy := func(sc promScrapeConfig, group model.LabelSet) bool {
		ls := model.LabelSet{"job": model.LabelValue(sc.JobName), "__scheme__": "http"}
		maps.Copy(ls, group)
		for _, r := range sc.RelabelConfigs {
			values := make([]string, len(r.SourceLabels))
			for i, name := range r.SourceLabels {
				values[i] = string(ls[model.LabelName(name)])
			}
			match := regexp.MustCompile("^(?:" + r.Regex + ")$").MatchString(strings.Join(values, ";"))
			if r.Action == "drop" && match || r.Action == "keep" && !match {
				return false
			}
		}
		return true
	}
	for _, tc := range []struct {
		group model.LabelSet
		api   bool // scraped by agent-api, else by agent-targets
	}{
		{model.LabelSet{"job": MonitorJob, "__scheme__": "https", "node": "n1"}, true},
		{model.LabelSet{"job": MonitorJob, "node": "n2"}, false}, // a plain agent in the same cluster
		{model.LabelSet{"job": MonitorJob, "__scheme__": "http"}, false},
		{model.LabelSet{"job": "app", "__scheme__": "https"}, false}, // an exporter's own https: system roots
		{model.LabelSet{"job": "node"}, false},
		{model.LabelSet{"__scheme__": "https"}, false}, // no job: job_name is not agent-monitor
		{model.LabelSet{"job": MonitorJob + "x", "__scheme__": "https"}, false},
		{model.LabelSet{"job": MonitorJob, "__scheme__": "httpsx"}, false},
	} {
		inTargets, inAPI := scrapedBy(targets, tc.group), scrapedBy(api, tc.group)
		if inTargets == inAPI || inAPI != tc.api {
			t.Errorf("%v: scraped by %s %t, by %s %t; want only by %s", tc.group, JobTargets, inTargets, JobAgentAPI, inAPI, map[bool]string{true: JobAgentAPI, false: JobTargets}[tc.api])
		}
	}
}

// TestRenderPrometheusAgentCAOnlyForHTTPSRelay: an agent CA trusts the
// relay only when it is reached over https (a plain master API in a
// cluster of TLS agents keeps a plain remote_write).
func TestRenderPrometheusAgentCAOnlyForHTTPSRelay(t *testing.T) {
	in := testPrometheusTLSInput()
	in.RemoteWriteURL = "http://10.0.0.1:9464/api/v1/write"
	b, err := RenderPrometheus(in)
	if err != nil {
		t.Fatal(err)
	}
	var cfg promConfig
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.RemoteWrite) != 1 || cfg.RemoteWrite[0].TLSConfig != nil {
		t.Errorf("plain relay with a tls_config:\n%s", b)
	}
	if len(cfg.ScrapeConfigs) != 3 || cfg.ScrapeConfigs[1].JobName != JobAgentAPI {
		t.Errorf("the agents' https monitors are not scraped by %s:\n%s", JobAgentAPI, b)
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
		{func(in *PrometheusInput) { in.AgentCAFile = "tls/ca.pem" }, `agent_ca_file: must be an absolute path, got "tls/ca.pem"`},
		{func(in *PrometheusInput) { in.AgentCAFile = "/etc/agent/ca$x.pem" }, `agent_ca_file: must not contain control characters, quotes, backslash, $, { or }, got "/etc/agent/ca$x.pem"`},
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
// 2.0, native histograms) Prometheus 3's; each also with the agents' API
// on https (agent-api's tls_config, the relay over https). The CA file is
// a real one although neither promtool opens a ca_file (checked by hand:
// a missing one passes), so the check holds if a later promtool does.
func TestRenderPrometheusPromtool(t *testing.T) {
	promtool2 := processtest.LookPath(t, "promtool", "apt-get install prometheus")
	promtool3 := processtest.Testbin(t, "prometheus3", "promtool")
	for _, tc := range []struct {
		major     int
		tls       bool
		promtools []string
	}{
		{2, false, []string{promtool2, promtool3}},
		{3, false, []string{promtool3}},
		{2, true, []string{promtool2, promtool3}},
		{3, true, []string{promtool3}},
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
		if tc.tls {
			in.RemoteWriteURL = "https://10.0.0.1:9464/api/v1/write"
			in.AgentCAFile = testca.New(t).CertFile
		}
		cfg, err := RenderPrometheus(in)
		if err != nil {
			t.Fatal(err)
		}
		// Node monitors of a TLS agent and of a plain one besides the
		// exporters.
		sd, err := RenderFileSD(append(testTargetGroups(),
			TargetGroup{Targets: []string{"10.0.0.1:9464"}, Labels: model.LabelSet{"job": MonitorJob, "node": "n1", "__scheme__": "https", "__metrics_path__": "/metrics/monitor"}},
			TargetGroup{Targets: []string{"10.0.0.2:9464"}, Labels: model.LabelSet{"job": MonitorJob, "node": "n2", "__metrics_path__": "/metrics/monitor"}},
		))
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
				t.Fatalf("config for Prometheus %d (agent CA %t): %s check config: %v\n%s\n%s", tc.major, tc.tls, promtool, err, out, cfg)
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
	debian := processtest.LookPath(t, "prometheus", "apt-get install prometheus")
	if got, how := PrometheusMajor(ctx, PrometheusStack{Binary: debian, Image: "prom/prometheus:v3.0.0"}, "process"); got != 2 {
		t.Errorf("%s: %d (%s), want 2", debian, got, how)
	}
	p3 := processtest.Testbin(t, "prometheus3", "prometheus")
	if got, how := PrometheusMajor(ctx, PrometheusStack{Binary: p3}, "process"); got != 3 || !strings.Contains(how, "3.16.0") {
		t.Errorf("%s: %d (%s), want 3 from its --version", p3, got, how)
	}
}
