package stackconfig

// JaegerInput is what the master's Jaeger v2 collector configuration is
// made of: it receives OTLP from the trace agents and forwards it to the
// manager; it stores nothing.
type JaegerInput struct {
	// GRPCListen and HTTPListen are the OTLP receiver addresses, on the
	// master's address (see WithHost).
	GRPCListen string
	HTTPListen string
	// HealthListen serves GET /status; empty: no health check.
	HealthListen string
	// TelemetryListen serves the collector's own metrics on /metrics;
	// empty: none.
	TelemetryListen string
	// Endpoint, Protocol and BearerTokenFile are the manager's
	// (Manager.TracesOTLPEndpoint and friends).
	Endpoint        string
	Protocol        string
	BearerTokenFile string
	// QueueSize bounds the spans waiting in memory for the manager.
	QueueSize int
}

// RenderJaeger renders the configuration of the jaeger binary (Jaeger
// v2.12.0, an OpenTelemetry Collector v0.139): otlp receiver, batch
// processor, an otlp (grpc) or otlphttp exporter to the manager that
// retries until the manager takes a batch, behind an in-memory queue of
// QueueSize spans (beyond it new spans are dropped, counted in
// otelcol_exporter_enqueue_failed_spans).
func RenderJaeger(in JaegerInput) ([]byte, error) {
	var c checker
	c.check("grpc_listen", in.GRPCListen, checkAddr(in.GRPCListen, false))
	c.check("http_listen", in.HTTPListen, checkAddr(in.HTTPListen, false))
	otelCheckCommon(&c, "", in.HealthListen, in.TelemetryListen, in.QueueSize)
	switch in.Protocol {
	case "grpc", "http":
		c.check("endpoint", in.Endpoint, checkOTLPEndpoint(in.Endpoint, in.Protocol))
	default:
		c.bad("protocol", "must be grpc or http, got %q", in.Protocol)
	}
	if in.BearerTokenFile != "" {
		c.check("bearer_token_file", in.BearerTokenFile, checkPath(in.BearerTokenFile, false))
	}
	if err := c.err("render jaeger"); err != nil {
		return nil, err
	}

	e := otelExporter(in.Endpoint, in.Protocol, in.BearerTokenFile, in.QueueSize, 0)
	var exporters otelExporters
	exporter := "otlp"
	if in.Protocol == "http" {
		exporters.OTLPHTTP, exporter = e, "otlphttp"
	} else {
		exporters.OTLP = e
	}
	cfg := otelConfig{
		Extensions: otelExtensions{HealthCheckV2: otelHealth(in.HealthListen)},
		Receivers:  otelReceivers{OTLP: otelOTLPIn(in.GRPCListen, in.HTTPListen)},
		Processors: otelProcessors{Batch: otelBatchSettings},
		Exporters:  exporters,
		Service: otelService{
			Extensions: []string{},
			Pipelines: otelPipelines{Traces: &otelPipeline{
				Receivers:  []string{"otlp"},
				Processors: []string{"batch"},
				Exporters:  []string{exporter},
			}},
			Telemetry: otelTelemetrySettings(in.TelemetryListen),
		},
	}
	if in.HealthListen != "" {
		cfg.Service.Extensions = []string{"healthcheckv2"}
	}
	return otelEncode("render jaeger", cfg)
}
