package stackconfig

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// The Jaeger v2 collector and the trace agent are both OpenTelemetry
// Collectors (v0.115): the otel* types are the subset of that configuration
// the agent renders, shared by RenderJaeger and RenderTraceAgent.
//
// The collector expands ${scheme:...} in every string value and then turns
// $$ into $; otelLiteral doubles every $ of a value the agent did not write
// itself, so such a value reaches the component unchanged.

type otelConfig struct {
	Extensions otelExtensions `yaml:"extensions"`
	Receivers  otelReceivers  `yaml:"receivers"`
	Processors otelProcessors `yaml:"processors"`
	Exporters  otelExporters  `yaml:"exporters"`
	Service    otelService    `yaml:"service"`
}

type otelExtensions struct {
	// HealthCheck is the trace agent's (contrib) health_check.
	HealthCheck *otelHealthCheck `yaml:"health_check,omitempty"`
	// HealthCheckV2 is Jaeger's healthcheckv2, in its v2 mode.
	HealthCheckV2 *otelHealthCheckV2 `yaml:"healthcheckv2,omitempty"`
}

type otelHealthCheck struct {
	Endpoint string `yaml:"endpoint"`
}

type otelHealthCheckV2 struct {
	UseV2 bool       `yaml:"use_v2"`
	HTTP  otelServer `yaml:"http"`
}

type otelReceivers struct {
	OTLP otelOTLPReceiver `yaml:"otlp"`
}

type otelOTLPReceiver struct {
	Protocols otelProtocols `yaml:"protocols"`
}

type otelProtocols struct {
	GRPC otelServer `yaml:"grpc"`
	HTTP otelServer `yaml:"http"`
}

type otelServer struct {
	Endpoint string `yaml:"endpoint"`
}

type otelProcessors struct {
	Batch    otelBatch     `yaml:"batch"`
	Resource *otelResource `yaml:"resource,omitempty"`
}

type otelBatch struct {
	SendBatchSize    int          `yaml:"send_batch_size"`
	SendBatchMaxSize int          `yaml:"send_batch_max_size"`
	Timeout          otelDuration `yaml:"timeout"`
}

type otelResource struct {
	Attributes []otelAttributeAction `yaml:"attributes"`
}

type otelAttributeAction struct {
	Key    string `yaml:"key"`
	Value  string `yaml:"value"`
	Action string `yaml:"action"`
}

type otelExporters struct {
	OTLP     *otelOTLPExporter `yaml:"otlp,omitempty"`
	OTLPHTTP *otelOTLPExporter `yaml:"otlphttp,omitempty"`
}

type otelOTLPExporter struct {
	Endpoint       string            `yaml:"endpoint"`
	TLS            *otelTLS          `yaml:"tls,omitempty"`
	Headers        map[string]string `yaml:"headers,omitempty"`
	Timeout        otelDuration      `yaml:"timeout"`
	RetryOnFailure otelRetry         `yaml:"retry_on_failure"`
	SendingQueue   otelQueue         `yaml:"sending_queue"`
}

type otelTLS struct {
	Insecure bool `yaml:"insecure"`
}

type otelRetry struct {
	Enabled         bool         `yaml:"enabled"`
	InitialInterval otelDuration `yaml:"initial_interval"`
	MaxInterval     otelDuration `yaml:"max_interval"`
	MaxElapsedTime  otelDuration `yaml:"max_elapsed_time"`
}

type otelQueue struct {
	Enabled      bool `yaml:"enabled"`
	NumConsumers int  `yaml:"num_consumers"`
	QueueSize    int  `yaml:"queue_size"`
}

type otelService struct {
	Extensions []string      `yaml:"extensions"`
	Pipelines  otelPipelines `yaml:"pipelines"`
	Telemetry  otelTelemetry `yaml:"telemetry"`
}

type otelPipelines struct {
	Traces otelPipeline `yaml:"traces"`
}

type otelPipeline struct {
	Receivers  []string `yaml:"receivers"`
	Processors []string `yaml:"processors"`
	Exporters  []string `yaml:"exporters"`
}

type otelTelemetry struct {
	Metrics otelTelemetryMetrics `yaml:"metrics"`
}

type otelTelemetryMetrics struct {
	Level   string `yaml:"level"`
	Address string `yaml:"address,omitempty"`
}

// otelDuration is a duration as the collector reads it (time.ParseDuration;
// Prometheus's "1d" would not do).
type otelDuration time.Duration

func (d otelDuration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d *otelDuration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = otelDuration(v)
	return err
}

// otelLiteral protects a value from the collector's ${...} expansion.
func otelLiteral(s string) string { return strings.ReplaceAll(s, "$", "$$") }

// otelOTLPExport is the exporter of both collectors: to endpoint (an
// http(s) URL; for grpc only scheme, host and port count) with retries and
// an in-memory queue, TLS unless the URL is http://, and a bearer token read
// from tokenFile at start when given. It returns the exporters section and
// the exporter's name.
func otelOTLPExport(endpoint, protocol, tokenFile string, queueSize int) (otelExporters, string) {
	u, _ := url.Parse(endpoint) // validated by the caller
	e := &otelOTLPExporter{
		Endpoint: otelLiteral(endpoint),
		Timeout:  otelDuration(10 * time.Second),
		RetryOnFailure: otelRetry{
			Enabled:         true,
			InitialInterval: otelDuration(time.Second),
			MaxInterval:     otelDuration(30 * time.Second),
			MaxElapsedTime:  otelDuration(5 * time.Minute),
		},
		SendingQueue: otelQueue{Enabled: true, NumConsumers: 4, QueueSize: queueSize},
	}
	if tokenFile != "" {
		// The path is validated to hold no $, { or }: the expansion is ours.
		e.Headers = map[string]string{"Authorization": "Bearer ${file:" + tokenFile + "}"}
	}
	if protocol == "http" {
		return otelExporters{OTLPHTTP: e}, "otlphttp"
	}
	// A gRPC target is host:port; the scheme only says whether to use TLS.
	e.Endpoint = otelLiteral(u.Host)
	if u.Scheme == "http" {
		e.TLS = &otelTLS{Insecure: true}
	}
	return otelExporters{OTLP: e}, "otlp"
}

// otelTelemetrySettings serves the collector's own metrics on address, or
// turns them off.
func otelTelemetrySettings(address string) otelTelemetry {
	if address == "" {
		return otelTelemetry{Metrics: otelTelemetryMetrics{Level: "none"}}
	}
	return otelTelemetry{Metrics: otelTelemetryMetrics{Level: "normal", Address: address}}
}

// otelBatchSettings are the batch processor's settings of both collectors.
var otelBatchSettings = otelBatch{
	SendBatchSize:    8192,
	SendBatchMaxSize: 10000,
	Timeout:          otelDuration(200 * time.Millisecond),
}

// otelCheckCommon checks the settings both collectors share, for the
// config sections (prefix "stack.jaeger.") and the renderers' inputs ("").
func otelCheckCommon(c *checker, prefix, health, telemetry string, queueSize int) {
	if health != "" {
		c.check(prefix+"health_listen", health, checkAddr(health, true))
	}
	if telemetry != "" {
		c.check(prefix+"telemetry_listen", telemetry, checkAddr(telemetry, true))
	}
	if queueSize <= 0 {
		c.bad(prefix+"queue_size", "must be > 0, got %d", queueSize)
	}
}

func otelOTLPReceivers(grpc, http string) otelReceivers {
	return otelReceivers{OTLP: otelOTLPReceiver{Protocols: otelProtocols{
		GRPC: otelServer{Endpoint: grpc},
		HTTP: otelServer{Endpoint: http},
	}}}
}

func otelEncode(what string, cfg otelConfig) ([]byte, error) {
	b, err := encodeYAML(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}
