package stackconfig

import (
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func testJaegerInput() JaegerInput {
	return JaegerInput{
		GRPCListen:      "10.0.0.1:4317",
		HTTPListen:      "10.0.0.1:4318",
		HealthListen:    "127.0.0.1:13133",
		TelemetryListen: "127.0.0.1:8888",
		Endpoint:        "https://manager.example:4317",
		Protocol:        "grpc",
		BearerTokenFile: "/etc/agent/traces-token",
		QueueSize:       50000,
	}
}

// testTraceAgentInput is a node collector that forwards traces only (the
// vector shipper, or no logs URL).
func testTraceAgentInput() TraceAgentInput {
	return TraceAgentInput{
		Node:            "node-1",
		Cluster:         "prod-eu",
		GRPCListen:      "127.0.0.1:14317",
		HTTPListen:      "127.0.0.1:14318",
		HealthListen:    "127.0.0.1:13134",
		TelemetryListen: "127.0.0.1:18888",
		StorageDir:      "/var/lib/agent/stack/trace-agent/storage",
		MemoryLimitMiB:  256,
		CollectorURL:    "http://10.0.0.1:4317",
		QueueSize:       100000,
	}
}

// testNodeLogsInput adds the otelcol log shipper: container logs, files,
// a token.
func testNodeLogsInput() TraceAgentInput {
	in := testTraceAgentInput()
	in.LogsURL = "https://logs.example/insert/opentelemetry/v1/logs"
	in.LogsBearerTokenFile = "/etc/agent/logs.token"
	in.ContainerLogs = "/var/lib/docker/containers/*/*-json.log"
	in.ManagedLabel, in.NodeLabel, in.GUIDLabel = "io.agentproj.managed", "io.agentproj.node", "io.agentproj.guid"
	in.LogFiles = []string{"/var/log/syslog", "/var/log/app/*.log"}
	in.LogQueueSize = 100000
	return in
}

// otelGolden is one golden file of a collector config; dir replaces
// /etc/agent in its input, so that `validate` can read the token files.
type otelGolden struct {
	file   string
	binary string // the testbin that reads it: jaeger or otelcol
	render func(dir string) ([]byte, error)
}

func otelGoldens() []otelGolden {
	in := func(dir, path string) string { return strings.Replace(path, "/etc/agent", dir, 1) }
	return []otelGolden{
		{"jaeger.yml.golden", "jaeger", func(dir string) ([]byte, error) {
			j := testJaegerInput()
			j.BearerTokenFile = in(dir, j.BearerTokenFile)
			return RenderJaeger(j)
		}},
		{"jaeger-otlphttp.yml.golden", "jaeger", func(string) ([]byte, error) {
			j := testJaegerInput()
			j.Protocol, j.Endpoint, j.BearerTokenFile, j.HealthListen, j.TelemetryListen = "http", "http://manager.example:4318/otlp", "", "", ""
			return RenderJaeger(j)
		}},
		{"trace-agent.yml.golden", "otelcol", func(string) ([]byte, error) { return RenderTraceAgent(testTraceAgentInput()) }},
		{"trace-agent-logs.yml.golden", "otelcol", func(dir string) ([]byte, error) {
			n := testNodeLogsInput()
			n.LogsBearerTokenFile = in(dir, n.LogsBearerTokenFile)
			return RenderTraceAgent(n)
		}},
		{"trace-agent-logs-only.yml.golden", "otelcol", func(string) ([]byte, error) {
			n := testNodeLogsInput()
			n.CollectorURL, n.ContainerLogs, n.LogsBearerTokenFile, n.HealthListen, n.TelemetryListen = "", "", "", "", ""
			return RenderTraceAgent(n)
		}},
	}
}

func TestRenderOTelGolden(t *testing.T) {
	for _, g := range otelGoldens() {
		b, err := g.render("/etc/agent")
		if err != nil {
			t.Fatalf("%s: %v", g.file, err)
		}
		golden(t, g.file, b)
	}
}

// otelExpandFake does to a parsed string what the collector's confmap
// does at run time: it lists the ${...} it would expand (those preceded by
// an even number of $) and then turns $$ into $. A fake, checked against
// the real collector by TestRenderedURLReachesTheManagerAsGiven.
func otelExpandFake(s string) (string, []string) {
	var uris []string
	for i := 0; i+1 < len(s); i++ {
		if s[i] != '$' || s[i+1] != '{' {
			continue
		}
		n := 0
		for j := i - 1; j >= 0 && s[j] == '$'; j-- {
			n++
		}
		if end := strings.IndexByte(s[i:], '}'); n%2 == 0 && end > 0 {
			uris = append(uris, s[i:i+end+1])
		}
	}
	return strings.ReplaceAll(s, "$$", "$"), uris
}

func parseOTel(t *testing.T, b []byte) otelConfig {
	t.Helper()
	var cfg otelConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("parse back: %v\n%s", err, b)
	}
	return cfg
}

func TestRenderJaegerParsesBack(t *testing.T) {
	in := testJaegerInput()
	cfg := parseOTel(t, mustRender(t, RenderJaeger, in))
	e := cfg.Exporters.OTLP
	if e == nil || cfg.Exporters.OTLPHTTP != nil || cfg.Exporters.OTLPGRPC != nil || e.Endpoint != "manager.example:4317" || e.TLS != nil ||
		!e.RetryOnFailure.Enabled || e.RetryOnFailure.MaxElapsedTime != 0 ||
		!e.SendingQueue.Enabled || e.SendingQueue.Sizer != "items" || e.SendingQueue.QueueSize != 50000 || e.SendingQueue.Storage != "" {
		t.Fatalf("exporter %+v", e)
	}
	if _, uris := otelExpandFake(e.Headers["Authorization"]); !reflect.DeepEqual(uris, []string{"${file:/etc/agent/traces-token}"}) {
		t.Fatalf("authorization header %q expands %v", e.Headers["Authorization"], uris)
	}
	if cfg.Receivers.OTLP.Protocols.GRPC.Endpoint != in.GRPCListen || cfg.Receivers.OTLP.Protocols.HTTP.Endpoint != in.HTTPListen {
		t.Fatalf("receivers %+v", cfg.Receivers)
	}
	p := cfg.Service.Pipelines
	if !reflect.DeepEqual(p.Traces, &otelPipeline{Receivers: []string{"otlp"}, Processors: []string{"batch"}, Exporters: []string{"otlp"}}) || p.Logs != nil ||
		!reflect.DeepEqual(cfg.Service.Extensions, []string{"healthcheckv2"}) || cfg.Extensions.HealthCheckV2.HTTP.Endpoint != in.HealthListen ||
		cfg.Processors.Resource != nil || cfg.Extensions.FileStorage != nil {
		t.Fatalf("service %+v, extensions %+v", cfg.Service, cfg.Extensions)
	}
	if m := cfg.Service.Telemetry.Metrics; m.Level != "normal" || len(m.Readers) != 1 ||
		m.Readers[0].Pull.Exporter.Prometheus != (otelPrometheusReader{Host: "127.0.0.1", Port: 8888}) {
		t.Fatalf("telemetry %+v", m)
	}

	// A plain-http gRPC endpoint means no TLS.
	in.Endpoint = "http://10.9.9.9:4317"
	if e := parseOTel(t, mustRender(t, RenderJaeger, in)).Exporters.OTLP; e.Endpoint != "10.9.9.9:4317" || e.TLS == nil || !e.TLS.Insecure {
		t.Fatalf("http endpoint: %+v", e)
	}
	// Over OTLP/HTTP the URL is kept whole; every $ in it reaches the
	// exporter as it was, and nothing in it is expanded.
	in.Protocol, in.BearerTokenFile = "http", ""
	for _, url := range []string{"https://m.example/otlp?t=$x", "https://m.example/otlp/$$/a'b", "http://m.example:4318/p?a=$HOME&b=$"} {
		in.Endpoint = url
		cfg := parseOTel(t, mustRender(t, RenderJaeger, in))
		if cfg.Exporters.OTLPHTTP == nil {
			t.Fatalf("%q: no otlphttp exporter", url)
		}
		got, uris := otelExpandFake(cfg.Exporters.OTLPHTTP.Endpoint)
		if got != url || len(uris) != 0 || cfg.Exporters.OTLPHTTP.Headers != nil {
			t.Errorf("%q: collector reads %q, expands %v", url, got, uris)
		}
		if !reflect.DeepEqual(cfg.Service.Pipelines.Traces.Exporters, []string{"otlphttp"}) {
			t.Errorf("%q: pipeline %+v", url, cfg.Service.Pipelines.Traces)
		}
	}
}

func TestRenderTraceAgentParsesBack(t *testing.T) {
	in := testTraceAgentInput()
	cfg := parseOTel(t, mustRender(t, RenderTraceAgent, in))
	// Inserted, never upserted: an application's own node, cluster, guid
	// and service.name are kept.
	want := &otelResource{Attributes: []otelAttributeAction{
		{Key: "node", Value: "node-1", Action: "insert"},
		{Key: "cluster", Value: "prod-eu", Action: "insert"},
	}}
	if !reflect.DeepEqual(cfg.Processors.Resource, want) {
		t.Fatalf("resource processor %+v", cfg.Processors.Resource)
	}
	e := cfg.Exporters.OTLPGRPC
	if e == nil || cfg.Exporters.OTLP != nil || e.Endpoint != "10.0.0.1:4317" || e.TLS == nil || !e.TLS.Insecure || e.Headers != nil ||
		!e.RetryOnFailure.Enabled || e.RetryOnFailure.MaxElapsedTime != 0 || !e.SendingQueue.Enabled ||
		e.SendingQueue.QueueSize != in.QueueSize || e.SendingQueue.Sizer != "items" || e.SendingQueue.Storage != "file_storage" {
		t.Fatalf("exporter %+v", e)
	}
	if fs := cfg.Extensions.FileStorage; fs == nil || fs.Directory != in.StorageDir || !fs.CreateDirectory {
		t.Fatalf("file_storage %+v", fs)
	}
	if p := cfg.Service.Pipelines; !reflect.DeepEqual(p.Traces, &otelPipeline{Receivers: []string{"otlp"}, Processors: []string{"memory_limiter", "resource", "batch"}, Exporters: []string{"otlp_grpc"}}) || p.Logs != nil {
		t.Fatalf("pipelines %+v", p)
	}
	if ml := cfg.Processors.MemoryLimiter; ml == nil || ml.LimitMiB != 256 || ml.SpikeLimitMiB != 51 {
		t.Fatalf("memory_limiter %+v", ml)
	}
	if cfg.Receivers.OTLP.Protocols.GRPC.Endpoint != in.GRPCListen || cfg.Extensions.HealthCheckV2.HTTP.Endpoint != in.HealthListen ||
		cfg.Receivers.Containers != nil || cfg.Receivers.Files != nil {
		t.Fatalf("receivers %+v, extensions %+v", cfg.Receivers, cfg.Extensions)
	}

	in.CollectorURL, in.HealthListen, in.TelemetryListen = "https://collector.example:4317", "", ""
	cfg = parseOTel(t, mustRender(t, RenderTraceAgent, in))
	if e := cfg.Exporters.OTLPGRPC; e.Endpoint != "collector.example:4317" || e.TLS != nil {
		t.Fatalf("https collector: %+v", e)
	}
	if cfg.Extensions.HealthCheckV2 != nil || !reflect.DeepEqual(cfg.Service.Extensions, []string{"file_storage"}) || cfg.Service.Telemetry.Metrics.Level != "none" {
		t.Fatalf("no health, no telemetry: %+v %+v", cfg.Extensions, cfg.Service)
	}
}

func TestRenderNodeLogsParsesBack(t *testing.T) {
	in := testNodeLogsInput()
	cfg := parseOTel(t, mustRender(t, RenderTraceAgent, in))
	p := cfg.Service.Pipelines
	if p.Traces == nil || !reflect.DeepEqual(p.Logs, &otelPipeline{
		Receivers:  []string{"otlp", "file_log/containers", "file_log/files"},
		Processors: []string{"memory_limiter", "resource", "batch"},
		Exporters:  []string{"otlp_http/logs"},
	}) {
		t.Fatalf("pipelines %+v", p)
	}
	e := cfg.Exporters.Logs
	if e == nil || e.Endpoint != "" || e.LogsEndpoint != in.LogsURL || e.TLS != nil || e.SendingQueue.Storage != "file_storage" ||
		e.SendingQueue.QueueSize != in.LogQueueSize || e.Headers["Authorization"] != "Bearer ${file:/etc/agent/logs.token}" {
		t.Fatalf("logs exporter %+v", e)
	}
	c := cfg.Receivers.Containers
	if c == nil || !reflect.DeepEqual(c.Include, []string{in.ContainerLogs}) || c.StartAt != "beginning" || c.Storage != "file_storage" {
		t.Fatalf("container logs %+v", c)
	}
	ops := map[string]otelOperator{}
	for _, o := range c.Operators {
		ops[o.Type] = o
	}
	if ops["container"].Format != "docker" || ops["filter"].Expr != `attributes.attrs?.["io.agentproj.managed"] != "true" or attributes.attrs?.["io.agentproj.node"] != "node-1"` ||
		ops["move"].From != `attributes.attrs["io.agentproj.guid"]` || ops["move"].To != `resource["guid"]` {
		t.Fatalf("container log operators %+v", c.Operators)
	}
	f := cfg.Receivers.Files
	if f == nil || !reflect.DeepEqual(f.Include, in.LogFiles) || !f.IncludeFilePath || len(f.Operators) != 0 {
		t.Fatalf("file logs %+v", f)
	}

	// Logs alone: no traces exporter; applications' OTLP logs still go.
	in.CollectorURL, in.ContainerLogs = "", ""
	cfg = parseOTel(t, mustRender(t, RenderTraceAgent, in))
	if cfg.Receivers.OTLP == nil || cfg.Exporters.OTLPGRPC != nil || cfg.Service.Pipelines.Traces != nil ||
		!reflect.DeepEqual(cfg.Service.Pipelines.Logs.Receivers, []string{"otlp", "file_log/files"}) {
		t.Fatalf("logs only: %+v", cfg)
	}
	// OTLP is enough of a source.
	in.LogFiles = nil
	if cfg := parseOTel(t, mustRender(t, RenderTraceAgent, in)); !reflect.DeepEqual(cfg.Service.Pipelines.Logs.Receivers, []string{"otlp"}) {
		t.Fatalf("OTLP logs only: %+v", cfg.Service.Pipelines.Logs)
	}
}

// TestRenderOTelHostile: every hostile value, in every field, is either
// refused naming that field or parsed back by the collector as it was given.
func TestRenderOTelHostile(t *testing.T) {
	type field struct {
		key    string
		render func(v string) ([]byte, error)
		got    func(otelConfig) string
		want   func(v string) string
	}
	same := func(v string) string { return v }
	fields := []field{
		{"node", func(v string) ([]byte, error) { in := testTraceAgentInput(); in.Node = v; return RenderTraceAgent(in) },
			func(c otelConfig) string { return c.Processors.Resource.Attributes[0].Value }, same},
		{"cluster", func(v string) ([]byte, error) {
			in := testTraceAgentInput()
			in.Cluster = v
			return RenderTraceAgent(in)
		},
			func(c otelConfig) string { return c.Processors.Resource.Attributes[1].Value }, same},
		{"collector_url", func(v string) ([]byte, error) {
			in := testTraceAgentInput()
			in.CollectorURL = "http://" + v + ":4317"
			return RenderTraceAgent(in)
		}, func(c otelConfig) string { return "http://" + c.Exporters.OTLPGRPC.Endpoint }, func(v string) string { return "http://" + v + ":4317" }},
		{"grpc_listen", func(v string) ([]byte, error) {
			in := testTraceAgentInput()
			in.GRPCListen = v + ":1"
			return RenderTraceAgent(in)
		},
			func(c otelConfig) string { return c.Receivers.OTLP.Protocols.GRPC.Endpoint }, func(v string) string { return v + ":1" }},
		{"http_listen", func(v string) ([]byte, error) {
			in := testJaegerInput()
			in.HTTPListen = v + ":1"
			return RenderJaeger(in)
		},
			func(c otelConfig) string { return c.Receivers.OTLP.Protocols.HTTP.Endpoint }, func(v string) string { return v + ":1" }},
		{"endpoint", func(v string) ([]byte, error) {
			in := testJaegerInput()
			in.Protocol, in.Endpoint = "http", "https://m.example/"+v
			return RenderJaeger(in)
		}, func(c otelConfig) string { return c.Exporters.OTLPHTTP.Endpoint }, func(v string) string { return "https://m.example/" + v }},
		{"bearer_token_file", func(v string) ([]byte, error) {
			in := testJaegerInput()
			in.BearerTokenFile = "/etc/" + v
			return RenderJaeger(in)
		}, func(c otelConfig) string {
			return strings.TrimSuffix(strings.TrimPrefix(c.Exporters.OTLP.Headers["Authorization"], "Bearer ${file:"), "}")
		}, func(v string) string { return "/etc/" + v }},
		{"storage_dir", func(v string) ([]byte, error) {
			in := testTraceAgentInput()
			in.StorageDir = "/var/" + v
			return RenderTraceAgent(in)
		},
			func(c otelConfig) string { return c.Extensions.FileStorage.Directory }, func(v string) string { return "/var/" + v }},
		{"logs_url", func(v string) ([]byte, error) {
			in := testNodeLogsInput()
			in.LogsURL = "https://l.example/" + v
			return RenderTraceAgent(in)
		}, func(c otelConfig) string { return c.Exporters.Logs.LogsEndpoint }, func(v string) string { return "https://l.example/" + v }},
		{"log_files[0]", func(v string) ([]byte, error) {
			in := testNodeLogsInput()
			in.LogFiles = []string{"/var/log/" + v}
			return RenderTraceAgent(in)
		}, func(c otelConfig) string { return c.Receivers.Files.Include[0] }, func(v string) string { return "/var/log/" + v }},
		{"container_logs", func(v string) ([]byte, error) {
			in := testNodeLogsInput()
			in.ContainerLogs = "/var/lib/" + v + "/*-json.log"
			return RenderTraceAgent(in)
		}, func(c otelConfig) string { return c.Receivers.Containers.Include[0] }, func(v string) string { return "/var/lib/" + v + "/*-json.log" }},
		{"guid_label", func(v string) ([]byte, error) {
			in := testNodeLogsInput()
			in.GUIDLabel = v
			return RenderTraceAgent(in)
		},
			func(c otelConfig) string { return c.Receivers.Containers.Operators[2].From }, func(v string) string { return `attributes.attrs["` + v + `"]` }},
	}
	for _, v := range hostile {
		for _, f := range fields {
			b, err := f.render(v)
			if err != nil {
				if !strings.Contains(err.Error(), f.key+": ") {
					t.Errorf("%s=%q: refused without naming the key: %v", f.key, v, err)
				}
				continue
			}
			got, uris := otelExpandFake(f.got(parseOTel(t, b)))
			if f.key == "bearer_token_file" {
				uris = nil // the agent's own ${file:...}
			}
			if want := f.want(v); got != want || len(uris) != 0 {
				t.Errorf("%s=%q: the collector reads %q and expands %v", f.key, v, got, uris)
			}
		}
	}
}

func TestRenderOTelRejects(t *testing.T) {
	for _, tc := range []struct {
		render func() error
		want   string
	}{
		{func() error { in := testJaegerInput(); in.Protocol = "thrift"; return errOf(RenderJaeger(in)) }, `render jaeger: protocol: must be grpc or http, got "thrift"`},
		{func() error {
			in := testJaegerInput()
			in.Endpoint = "https://m:4317/v1/traces"
			return errOf(RenderJaeger(in))
		}, `endpoint: must be http(s)://host:port with no path for the grpc protocol, got "https://m:4317/v1/traces"`},
		{func() error { in := testJaegerInput(); in.QueueSize = 0; return errOf(RenderJaeger(in)) }, "queue_size: must be > 0, got 0"},
		{func() error {
			in := testJaegerInput()
			in.BearerTokenFile = "/etc/${env:X}"
			return errOf(RenderJaeger(in))
		}, `bearer_token_file: must not contain control characters, quotes, backslash, $, { or }, got "/etc/${env:X}"`},
		{func() error { in := testJaegerInput(); in.TelemetryListen = ":8888"; return errOf(RenderJaeger(in)) }, `telemetry_listen: must have a host, got ":8888"`},
		{func() error { in := testTraceAgentInput(); in.Node = "Node_1"; return errOf(RenderTraceAgent(in)) }, `render trace agent: node: must be lower-case letters, digits and '-'`},
		{func() error {
			in := testTraceAgentInput()
			in.CollectorURL = "ftp://x:1"
			return errOf(RenderTraceAgent(in))
		}, `collector_url: must be an http:// or https:// URL with a host, got "ftp://x:1"`},
		{func() error { in := testTraceAgentInput(); in.CollectorURL = ""; return errOf(RenderTraceAgent(in)) }, `collector_url: nothing to do: give collector_url (traces) or logs_url (logs), got ""`},
		{func() error { in := testTraceAgentInput(); in.QueueSize = 0; return errOf(RenderTraceAgent(in)) }, "queue_size: must be > 0, got 0"},
		{func() error { in := testTraceAgentInput(); in.StorageDir = "data"; return errOf(RenderTraceAgent(in)) }, `storage_dir: must be an absolute path, got "data"`},
		{func() error { in := testTraceAgentInput(); in.MemoryLimitMiB = 0; return errOf(RenderTraceAgent(in)) }, "memory_limit_mib: must be >= 32, got 0"},
		{func() error {
			in := testTraceAgentInput()
			in.GRPCListen = ":14317"
			return errOf(RenderTraceAgent(in))
		}, `grpc_listen: must have a host, got ":14317"`},
		{func() error { in := testNodeLogsInput(); in.LogQueueSize = -1; return errOf(RenderTraceAgent(in)) }, "log_queue_size: must be > 0, got -1"},
		{func() error { in := testNodeLogsInput(); in.ManagedLabel = `a"]`; return errOf(RenderTraceAgent(in)) }, `managed_label: must match`},
		{func() error {
			in := testNodeLogsInput()
			in.LogsBearerTokenFile = "token"
			return errOf(RenderTraceAgent(in))
		}, `logs_bearer_token_file: must be an absolute path, got "token"`},
	} {
		if err := tc.render(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v\nwant it to contain %q", err, tc.want)
		}
	}
}

func mustRender[In any](t *testing.T, render func(In) ([]byte, error), in In) []byte {
	t.Helper()
	b, err := render(in)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func errOf(_ []byte, err error) error { return err }
