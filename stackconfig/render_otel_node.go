package stackconfig

import (
	"fmt"
	"time"
)

// TraceAgentInput is what a node's collector configuration is made of: the
// project's otelcol (an OpenTelemetry Collector v0.165) that receives OTLP
// from the node's applications on loopback and forwards it to the master's
// collector, and, with the otelcol log shipper, reads the node's logs and
// sends them to the manager. Either part may be absent, not both.
type TraceAgentInput struct {
	// Node and Cluster are inserted as resource attributes node and
	// cluster of every span and log record; an application's own values
	// (and its guid and service.name) are kept.
	Node    string
	Cluster string
	// GRPCListen and HTTPListen are the OTLP receiver addresses.
	GRPCListen string
	HTTPListen string
	// HealthListen serves GET /status; empty: no health check.
	HealthListen string
	// TelemetryListen serves the collector's own metrics on /metrics;
	// empty: none.
	TelemetryListen string
	// StorageDir holds what must outlive a reload or a restart: the
	// sending queues and the read positions in the log files.
	StorageDir string
	// MemoryLimitMiB is the memory_limiter's limit.
	MemoryLimitMiB int

	// CollectorURL is the master's OTLP gRPC receiver as published in etcd
	// (collectors/jaeger-otlp-grpc): http://host:port means no TLS. Empty:
	// no traces pipeline.
	CollectorURL string
	// QueueSize bounds the spans waiting on disk for the collector.
	QueueSize int

	// LogsURL is the manager's OTLP/HTTP logs endpoint (the whole URL);
	// empty: no logs pipeline.
	LogsURL             string
	LogsBearerTokenFile string
	// ContainerLogs is a glob of the json-file logs of the engine's
	// containers (<docker root>/containers/*/*-json.log); the agent's
	// docker driver has the engine write ManagedLabel, NodeLabel and
	// GUIDLabel into each line, so only the containers it manages for this
	// node are shipped (an engine may serve several agents), with the
	// guid. Empty: no container logs.
	ContainerLogs string
	ManagedLabel  string
	NodeLabel     string
	GUIDLabel     string
	// LogFiles are absolute paths or globs of host log files.
	LogFiles []string
	// LogQueueSize bounds the log records waiting on disk for the manager.
	LogQueueSize int
}

// Component names in the rendered node collector configuration.
const (
	otelStorage           = "file_storage"
	otelContainersLogs    = "file_log/containers"
	otelFilesLogs         = "file_log/files"
	otelNodeTraceExporter = "otlp_grpc"
	otelNodeLogsExporter  = "otlp_http/logs"
)

func (in TraceAgentInput) validate() error {
	var c checker
	c.dnsLabel("node", in.Node)
	c.dnsLabel("cluster", in.Cluster)
	c.check("grpc_listen", in.GRPCListen, checkAddr(in.GRPCListen, true))
	c.check("http_listen", in.HTTPListen, checkAddr(in.HTTPListen, true))
	otelCheckCommon(&c, "", in.HealthListen, in.TelemetryListen, 1)
	c.check("storage_dir", in.StorageDir, checkPath(in.StorageDir, false))
	if in.MemoryLimitMiB < 32 {
		c.bad("memory_limit_mib", "must be >= 32, got %d", in.MemoryLimitMiB)
	}
	if in.CollectorURL == "" && in.LogsURL == "" {
		c.bad("collector_url", "nothing to do: give collector_url (traces) or logs_url (logs), got \"\"")
	}
	if in.CollectorURL != "" {
		c.check("collector_url", in.CollectorURL, checkOTLPEndpoint(in.CollectorURL, "grpc"))
		if in.QueueSize <= 0 {
			c.bad("queue_size", "must be > 0, got %d", in.QueueSize)
		}
	}
	if in.LogsURL != "" {
		c.check("logs_url", in.LogsURL, checkEndpointURL(in.LogsURL))
		if in.LogsBearerTokenFile != "" {
			c.check("logs_bearer_token_file", in.LogsBearerTokenFile, checkPath(in.LogsBearerTokenFile, false))
		}
		if in.ContainerLogs != "" {
			c.check("container_logs", in.ContainerLogs, checkPath(in.ContainerLogs, true))
			for _, l := range []struct{ key, value string }{{"managed_label", in.ManagedLabel}, {"node_label", in.NodeLabel}, {"guid_label", in.GUIDLabel}} {
				if !dockerLabelKey.MatchString(l.value) {
					c.bad(l.key, "must match %s, got %q", dockerLabelKey, l.value)
				}
			}
		}
		for i, f := range in.LogFiles {
			c.check(fmt.Sprintf("log_files[%d]", i), f, checkPath(f, true))
		}
		if in.LogQueueSize <= 0 {
			c.bad("log_queue_size", "must be > 0, got %d", in.LogQueueSize)
		}
	}
	return c.err("render trace agent")
}

// RenderTraceAgent renders the node collector's configuration.
//
// Traces: otlp receiver, memory_limiter, resource (insert node, cluster),
// batch, an otlp_grpc exporter to CollectorURL that retries until the
// collector takes a batch, behind a queue of QueueSize spans in
// file_storage: a re-pointed (SIGHUP) or restarted collector sends what it
// held to the collector it is pointed at then. A full queue drops new
// spans, counted in otelcol_exporter_enqueue_failed_spans; the receiver
// never waits for the exporter, so an application is never blocked.
//
// Logs: the otlp receiver (applications that send their logs as OTLP, with
// their own resource), file_log receivers for the managed containers'
// json-file logs (the guid label becomes resource attribute guid) and for
// LogFiles, read from the beginning with their positions kept in
// file_storage, the same processors, and an otlp_http exporter to LogsURL
// with its own queue of LogQueueSize records on disk.
func RenderTraceAgent(in TraceAgentInput) ([]byte, error) {
	if err := in.validate(); err != nil {
		return nil, err
	}
	limiter := &otelMemoryLimiter{
		CheckInterval: otelDuration(time.Second),
		LimitMiB:      in.MemoryLimitMiB,
		SpikeLimitMiB: in.MemoryLimitMiB / 5,
	}
	cfg := otelConfig{
		Extensions: otelExtensions{
			HealthCheckV2: otelHealth(in.HealthListen),
			FileStorage: &otelFileStorage{
				Directory:       otelLiteral(in.StorageDir),
				CreateDirectory: true,
				Timeout:         otelDuration(10 * time.Second),
				Compaction:      otelCompaction{OnStart: true, OnRebound: true, Directory: otelLiteral(in.StorageDir)},
			},
		},
		Processors: otelProcessors{
			MemoryLimiter: limiter,
			Batch:         otelBatchSettings,
			Resource: &otelResource{Attributes: []otelAttributeAction{
				{Key: "node", Value: otelLiteral(in.Node), Action: "insert"},
				{Key: "cluster", Value: otelLiteral(in.Cluster), Action: "insert"},
			}},
		},
		Service: otelService{
			Extensions: []string{otelStorage},
			Telemetry:  otelTelemetrySettings(in.TelemetryListen),
		},
	}
	if in.HealthListen != "" {
		cfg.Service.Extensions = []string{"healthcheckv2", otelStorage}
	}
	processors := []string{"memory_limiter", "resource", "batch"}

	cfg.Receivers.OTLP = otelOTLPIn(in.GRPCListen, in.HTTPListen)
	if in.CollectorURL != "" {
		e := otelExporter(in.CollectorURL, "grpc", "", in.QueueSize, 0)
		e.SendingQueue.Storage = otelStorage
		cfg.Exporters.OTLPGRPC = e
		cfg.Service.Pipelines.Traces = &otelPipeline{
			Receivers:  []string{"otlp"},
			Processors: processors,
			Exporters:  []string{otelNodeTraceExporter},
		}
	}

	if in.LogsURL != "" {
		receivers := []string{"otlp"}
		if in.ContainerLogs != "" {
			cfg.Receivers.Containers = &otelFileLog{
				Include:   []string{otelLiteral(in.ContainerLogs)},
				StartAt:   "beginning",
				Storage:   otelStorage,
				Operators: containerLogOperators(in.ManagedLabel, in.NodeLabel, in.GUIDLabel, in.Node),
			}
			receivers = append(receivers, otelContainersLogs)
		}
		if len(in.LogFiles) > 0 {
			files := make([]string, len(in.LogFiles))
			for i, f := range in.LogFiles {
				files[i] = otelLiteral(f)
			}
			cfg.Receivers.Files = &otelFileLog{Include: files, StartAt: "beginning", Storage: otelStorage, IncludeFilePath: true}
			receivers = append(receivers, otelFilesLogs)
		}
		e := otelExporter(in.LogsURL, "http", in.LogsBearerTokenFile, in.LogQueueSize, 0)
		e.Endpoint, e.LogsEndpoint = "", e.Endpoint
		e.SendingQueue.Storage = otelStorage
		cfg.Exporters.Logs = e
		cfg.Service.Pipelines.Logs = &otelPipeline{
			Receivers:  receivers,
			Processors: processors,
			Exporters:  []string{otelNodeLogsExporter},
		}
	}
	return otelEncode("render trace agent", cfg)
}

// containerLogOperators parse a line of Docker's json-file log driver,
// {"log":"...\n","stream":"stdout","attrs":{<label>:<value>},"time":"..."},
// where attrs holds the container labels the driver was told to log: lines
// of containers without managed=true or of another node are dropped, the
// guid label becomes resource attribute guid, the trailing newline goes.
//
// The label keys match dockerLabelKey and the node is a DNS label (no
// quotes, no $), so they are inert inside the expressions.
func containerLogOperators(managed, nodeLabel, guid, node string) []otelOperator {
	no := false
	empty := ""
	attr := func(key string) string { return `attributes.attrs?.["` + key + `"]` }
	return []otelOperator{
		{Type: "container", Format: "docker", AddMetadataFromFilepath: &no},
		{Type: "filter", Expr: attr(managed) + ` != "true" or ` + attr(nodeLabel) + ` != "` + node + `"`},
		{Type: "move", If: attr(guid) + " != nil", From: `attributes.attrs["` + guid + `"]`, To: `resource["guid"]`},
		{Type: "remove", If: "attributes.attrs != nil", Field: "attributes.attrs"},
		{Type: "regex_replace", Field: "body", Regex: `\r?\n$`, ReplaceWith: &empty},
	}
}
