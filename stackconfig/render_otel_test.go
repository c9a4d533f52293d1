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
		QueueSize:       5000,
	}
}

func testTraceAgentInput() TraceAgentInput {
	return TraceAgentInput{
		Node:            "node-1",
		Cluster:         "prod-eu",
		GRPCListen:      "127.0.0.1:14317",
		HTTPListen:      "127.0.0.1:14318",
		HealthListen:    "127.0.0.1:13134",
		TelemetryListen: "127.0.0.1:18888",
		CollectorURL:    "http://10.0.0.1:4317",
		QueueSize:       5000,
	}
}

func TestRenderJaegerGolden(t *testing.T) {
	b, err := RenderJaeger(testJaegerInput())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "jaeger.yml.golden", b)

	in := testJaegerInput()
	in.Protocol, in.Endpoint, in.BearerTokenFile, in.HealthListen, in.TelemetryListen = "http", "http://manager.example:4318/otlp", "", "", ""
	b, err = RenderJaeger(in)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "jaeger-otlphttp.yml.golden", b)
}

func TestRenderTraceAgentGolden(t *testing.T) {
	b, err := RenderTraceAgent(testTraceAgentInput())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "trace-agent.yml.golden", b)
}

// otelExpandFake does to a parsed string what the collector's confmap
// (v0.115) does: it lists the ${...} it would expand (those preceded by an
// even number of $) and then turns $$ into $. A fake: the collector cannot
// run here.
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
	if e == nil || cfg.Exporters.OTLPHTTP != nil || e.Endpoint != "manager.example:4317" || e.TLS != nil ||
		!e.RetryOnFailure.Enabled || !e.SendingQueue.Enabled || e.SendingQueue.QueueSize != 5000 {
		t.Fatalf("exporter %+v", e)
	}
	if _, uris := otelExpandFake(e.Headers["Authorization"]); !reflect.DeepEqual(uris, []string{"${file:/etc/agent/traces-token}"}) {
		t.Fatalf("authorization header %q expands %v", e.Headers["Authorization"], uris)
	}
	if cfg.Receivers.OTLP.Protocols.GRPC.Endpoint != in.GRPCListen || cfg.Receivers.OTLP.Protocols.HTTP.Endpoint != in.HTTPListen {
		t.Fatalf("receivers %+v", cfg.Receivers)
	}
	p := cfg.Service.Pipelines.Traces
	if !reflect.DeepEqual(p, otelPipeline{Receivers: []string{"otlp"}, Processors: []string{"batch"}, Exporters: []string{"otlp"}}) ||
		!reflect.DeepEqual(cfg.Service.Extensions, []string{"healthcheckv2"}) || cfg.Extensions.HealthCheckV2.HTTP.Endpoint != in.HealthListen ||
		cfg.Service.Telemetry.Metrics.Address != in.TelemetryListen || cfg.Processors.Resource != nil {
		t.Fatalf("service %+v, extensions %+v", cfg.Service, cfg.Extensions)
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
	want := &otelResource{Attributes: []otelAttributeAction{
		{Key: "node", Value: "node-1", Action: "upsert"},
		{Key: "cluster", Value: "prod-eu", Action: "upsert"},
	}}
	if !reflect.DeepEqual(cfg.Processors.Resource, want) {
		t.Fatalf("resource processor %+v", cfg.Processors.Resource)
	}
	for _, a := range cfg.Processors.Resource.Attributes {
		if a.Key == "guid" {
			t.Fatal("the trace agent must not touch the guid set by applications")
		}
	}
	e := cfg.Exporters.OTLP
	if e == nil || e.Endpoint != "10.0.0.1:4317" || e.TLS == nil || !e.TLS.Insecure || e.Headers != nil ||
		!e.RetryOnFailure.Enabled || !e.SendingQueue.Enabled || e.SendingQueue.QueueSize != in.QueueSize {
		t.Fatalf("exporter %+v", e)
	}
	if p := cfg.Service.Pipelines.Traces; !reflect.DeepEqual(p, otelPipeline{Receivers: []string{"otlp"}, Processors: []string{"resource", "batch"}, Exporters: []string{"otlp"}}) {
		t.Fatalf("pipeline %+v", p)
	}
	if cfg.Receivers.OTLP.Protocols.GRPC.Endpoint != in.GRPCListen || cfg.Extensions.HealthCheck.Endpoint != in.HealthListen {
		t.Fatalf("receivers %+v, extensions %+v", cfg.Receivers, cfg.Extensions)
	}

	in.CollectorURL, in.HealthListen, in.TelemetryListen = "https://collector.example:4317", "", ""
	cfg = parseOTel(t, mustRender(t, RenderTraceAgent, in))
	if e := cfg.Exporters.OTLP; e.Endpoint != "collector.example:4317" || e.TLS != nil {
		t.Fatalf("https collector: %+v", e)
	}
	if cfg.Extensions.HealthCheck != nil || len(cfg.Service.Extensions) != 0 || cfg.Service.Telemetry.Metrics.Level != "none" {
		t.Fatalf("no health, no telemetry: %+v %+v", cfg.Extensions, cfg.Service)
	}
}

// TestRenderOTelHostile: every hostile value, in every field, is either
// refused naming that field or parsed back by the collector as it was given.
func TestRenderOTelHostile(t *testing.T) {
	for _, v := range hostile {
		for _, tc := range []struct {
			key    string
			render func() ([]byte, error)
			got    func(otelConfig) string
		}{
			{"node", func() ([]byte, error) { in := testTraceAgentInput(); in.Node = v; return RenderTraceAgent(in) },
				func(c otelConfig) string { return c.Processors.Resource.Attributes[0].Value }},
			{"cluster", func() ([]byte, error) { in := testTraceAgentInput(); in.Cluster = v; return RenderTraceAgent(in) },
				func(c otelConfig) string { return c.Processors.Resource.Attributes[1].Value }},
			{"collector_url", func() ([]byte, error) {
				in := testTraceAgentInput()
				in.CollectorURL = "http://" + v + ":4317"
				return RenderTraceAgent(in)
			}, func(c otelConfig) string { return "http://" + c.Exporters.OTLP.Endpoint }},
			{"grpc_listen", func() ([]byte, error) {
				in := testTraceAgentInput()
				in.GRPCListen = v + ":1"
				return RenderTraceAgent(in)
			},
				func(c otelConfig) string { return c.Receivers.OTLP.Protocols.GRPC.Endpoint }},
			{"http_listen", func() ([]byte, error) { in := testJaegerInput(); in.HTTPListen = v + ":1"; return RenderJaeger(in) },
				func(c otelConfig) string { return c.Receivers.OTLP.Protocols.HTTP.Endpoint }},
			{"endpoint", func() ([]byte, error) {
				in := testJaegerInput()
				in.Protocol, in.Endpoint = "http", "https://m.example/"+v
				return RenderJaeger(in)
			}, func(c otelConfig) string { return c.Exporters.OTLPHTTP.Endpoint }},
			{"bearer_token_file", func() ([]byte, error) {
				in := testJaegerInput()
				in.BearerTokenFile = "/etc/" + v
				return RenderJaeger(in)
			},
				func(c otelConfig) string {
					return strings.TrimSuffix(strings.TrimPrefix(c.Exporters.OTLP.Headers["Authorization"], "Bearer ${file:"), "}")
				}},
		} {
			b, err := tc.render()
			if err != nil {
				if !strings.Contains(err.Error(), tc.key+": ") {
					t.Errorf("%s=%q: refused without naming the key: %v", tc.key, v, err)
				}
				continue
			}
			got, uris := otelExpandFake(tc.got(parseOTel(t, b)))
			want := map[string]string{"node": v, "cluster": v, "collector_url": "http://" + v + ":4317", "grpc_listen": v + ":1",
				"http_listen": v + ":1", "endpoint": "https://m.example/" + v, "bearer_token_file": "/etc/" + v}[tc.key]
			if tc.key == "bearer_token_file" {
				uris = nil // the agent's own ${file:...}
			}
			if got != want || len(uris) != 0 {
				t.Errorf("%s=%q: the collector reads %q and expands %v", tc.key, v, got, uris)
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
		{func() error { in := testTraceAgentInput(); in.CollectorURL = ""; return errOf(RenderTraceAgent(in)) }, `collector_url: must be an http:// or https:// URL with a host, got ""`},
		{func() error {
			in := testTraceAgentInput()
			in.GRPCListen = ":14317"
			return errOf(RenderTraceAgent(in))
		}, `grpc_listen: must have a host, got ":14317"`},
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
