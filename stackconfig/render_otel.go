package stackconfig

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The Jaeger v2 collector and the node's trace agent are both
// OpenTelemetry Collectors: the otel* types are the subset of that
// configuration the agent renders, shared by RenderJaeger and
// RenderTraceAgent. They are two releases of it: Jaeger v2.12.0 is built on
// collector v0.139, whose OTLP exporters are "otlp" and "otlphttp"; the
// project's otelcol distribution is v0.165, where they are "otlp_grpc" and
// "otlp_http" (the old names are deprecated aliases). Each renderer uses
// the names of its own release; the golden tests run `jaeger validate` and
// `otelcol validate` on what they render.
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
	HealthCheckV2 *otelHealthCheckV2 `yaml:"healthcheckv2,omitempty"`
	// FileStorage keeps the node collector's sending queues and the
	// file_log read positions on disk.
	FileStorage *otelFileStorage `yaml:"file_storage,omitempty"`
}

type otelHealthCheckV2 struct {
	UseV2 bool       `yaml:"use_v2"`
	HTTP  otelServer `yaml:"http"`
}

type otelFileStorage struct {
	Directory       string         `yaml:"directory"`
	CreateDirectory bool           `yaml:"create_directory"`
	Timeout         otelDuration   `yaml:"timeout"`
	Compaction      otelCompaction `yaml:"compaction"`
}

// otelCompaction shrinks the storage file once the queues drained (bbolt
// never gives space back by itself).
type otelCompaction struct {
	OnStart   bool   `yaml:"on_start"`
	OnRebound bool   `yaml:"on_rebound"`
	Directory string `yaml:"directory"`
}

type otelReceivers struct {
	OTLP *otelOTLPReceiver `yaml:"otlp,omitempty"`
	// Containers reads the json-file logs of the containers the agent
	// manages; Files the configured host files.
	Containers *otelFileLog `yaml:"file_log/containers,omitempty"`
	Files      *otelFileLog `yaml:"file_log/files,omitempty"`
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

type otelFileLog struct {
	Include         []string       `yaml:"include"`
	StartAt         string         `yaml:"start_at"`
	Storage         string         `yaml:"storage"`
	IncludeFilePath bool           `yaml:"include_file_path"`
	Operators       []otelOperator `yaml:"operators,omitempty"`
}

// otelOperator is one stanza operator of a file_log receiver; each type
// uses some of the fields.
type otelOperator struct {
	Type                    string  `yaml:"type"`
	If                      string  `yaml:"if,omitempty"`
	Format                  string  `yaml:"format,omitempty"`
	AddMetadataFromFilepath *bool   `yaml:"add_metadata_from_filepath,omitempty"`
	Expr                    string  `yaml:"expr,omitempty"`
	From                    string  `yaml:"from,omitempty"`
	To                      string  `yaml:"to,omitempty"`
	Field                   string  `yaml:"field,omitempty"`
	Regex                   string  `yaml:"regex,omitempty"`
	ReplaceWith             *string `yaml:"replace_with,omitempty"`
}

type otelProcessors struct {
	MemoryLimiter *otelMemoryLimiter `yaml:"memory_limiter,omitempty"`
	Resource      *otelResource      `yaml:"resource,omitempty"`
	Batch         otelBatch          `yaml:"batch"`
}

type otelMemoryLimiter struct {
	CheckInterval otelDuration `yaml:"check_interval"`
	LimitMiB      int          `yaml:"limit_mib"`
	SpikeLimitMiB int          `yaml:"spike_limit_mib"`
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
	// OTLP and OTLPHTTP are Jaeger's (collector v0.139) exporters to the
	// manager.
	OTLP     *otelOTLPExporter `yaml:"otlp,omitempty"`
	OTLPHTTP *otelOTLPExporter `yaml:"otlphttp,omitempty"`
	// OTLPGRPC is the node collector's (v0.165) exporter of spans to the
	// master's collector; Logs its exporter of logs to the manager.
	OTLPGRPC *otelOTLPExporter `yaml:"otlp_grpc,omitempty"`
	Logs     *otelOTLPExporter `yaml:"otlp_http/logs,omitempty"`
}

type otelOTLPExporter struct {
	Endpoint       string            `yaml:"endpoint,omitempty"`
	LogsEndpoint   string            `yaml:"logs_endpoint,omitempty"`
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
	Enabled      bool   `yaml:"enabled"`
	NumConsumers int    `yaml:"num_consumers"`
	Sizer        string `yaml:"sizer"`
	QueueSize    int    `yaml:"queue_size"`
	// Storage names the storage extension of a queue on disk; empty: in
	// memory.
	Storage string `yaml:"storage,omitempty"`
}

type otelService struct {
	Extensions []string      `yaml:"extensions"`
	Pipelines  otelPipelines `yaml:"pipelines"`
	Telemetry  otelTelemetry `yaml:"telemetry"`
}

type otelPipelines struct {
	Traces *otelPipeline `yaml:"traces,omitempty"`
	Logs   *otelPipeline `yaml:"logs,omitempty"`
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
	Level   string             `yaml:"level"`
	Readers []otelMetricReader `yaml:"readers,omitempty"`
}

// otelMetricReader serves the collector's own metrics for Prometheus
// (GET /metrics on host:port).
type otelMetricReader struct {
	Pull struct {
		Exporter struct {
			Prometheus otelPrometheusReader `yaml:"prometheus"`
		} `yaml:"exporter"`
	} `yaml:"pull"`
}

type otelPrometheusReader struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
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

// otelExporter is the OTLP exporter of both collectors: to endpoint (an
// http(s) URL; for grpc only host and port are written, the scheme says
// whether to use TLS), with retries, a sending queue of queueSize items
// (spans, log records) and a bearer token read from tokenFile at start
// when given.
//
// retry is how long one batch is retried; 0 retries until it is sent, which
// the node collector uses: its queue is bounded, so a long outage fills
// the queue and then drops new data (counted), never old data.
func otelExporter(endpoint, protocol, tokenFile string, queueSize int, retry time.Duration) *otelOTLPExporter {
	u, _ := url.Parse(endpoint) // validated by the caller
	e := &otelOTLPExporter{
		Endpoint: otelLiteral(endpoint),
		Timeout:  otelDuration(10 * time.Second),
		RetryOnFailure: otelRetry{
			Enabled:         true,
			InitialInterval: otelDuration(time.Second),
			MaxInterval:     otelDuration(10 * time.Second),
			MaxElapsedTime:  otelDuration(retry),
		},
		SendingQueue: otelQueue{Enabled: true, NumConsumers: 4, Sizer: "items", QueueSize: queueSize},
	}
	if tokenFile != "" {
		// The path is validated to hold no $, { or }: the expansion is ours.
		e.Headers = map[string]string{"Authorization": "Bearer ${file:" + tokenFile + "}"}
	}
	if protocol == "grpc" {
		// A gRPC target is host:port; the scheme only says whether to use TLS.
		e.Endpoint = otelLiteral(u.Host)
		if u.Scheme == "http" {
			e.TLS = &otelTLS{Insecure: true}
		}
	}
	return e
}

// otelTelemetrySettings serves the collector's own metrics on address
// (host:port, validated), or turns them off.
func otelTelemetrySettings(address string) otelTelemetry {
	if address == "" {
		return otelTelemetry{Metrics: otelTelemetryMetrics{Level: "none"}}
	}
	host, p, _ := net.SplitHostPort(address)
	port, _ := strconv.Atoi(p)
	var r otelMetricReader
	r.Pull.Exporter.Prometheus = otelPrometheusReader{Host: host, Port: port}
	return otelTelemetry{Metrics: otelTelemetryMetrics{Level: "normal", Readers: []otelMetricReader{r}}}
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

func otelOTLPIn(grpc, http string) *otelOTLPReceiver {
	return &otelOTLPReceiver{Protocols: otelProtocols{
		GRPC: otelServer{Endpoint: grpc},
		HTTP: otelServer{Endpoint: http},
	}}
}

// otelHealth is the healthcheckv2 extension answering GET /status on
// address; nil when address is empty.
func otelHealth(address string) *otelHealthCheckV2 {
	if address == "" {
		return nil
	}
	return &otelHealthCheckV2{UseV2: true, HTTP: otelServer{Endpoint: address}}
}

func otelEncode(what string, cfg otelConfig) ([]byte, error) {
	b, err := encodeYAML(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}
