package stackconfig

// TraceAgentInput is what a node's trace agent configuration is made of:
// an OpenTelemetry Collector that receives OTLP from the node's
// applications on loopback and forwards it to the master's collector.
type TraceAgentInput struct {
	// Node and Cluster are set as resource attributes node and cluster on
	// every span (the guid attribute, set by the applications through
	// OTEL_RESOURCE_ATTRIBUTES, is left alone).
	Node    string
	Cluster string
	// GRPCListen and HTTPListen are the OTLP receiver addresses.
	GRPCListen string
	HTTPListen string
	// HealthListen serves GET /; empty: no health check.
	HealthListen string
	// TelemetryListen serves the agent's own metrics; empty: none.
	TelemetryListen string
	// CollectorURL is the master's OTLP gRPC receiver as published in etcd
	// (collectors/jaeger-otlp-grpc): http://host:port means no TLS.
	CollectorURL string
	// QueueSize bounds the batches waiting for the collector.
	QueueSize int
}

// RenderTraceAgent renders the trace agent's OpenTelemetry Collector
// configuration: otlp receiver, resource processor (node, cluster), batch
// processor, otlp exporter to CollectorURL with retries and a queue.
func RenderTraceAgent(in TraceAgentInput) ([]byte, error) {
	var c checker
	c.dnsLabel("node", in.Node)
	c.dnsLabel("cluster", in.Cluster)
	c.check("grpc_listen", in.GRPCListen, checkAddr(in.GRPCListen, true))
	c.check("http_listen", in.HTTPListen, checkAddr(in.HTTPListen, true))
	otelCheckCommon(&c, "", in.HealthListen, in.TelemetryListen, in.QueueSize)
	c.check("collector_url", in.CollectorURL, checkOTLPEndpoint(in.CollectorURL, "grpc"))
	if err := c.err("render trace agent"); err != nil {
		return nil, err
	}

	exporters, exporter := otelOTLPExport(in.CollectorURL, "grpc", "", in.QueueSize)
	cfg := otelConfig{
		Receivers: otelOTLPReceivers(in.GRPCListen, in.HTTPListen),
		Processors: otelProcessors{
			Batch: otelBatchSettings,
			Resource: &otelResource{Attributes: []otelAttributeAction{
				{Key: "node", Value: otelLiteral(in.Node), Action: "upsert"},
				{Key: "cluster", Value: otelLiteral(in.Cluster), Action: "upsert"},
			}},
		},
		Exporters: exporters,
		Service: otelService{
			Extensions: []string{},
			Pipelines: otelPipelines{Traces: otelPipeline{
				Receivers:  []string{"otlp"},
				Processors: []string{"resource", "batch"},
				Exporters:  []string{exporter},
			}},
			Telemetry: otelTelemetrySettings(in.TelemetryListen),
		},
	}
	if in.HealthListen != "" {
		cfg.Extensions.HealthCheck = &otelHealthCheck{Endpoint: in.HealthListen}
		cfg.Service.Extensions = []string{"health_check"}
	}
	return otelEncode("render trace agent", cfg)
}
