package stackconfig

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

func TestDefaultStackAndManagerAreValid(t *testing.T) {
	s, m := DefaultStack, DefaultManager
	if err := errors.Join(s.Validate()...); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(m.Validate()...); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Components() {
		if !c.Enabled || c.Image == "" {
			t.Errorf("default %s: enabled %v, image %q", c.Name, c.Enabled, c.Image)
		}
	}
}

// TestStackValidateNamesKeyAndValue also tries values built to break the
// rendered files: they must be refused here, before any renderer sees them.
func TestStackValidateNamesKeyAndValue(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Stack)
		want   string
	}{
		{func(s *Stack) { s.Driver = "k8s" }, `stack.driver: must be one of "", docker, process, helm, none, got "k8s"`},
		{func(s *Stack) { s.Prometheus.ScrapeInterval = 0 }, "stack.prometheus.scrape_interval: must be > 0, got 0s"},
		{func(s *Stack) { s.Prometheus.EvaluationInterval = -time.Second }, "stack.prometheus.evaluation_interval: must be > 0, got -1s"},
		{func(s *Stack) { s.Prometheus.Retention = 0 }, "stack.prometheus.retention: must be > 0, got 0s"},
		{func(s *Stack) { s.Prometheus.FileSDRefreshInterval = time.Microsecond }, "stack.prometheus.file_sd_refresh_interval: must be a whole number of milliseconds, got 1µs"},
		{func(s *Stack) { s.Prometheus.ScrapeTimeout = time.Minute }, "stack.prometheus.scrape_timeout: must be <= scrape_interval (15s), got 1m0s"},
		{func(s *Stack) { s.Prometheus.Listen = ":9090" }, `stack.prometheus.listen: must have a host, got ":9090"`},
		{func(s *Stack) { s.Prometheus.Listen = "127.0.0.1:99999" }, `stack.prometheus.listen: must be host:port with a port from 1 to 65535, got "127.0.0.1:99999"`},
		{func(s *Stack) { s.Prometheus.Listen = "127.0.0.1" }, `stack.prometheus.listen: must be host:port, got "127.0.0.1"`},
		{func(s *Stack) { s.Prometheus.Listen = "a\"b:1" }, `stack.prometheus.listen: host must be an IP address or a DNS name, got "a\"b:1"`},
		{func(s *Stack) { s.Prometheus.Listen = "a\nb:1" }, `stack.prometheus.listen: host must be an IP address or a DNS name, got "a\nb:1"`},
		{func(s *Stack) { s.Prometheus.ExternalLabels = map[string]string{"a-b": "x"} }, `stack.prometheus.external_labels: label name must match ^[a-zA-Z_][a-zA-Z0-9_]*$, got "a-b"`},
		{func(s *Stack) { s.Prometheus.ExternalLabels = map[string]string{"__x": "x"} }, `stack.prometheus.external_labels: label names starting with __ are reserved, got "__x"`},
		{func(s *Stack) { s.Prometheus.ExternalLabels = map[string]string{"env": ""} }, `stack.prometheus.external_labels.env: must be non-empty UTF-8, got ""`},
		{func(s *Stack) { s.Prometheus.ExternalLabels = map[string]string{"env": "\xff"} }, `stack.prometheus.external_labels.env: must be non-empty UTF-8, got "\xff"`},
		{func(s *Stack) { s.Prometheus.Image = "prom/prometheus:v2\nx: 1" }, `stack.prometheus.image: must be a docker image reference like registry:5000/name/image:tag, got "prom/prometheus:v2\nx: 1"`},
		{func(s *Stack) { s.Vector.Image = "Timber/Vector" }, `stack.vector.image: must be a docker image reference`},
		{func(s *Stack) { s.Vector.APIListen = "0.0.0.0:8686" }, `stack.vector.api_listen: must be a loopback address like 127.0.0.1:8686, got "0.0.0.0:8686"`},
		{func(s *Stack) { s.Vector.APIListen = "localhost:8686" }, `stack.vector.api_listen: must be a loopback address like 127.0.0.1:8686, got "localhost:8686"`},
		{func(s *Stack) { s.Vector.APIListen = ":8686" }, `stack.vector.api_listen: must have a host, got ":8686"`},
		{func(s *Stack) { s.Vector.APIListen = "127.0.0.1:0" }, `stack.vector.api_listen: must be host:port with a port from 1 to 65535, got "127.0.0.1:0"`},
		{func(s *Stack) { s.Driver, s.Jaeger.Image = "docker", "" }, `stack.jaeger.image: must be set when the docker driver runs it, got ""`},
		{func(s *Stack) { s.Prometheus.Binary = "prometheus" }, `stack.prometheus.binary: must be an absolute path, got "prometheus"`},
		{func(s *Stack) { s.NodeExporter.Binary = "/usr/bin/../bin/x" }, `stack.node_exporter.binary: must be a clean path (no //, /./, /../ or trailing /), got "/usr/bin/../bin/x"`},
		{func(s *Stack) { s.NodeExporter.Listen = "[::1]:0" }, `stack.node_exporter.listen: must be host:port with a port from 1 to 65535, got "[::1]:0"`},
		{func(s *Stack) { s.Jaeger.OTLPGRPCListen = "x" }, `stack.jaeger.otlp_grpc_listen: must be host:port, got "x"`},
		{func(s *Stack) { s.Jaeger.OTLPHTTPListen = "}:1" }, `stack.jaeger.otlp_http_listen: host must be an IP address or a DNS name, got "}:1"`},
		{func(s *Stack) { s.Jaeger.QueueSize = 0 }, "stack.jaeger.queue_size: must be > 0, got 0"},
		{func(s *Stack) { s.Jaeger.HealthListen = ":13133" }, `stack.jaeger.health_listen: must have a host, got ":13133"`},
		{func(s *Stack) { s.Logs.Shipper = "fluentbit" }, `stack.logs.shipper: must be otelcol or vector, got "fluentbit"`},
		{func(s *Stack) { s.Logs.QueueSize = 0 }, "stack.logs.queue_size: must be > 0, got 0"},
		{func(s *Stack) { s.TraceAgent.MemoryLimitMiB = 8 }, "stack.trace_agent.memory_limit_mib: must be >= 32, got 8"},
		{func(s *Stack) { s.TraceAgent.OTLPGRPCListen = ":14317" }, `stack.trace_agent.otlp_grpc_listen: must have a host, got ":14317"`},
		{func(s *Stack) { s.TraceAgent.TelemetryListen = "#:1" }, `stack.trace_agent.telemetry_listen: host must be an IP address or a DNS name, got "#:1"`},
		{func(s *Stack) { s.TraceAgent.QueueSize = -1 }, "stack.trace_agent.queue_size: must be > 0, got -1"},
		{func(s *Stack) { s.Logs.Files = []string{"var/log/*.log"} }, `stack.logs.files[0]: must be an absolute path, got "var/log/*.log"`},
		{func(s *Stack) { s.Logs.Files = []string{"/var/log/a'b"} }, `stack.logs.files[0]: must not contain control characters, quotes, backslash, $, { or }, got "/var/log/a'b"`},
		{func(s *Stack) { s.Logs.Files = []string{"/var/log/${HOME}"} }, `stack.logs.files[0]: must not contain control characters, quotes, backslash, $, { or }`},
		{func(s *Stack) { s.Logs.Files = []string{"/var/log/x\n[sinks.evil]"} }, `stack.logs.files[0]: must not contain control characters`},
		{func(s *Stack) { s.Logs.Files = []string{"/var/log/SECRET[a.b]"} }, `stack.logs.files[0]: must not contain SECRET[ (a Vector secret reference), got "/var/log/SECRET[a.b]"`},
		{func(s *Stack) { s.Logs.Files = []string{"/var/log/[a"} }, `stack.logs.files[0]: must be a valid glob pattern, got "/var/log/[a"`},
	} {
		s := DefaultStack
		s.Prometheus.ExternalLabels = nil
		tc.mutate(&s)
		err := errors.Join(s.Validate()...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v\nwant it to contain %q", err, tc.want)
		}
	}
}

func TestManagerValidateNamesKeyAndValue(t *testing.T) {
	for _, tc := range []struct {
		m    Manager
		want string
	}{
		{Manager{TracesOTLPProtocol: "thrift"}, `manager.traces_otlp_protocol: must be grpc or http, got "thrift"`},
		{Manager{LogsURL: "ftp://x/logs"}, `manager.logs_url: must be an http:// or https:// URL with a host, got "ftp://x/logs"`},
		{Manager{LogsURL: "http://x/logs\"\n[sinks.evil]"}, `manager.logs_url: must be an http:// or https:// URL with a host and only URL characters (no quotes, spaces, braces or control characters), got "http://x/logs\"\n[sinks.evil]"`},
		{Manager{LogsURL: "http://x/${HOME}"}, `manager.logs_url: must be an http:// or https:// URL with a host and only URL characters`},
		{Manager{LogsURL: "http://u:p@x/logs"}, `manager.logs_url: must be an http:// or https:// URL with a host and no user information (use a bearer token file), got "http://u:p@x/logs"`},
		{Manager{LogsURL: "http://x/logs#frag"}, `manager.logs_url: must be an http:// or https:// URL with a host and no fragment`},
		{Manager{LogsURL: "http://x:0/logs"}, `manager.logs_url: must be an http:// or https:// URL with a host and a port from 1 to 65535`},
		{Manager{LogsURL: "http://a_b/logs"}, `manager.logs_url: must be an http:// or https:// URL with a host: host must be an IP address or a DNS name, got "http://a_b/logs"`},
		{Manager{LogsURL: "http://x/SECRET[a.b]"}, `manager.logs_url: must not contain SECRET[ (a Vector secret reference), got "http://x/SECRET[a.b]"`},
		{Manager{LogsBearerTokenFile: "/etc/t"}, `manager.logs_bearer_token_file: needs manager.logs_url, got "/etc/t"`},
		{Manager{LogsURL: "http://x/l", LogsBearerTokenFile: "/etc/logs-token"}, `manager.logs_bearer_token_file: file name must match ^[A-Za-z0-9_.]+$ (Vector reads it as a secret), got "/etc/logs-token"`},
		{Manager{LogsURL: "http://x/l", LogsBearerTokenFile: "/etc/$t"}, `manager.logs_bearer_token_file: must not contain control characters, quotes, backslash, $, { or }, got "/etc/$t"`},
		{Manager{TracesOTLPProtocol: "grpc", TracesOTLPEndpoint: "http://m:4317/v1/traces"}, `manager.traces_otlp_endpoint: must be http(s)://host:port with no path for the grpc protocol, got "http://m:4317/v1/traces"`},
		{Manager{TracesOTLPProtocol: "grpc", TracesOTLPEndpoint: "m:4317"}, `manager.traces_otlp_endpoint: must be an http:// or https:// URL with a host, got "m:4317"`},
		{Manager{TracesOTLPProtocol: "grpc", TracesBearerTokenFile: "/t"}, `manager.traces_bearer_token_file: needs manager.traces_otlp_endpoint, got "/t"`},
		{Manager{TracesOTLPProtocol: "grpc", TracesOTLPEndpoint: "http://m:4317", TracesBearerTokenFile: "/t}"}, `manager.traces_bearer_token_file: must not contain control characters, quotes, backslash, $, { or }, got "/t}"`},
	} {
		err := errors.Join(tc.m.Validate()...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: Validate() = %v\nwant it to contain %q", tc.m, err, tc.want)
		}
	}
	good := Manager{
		LogsURL: "https://manager.example/api/logs?tenant=a", LogsBearerTokenFile: "/etc/agent/logs.token",
		TracesOTLPEndpoint: "https://manager.example:4317", TracesOTLPProtocol: "grpc", TracesBearerTokenFile: "/etc/agent/traces-token",
	}
	if err := errors.Join(good.Validate()...); err != nil {
		t.Fatal(err)
	}
	good.TracesOTLPProtocol, good.TracesOTLPEndpoint = "http", "http://10.0.0.9:4318/otlp"
	if err := errors.Join(good.Validate()...); err != nil {
		t.Fatal(err)
	}
}

// TestStackDecodesFromTOML decodes the sections the way Load does (viper,
// mapstructure, unknown keys rejected), so the tags are right before the
// sections are wired into Config.
func TestStackDecodesFromTOML(t *testing.T) {
	type sections struct {
		Stack   Stack   `mapstructure:"stack"`
		Manager Manager `mapstructure:"manager"`
	}
	v := viper.New()
	v.SetConfigType("toml")
	err := v.ReadConfig(strings.NewReader(`
[stack]
driver = "process"
[stack.prometheus]
scrape_interval = "30s"
retention = "12h"
external_labels = { env = "prod" }
[stack.node_exporter]
listen = "0.0.0.0:9100"
[stack.jaeger]
otlp_grpc_listen = "10.0.0.1:4317"
[stack.trace_agent]
enabled = false
[stack.vector]
api_listen = "[::1]:8687"
[stack.logs]
shipper = "vector"
files = ["/var/log/syslog"]
[manager]
logs_url = "https://m/logs"
traces_otlp_endpoint = "https://m:4317"
`))
	if err != nil {
		t.Fatal(err)
	}
	got := sections{Stack: DefaultStack, Manager: DefaultManager}
	if err := v.UnmarshalExact(&got, viper.DecodeHook(mapstructure.StringToTimeDurationHookFunc())); err != nil {
		t.Fatal(err)
	}
	s := got.Stack
	if s.Driver != "process" || s.Prometheus.ScrapeInterval != 30*time.Second || s.Prometheus.Retention != 12*time.Hour ||
		s.Prometheus.ExternalLabels["env"] != "prod" || s.Prometheus.Listen != DefaultStack.Prometheus.Listen ||
		s.NodeExporter.Listen != "0.0.0.0:9100" || s.Jaeger.OTLPGRPCListen != "10.0.0.1:4317" || s.TraceAgent.Enabled ||
		s.Vector.APIListen != "[::1]:8687" || s.Vector.Image != DefaultStack.Vector.Image ||
		len(s.Logs.Files) != 1 || s.Logs.Shipper != ShipperVector || s.Logs.QueueSize != DefaultStack.Logs.QueueSize || got.Manager.LogsURL != "https://m/logs" || got.Manager.TracesOTLPProtocol != "grpc" {
		t.Fatalf("decoded %+v", got)
	}
	if err := errors.Join(append(s.Validate(), got.Manager.Validate()...)...); err != nil {
		t.Fatal(err)
	}

	v = viper.New()
	v.SetConfigType("toml")
	if err := v.ReadConfig(strings.NewReader("[stack.prometheus]\nscrape_intervall = \"1s\"\n")); err != nil {
		t.Fatal(err)
	}
	got = sections{Stack: DefaultStack}
	if err := v.UnmarshalExact(&got); err == nil || !strings.Contains(err.Error(), "scrape_intervall") {
		t.Fatalf("unknown key: err = %v", err)
	}
}

func TestWithHost(t *testing.T) {
	for in, want := range map[string]string{
		":4317":          "10.0.0.1:4317",
		"0.0.0.0:4317":   "10.0.0.1:4317",
		"[::]:4317":      "10.0.0.1:4317",
		"127.0.0.1:4318": "127.0.0.1:4318",
		"bad":            "bad",
	} {
		if got := WithHost(in, "10.0.0.1"); got != want {
			t.Errorf("WithHost(%q) = %q, want %q", in, got, want)
		}
	}
	if got := WithHost(":4317", "::1"); got != "[::1]:4317" {
		t.Errorf("WithHost IPv6 = %q", got)
	}
}
