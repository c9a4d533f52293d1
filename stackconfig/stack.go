package stackconfig

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Stack configures the observability stack the agent runs: the cluster
// stack on the master (Prometheus, the Jaeger collector) and the node stack
// on every agent (node_exporter, the trace agent, which also ships logs,
// or Vector). Everything here that ends up in a rendered file is checked by
// Validate.
type Stack struct {
	// Driver runs the stack: "docker", "process", "helm" (Kubernetes),
	// "none" (the operator runs it), or "" to pick helm in a pod, else
	// docker when the Docker engine answers, else process.
	Driver string `mapstructure:"driver"`

	Prometheus   PrometheusStack   `mapstructure:"prometheus"`
	NodeExporter NodeExporterStack `mapstructure:"node_exporter"`
	Jaeger       JaegerStack       `mapstructure:"jaeger"`
	TraceAgent   TraceAgentStack   `mapstructure:"trace_agent"`
	Logs         LogsStack         `mapstructure:"logs"`
	Vector       VectorStack       `mapstructure:"vector"`
	// Helm is Kubernetes mode (stack/helm.go).
	Helm Helm `mapstructure:"helm"`
}

// PrometheusStack is the master's Prometheus server.
type PrometheusStack struct {
	// Enabled runs it; Image is its docker image; Binary is its path for
	// the process driver (empty: not available as a process).
	Enabled bool   `mapstructure:"enabled"`
	Image   string `mapstructure:"image"`
	Binary  string `mapstructure:"binary"`
	// Version is the Prometheus version ("3.16.0", "3", "2.42"), which
	// decides the rendered config (3 and later send remote-write 2.0);
	// empty: detected (see PrometheusMajor).
	Version string `mapstructure:"version"`
	// Listen is Prometheus's web address (host:port); it also scrapes
	// itself there.
	Listen string `mapstructure:"listen"`
	// ScrapeInterval, ScrapeTimeout and EvaluationInterval are the global
	// settings of the rendered configuration.
	ScrapeInterval     time.Duration `mapstructure:"scrape_interval"`
	ScrapeTimeout      time.Duration `mapstructure:"scrape_timeout"`
	EvaluationInterval time.Duration `mapstructure:"evaluation_interval"`
	// FileSDRefreshInterval is how often Prometheus re-reads the file_sd
	// files besides watching them.
	FileSDRefreshInterval time.Duration `mapstructure:"file_sd_refresh_interval"`
	// Retention is the local TSDB retention (a flag, not in the file): the
	// data also goes to the manager through the relay, so it is short.
	Retention time.Duration `mapstructure:"retention"`
	// ExternalLabels are added to every series Prometheus sends; the agent
	// adds cluster=<cluster> unless set here.
	ExternalLabels map[string]string `mapstructure:"external_labels"`
}

// NodeExporterStack is the node_exporter every node runs.
type NodeExporterStack struct {
	Enabled bool   `mapstructure:"enabled"`
	Image   string `mapstructure:"image"`
	Binary  string `mapstructure:"binary"`
	// Listen is its address (host:port). The master scrapes it there, so a
	// cluster of several hosts needs a reachable address, not loopback.
	Listen string `mapstructure:"listen"`
}

// JaegerStack is the master's Jaeger v2 collector (the jaeger binary, an
// OpenTelemetry Collector): OTLP in from the trace agents, OTLP out to the
// manager, through a bounded in-memory queue with retries.
type JaegerStack struct {
	Enabled bool   `mapstructure:"enabled"`
	Image   string `mapstructure:"image"`
	Binary  string `mapstructure:"binary"`
	// OTLPGRPCListen and OTLPHTTPListen are the receiver addresses; an
	// empty host (":4317") means the master's advertised host (WithHost).
	OTLPGRPCListen string `mapstructure:"otlp_grpc_listen"`
	OTLPHTTPListen string `mapstructure:"otlp_http_listen"`
	// HealthListen serves the health check (GET /status); empty: none.
	HealthListen string `mapstructure:"health_listen"`
	// TelemetryListen serves the collector's own metrics, which the master
	// publishes as target jaeger/collector; empty: none.
	TelemetryListen string `mapstructure:"telemetry_listen"`
	// QueueSize bounds the spans waiting in memory for the manager; beyond
	// it, new spans are dropped and counted.
	QueueSize int `mapstructure:"queue_size"`
}

// TraceAgentStack is the OpenTelemetry Collector every node runs (the
// project's otelcol distribution, testdata/testbins/otelcol): applications
// send OTLP to it on loopback, it adds node and cluster and forwards to the
// master's Jaeger collector through a queue on disk. With the otelcol log
// shipper ([stack.logs]) it ships the node's logs too.
type TraceAgentStack struct {
	Enabled bool   `mapstructure:"enabled"`
	Image   string `mapstructure:"image"`
	Binary  string `mapstructure:"binary"`
	// OTLPGRPCListen and OTLPHTTPListen are the receiver addresses
	// applications are pointed at.
	OTLPGRPCListen string `mapstructure:"otlp_grpc_listen"`
	OTLPHTTPListen string `mapstructure:"otlp_http_listen"`
	// HealthListen serves the health check (GET /); empty: none.
	HealthListen string `mapstructure:"health_listen"`
	// TelemetryListen serves the collector's own metrics (queue sizes,
	// dropped spans), published as target otelcol/node-collector of the
	// node; empty: none.
	TelemetryListen string `mapstructure:"telemetry_listen"`
	// QueueSize bounds the spans waiting on disk for the master's
	// collector; beyond it, new spans are dropped and counted
	// (otelcol_exporter_enqueue_failed_spans). The queue survives a
	// re-pointing at a new master and a restart.
	QueueSize int `mapstructure:"queue_size"`
	// MemoryLimitMiB is the memory_limiter's limit: above it the collector
	// refuses data instead of growing.
	MemoryLimitMiB int `mapstructure:"memory_limit_mib"`
}

// LogsStack chooses and feeds the node's log shipper.
type LogsStack struct {
	// Shipper is "otelcol" (the node's trace agent ships the logs too, as
	// OTLP/HTTP) or "vector" (a Vector per node, JSON over HTTP).
	Shipper string `mapstructure:"shipper"`
	// Files are absolute paths or globs of host log files to ship besides
	// the logs of the agent's containers.
	Files []string `mapstructure:"files"`
	// QueueSize bounds the log records the otelcol shipper keeps on disk
	// for the manager; beyond it, new records are dropped and counted.
	QueueSize int `mapstructure:"queue_size"`
}

// Log shippers, the values of stack.logs.shipper.
const (
	ShipperOtelcol = "otelcol"
	ShipperVector  = "vector"
)

// VectorStack is the Vector log shipper of every node, with
// stack.logs.shipper = "vector".
type VectorStack struct {
	Enabled bool   `mapstructure:"enabled"`
	Image   string `mapstructure:"image"`
	Binary  string `mapstructure:"binary"`
	// APIListen is the address of Vector's API (a loopback host:port):
	// the agent reloads a changed config only once its GET /health
	// answers, since a SIGHUP before Vector handles it kills it. Empty:
	// no API, and a reload is signalled without waiting.
	APIListen string `mapstructure:"api_listen"`
}

// Manager says where the node and cluster stacks deliver logs and traces.
// Metrics go through the relay (see Relay).
type Manager struct {
	// LogsURL is where the node's log shipper sends logs; empty: logs are
	// not shipped. The otelcol shipper posts OTLP/HTTP logs (protobuf) to
	// it as the whole URL (VictoriaLogs: /insert/opentelemetry/v1/logs,
	// Loki 3: /otlp/v1/logs, a collector: /v1/logs); Vector posts JSON.
	LogsURL string `mapstructure:"logs_url"`
	// LogsBearerTokenFile holds the bearer token for LogsURL. Vector reads
	// it as a secret of its directory backend, so its file name must match
	// [A-Za-z0-9_.]+; the otelcol shipper reads it at start.
	LogsBearerTokenFile string `mapstructure:"logs_bearer_token_file"`
	// TracesOTLPEndpoint is the manager's OTLP endpoint the Jaeger collector
	// forwards to: http(s)://host:port for grpc, a base URL for http (the
	// exporter appends /v1/traces). http:// means no TLS.
	TracesOTLPEndpoint string `mapstructure:"traces_otlp_endpoint"`
	// TracesOTLPProtocol is grpc or http.
	TracesOTLPProtocol string `mapstructure:"traces_otlp_protocol"`
	// TracesBearerTokenFile holds the bearer token for TracesOTLPEndpoint;
	// the collector reads it once at start.
	TracesBearerTokenFile string `mapstructure:"traces_bearer_token_file"`
}

// DefaultStack holds the value of every stack key that is not set.
var DefaultStack = Stack{
	Prometheus: PrometheusStack{
		Enabled:               true,
		Image:                 "prom/prometheus:v2.42.0",
		Binary:                "/usr/bin/prometheus",
		Listen:                "127.0.0.1:9090",
		ScrapeInterval:        15 * time.Second,
		ScrapeTimeout:         10 * time.Second,
		EvaluationInterval:    15 * time.Second,
		FileSDRefreshInterval: time.Minute,
		Retention:             48 * time.Hour,
	},
	NodeExporter: NodeExporterStack{
		Enabled: true,
		Image:   "prom/node-exporter:v1.5.0",
		Binary:  "/usr/bin/prometheus-node-exporter",
		Listen:  "127.0.0.1:9100",
	},
	Jaeger: JaegerStack{
		Enabled:         true,
		Image:           "jaegertracing/jaeger:2.12.0",
		OTLPGRPCListen:  ":4317",
		OTLPHTTPListen:  ":4318",
		HealthListen:    "127.0.0.1:13133",
		TelemetryListen: "127.0.0.1:8888",
		QueueSize:       50000,
	},
	TraceAgent: TraceAgentStack{
		Enabled:         true,
		Image:           "agentproj/otelcol:0.165.0",
		OTLPGRPCListen:  "127.0.0.1:14317",
		OTLPHTTPListen:  "127.0.0.1:14318",
		HealthListen:    "127.0.0.1:13134",
		TelemetryListen: "127.0.0.1:18888",
		QueueSize:       100000,
		MemoryLimitMiB:  256,
	},
	Logs: LogsStack{
		Shipper:   ShipperOtelcol,
		QueueSize: 100000,
	},
	Vector: VectorStack{
		Enabled:   true,
		Image:     "timberio/vector:0.43.0-debian",
		APIListen: "127.0.0.1:8686",
	},
	Helm: DefaultHelm,
}

// DefaultManager holds the value of every manager key that is not set:
// nothing is delivered until the URLs are given.
var DefaultManager = Manager{
	TracesOTLPProtocol: "grpc",
}

// Component is the part of a stack component every driver needs.
type Component struct {
	// Name is the component's key under stack: "prometheus", "vector"...
	Name    string
	Enabled bool
	Image   string
	Binary  string
}

// Components lists the stack's components, cluster stack first.
func (s *Stack) Components() []Component {
	return []Component{
		{"prometheus", s.Prometheus.Enabled, s.Prometheus.Image, s.Prometheus.Binary},
		{"jaeger", s.Jaeger.Enabled, s.Jaeger.Image, s.Jaeger.Binary},
		{"node_exporter", s.NodeExporter.Enabled, s.NodeExporter.Image, s.NodeExporter.Binary},
		{"trace_agent", s.TraceAgent.Enabled, s.TraceAgent.Image, s.TraceAgent.Binary},
		{"vector", s.Vector.Enabled, s.Vector.Image, s.Vector.Binary},
	}
}

// Validate checks every stack key and returns all problems, each naming the
// key, what is allowed and the bad value.
func (s *Stack) Validate() []error {
	var c checker
	switch s.Driver {
	case "", "docker", "process", "helm", "none":
	default:
		c.bad("stack.driver", "must be one of \"\", docker, process, helm, none, got %q", s.Driver)
	}
	s.Helm.validate(&c)
	for _, comp := range s.Components() {
		key := "stack." + comp.Name
		if comp.Image != "" {
			c.check(key+".image", comp.Image, checkImage(comp.Image))
		} else if comp.Enabled && s.Driver == "docker" {
			c.bad(key+".image", "must be set when the docker driver runs it, got \"\"")
		}
		if comp.Binary != "" {
			c.check(key+".binary", comp.Binary, checkPath(comp.Binary, false))
		}
	}

	p := &s.Prometheus
	if p.Version != "" {
		if _, err := parseMajor(p.Version); err != nil {
			c.bad("stack.prometheus.version", "%v, got %q", err, p.Version)
		}
	}
	c.check("stack.prometheus.listen", p.Listen, checkAddr(p.Listen, true))
	c.positive("stack.prometheus.scrape_interval", p.ScrapeInterval)
	c.positive("stack.prometheus.scrape_timeout", p.ScrapeTimeout)
	if p.ScrapeTimeout > p.ScrapeInterval && p.ScrapeInterval > 0 {
		c.bad("stack.prometheus.scrape_timeout", "must be <= scrape_interval (%s), got %s", p.ScrapeInterval, p.ScrapeTimeout)
	}
	c.positive("stack.prometheus.evaluation_interval", p.EvaluationInterval)
	c.positive("stack.prometheus.file_sd_refresh_interval", p.FileSDRefreshInterval)
	c.positive("stack.prometheus.retention", p.Retention)
	c.labels("stack.prometheus.external_labels", p.ExternalLabels)

	c.check("stack.node_exporter.listen", s.NodeExporter.Listen, checkAddr(s.NodeExporter.Listen, true))

	for _, o := range []struct {
		key                           string
		grpc, http, health, telemetry string
		queue                         int
		hostOptional                  bool
	}{
		{"stack.jaeger", s.Jaeger.OTLPGRPCListen, s.Jaeger.OTLPHTTPListen, s.Jaeger.HealthListen, s.Jaeger.TelemetryListen, s.Jaeger.QueueSize, true},
		{"stack.trace_agent", s.TraceAgent.OTLPGRPCListen, s.TraceAgent.OTLPHTTPListen, s.TraceAgent.HealthListen, s.TraceAgent.TelemetryListen, s.TraceAgent.QueueSize, false},
	} {
		c.check(o.key+".otlp_grpc_listen", o.grpc, checkAddr(o.grpc, !o.hostOptional))
		c.check(o.key+".otlp_http_listen", o.http, checkAddr(o.http, !o.hostOptional))
		otelCheckCommon(&c, o.key+".", o.health, o.telemetry, o.queue)
	}

	if s.TraceAgent.MemoryLimitMiB < 32 {
		c.bad("stack.trace_agent.memory_limit_mib", "must be >= 32, got %d", s.TraceAgent.MemoryLimitMiB)
	}

	if a := s.Vector.APIListen; a != "" {
		c.check("stack.vector.api_listen", a, checkLoopbackAddr(a))
	}

	switch s.Logs.Shipper {
	case ShipperOtelcol, ShipperVector:
	default:
		c.bad("stack.logs.shipper", "must be otelcol or vector, got %q", s.Logs.Shipper)
	}
	for i, f := range s.Logs.Files {
		c.check(fmt.Sprintf("stack.logs.files[%d]", i), f, checkPath(f, true))
	}
	if s.Logs.QueueSize <= 0 {
		c.bad("stack.logs.queue_size", "must be > 0, got %d", s.Logs.QueueSize)
	}
	return c.errs
}

// Validate checks every manager key and returns all problems, each naming
// the key, what is allowed and the bad value.
func (m *Manager) Validate() []error {
	var c checker
	if m.LogsURL != "" {
		c.check("manager.logs_url", m.LogsURL, checkLogsURL(m.LogsURL))
	}
	if m.LogsBearerTokenFile != "" {
		if m.LogsURL == "" {
			c.bad("manager.logs_bearer_token_file", "needs manager.logs_url, got %q", m.LogsBearerTokenFile)
		}
		c.check("manager.logs_bearer_token_file", m.LogsBearerTokenFile, checkLogsTokenFile(m.LogsBearerTokenFile))
	}
	switch m.TracesOTLPProtocol {
	case "grpc", "http":
	default:
		c.bad("manager.traces_otlp_protocol", "must be grpc or http, got %q", m.TracesOTLPProtocol)
	}
	if m.TracesOTLPEndpoint != "" {
		c.check("manager.traces_otlp_endpoint", m.TracesOTLPEndpoint, checkOTLPEndpoint(m.TracesOTLPEndpoint, m.TracesOTLPProtocol))
	}
	if m.TracesBearerTokenFile != "" {
		if m.TracesOTLPEndpoint == "" {
			c.bad("manager.traces_bearer_token_file", "needs manager.traces_otlp_endpoint, got %q", m.TracesBearerTokenFile)
		}
		c.check("manager.traces_bearer_token_file", m.TracesBearerTokenFile, checkPath(m.TracesBearerTokenFile, false))
	}
	return c.errs
}

// WithHost returns addr (host:port) with host filled in when addr has none
// or a wildcard one, as in ":4317" or "0.0.0.0:9100": the address to reach
// a listener at. Other addresses are returned unchanged.
func WithHost(addr, host string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil || (h != "" && h != "0.0.0.0" && h != "::") {
		return addr
	}
	return net.JoinHostPort(host, port)
}

// checker collects validation problems as "<key>: <what is wrong>". It is
// the one place that formats them, for the config sections and for the
// renderers' inputs alike.
type checker struct{ errs []error }

func (c *checker) bad(key, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// check records err, if any, as "<key>: <err>, got <value>".
func (c *checker) check(key, value string, err error) {
	if err != nil {
		c.bad(key, "%v, got %q", err, value)
	}
}

func (c *checker) positive(key string, d time.Duration) {
	switch {
	case d <= 0:
		c.bad(key, "must be > 0, got %s", d)
	case d%time.Millisecond != 0:
		c.bad(key, "must be a whole number of milliseconds, got %s", d)
	}
}

func (c *checker) dnsLabel(key, value string) {
	if !ValidDNSLabel(value) {
		c.bad(key, "must be %s, got %q", DNSLabelRule, value)
	}
}

// labels checks Prometheus label names and values: legacy names, not
// reserved (__*), values non-empty UTF-8 (they are quoted when rendered).
func (c *checker) labels(key string, ls map[string]string) {
	for name, value := range ls {
		switch {
		case !ValidLabelName(name):
			c.bad(key, "label name must match %s, got %q", labelName, name)
		case strings.HasPrefix(name, "__"):
			c.bad(key, "label names starting with __ are reserved, got %q", name)
		case value == "" || !utf8.ValidString(value):
			c.bad(key+"."+name, "must be non-empty UTF-8, got %q", value)
		}
	}
}

// err returns the problems joined and prefixed with what was being done.
func (c *checker) err(what string) error {
	if len(c.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", what, errors.Join(c.errs...))
}

var (
	// hostnameRE is a DNS name or IPv4 address as it may appear in host:port.
	hostnameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$`)
	// imageRef is a docker image reference: [registry[:port]/]path[:tag][@digest].
	imageRef = regexp.MustCompile(`^([a-zA-Z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)
	// vectorSecretKey is what Vector accepts as a secret key (a file name
	// of its directory backend).
	vectorSecretKey = regexp.MustCompile(`^[A-Za-z0-9_.]+$`)
)

// checkAddr accepts host:port with a port from 1 to 65535 and a host
// that is an IP address or a DNS name; the host may be empty unless
// needHost. Nothing else can reach a rendered file.
func checkAddr(s string, needHost bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("must be host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errors.New("must be host:port with a port from 1 to 65535")
	}
	return checkHost(host, needHost)
}

// checkLoopbackAddr accepts host:port with a loopback IP address as
// host: for a listener that must not be reachable from other hosts.
func checkLoopbackAddr(s string) error {
	if err := checkAddr(s, true); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(s)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return errors.New("must be a loopback address like 127.0.0.1:8686")
	}
	return nil
}

func checkHost(host string, needHost bool) error {
	switch {
	case host == "" && needHost:
		return errors.New("must have a host")
	case host == "", net.ParseIP(host) != nil, hostnameRE.MatchString(host):
		return nil
	}
	return errors.New("host must be an IP address or a DNS name")
}

// checkEndpointURL accepts an http or https URL with a valid host, no user
// information (credentials go in token files) and only the characters RFC
// 3986 allows, so quotes, spaces, braces and control characters never reach
// a rendered file.
func checkEndpointURL(s string) error {
	const rule = "must be an http:// or https:// URL with a host"
	if strings.ContainsFunc(s, func(r rune) bool { return !uriChar(r) }) {
		return errors.New(rule + " and only URL characters (no quotes, spaces, braces or control characters)")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New(rule)
	}
	if u.User != nil {
		return errors.New(rule + " and no user information (use a bearer token file)")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return errors.New(rule + " and no fragment")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errors.New(rule + " and a port from 1 to 65535")
		}
	}
	if err := checkHost(u.Hostname(), true); err != nil {
		return fmt.Errorf("%s: %w", rule, err)
	}
	return nil
}

// checkOTLPEndpoint is checkEndpointURL, and for grpc nothing after the
// port: a gRPC target has no path.
func checkOTLPEndpoint(s, protocol string) error {
	if err := checkEndpointURL(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	if protocol == "grpc" && (strings.TrimSuffix(u.EscapedPath(), "/") != "" || u.RawQuery != "" || strings.HasSuffix(s, "?")) {
		return errors.New("must be http(s)://host:port with no path for the grpc protocol")
	}
	return nil
}

func uriChar(r rune) bool {
	return r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		strings.ContainsRune("-._~:/?#[]@!$&'()*+,;=%", r))
}

// checkPath accepts a clean absolute path without characters that mean
// something to a YAML, TOML, VRL or shell reader or to the stack's own
// expansion ($ for env, {} for ${file:...}, SECRET[ for Vector); glob
// allows * ? [ ] as in a filepath.Match pattern.
func checkPath(s string, glob bool) error {
	switch {
	case !filepath.IsAbs(s):
		return errors.New("must be an absolute path")
	case filepath.Clean(s) != s:
		return errors.New("must be a clean path (no //, /./, /../ or trailing /)")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || strings.ContainsRune("\"'`\\${}", r) }):
		return errors.New("must not contain control characters, quotes, backslash, $, { or }")
	case !utf8.ValidString(s):
		return errors.New("must be UTF-8")
	case strings.Contains(s, "SECRET["):
		return errors.New("must not contain SECRET[ (a Vector secret reference)")
	}
	if !glob {
		if strings.ContainsAny(s, "*?[]") {
			return errors.New("must not contain glob characters * ? [ ]")
		}
		return nil
	}
	if _, err := filepath.Match(s, ""); err != nil {
		return errors.New("must be a valid glob pattern")
	}
	return nil
}

// checkLogsURL is checkEndpointURL for a URL written into Vector's file,
// where SECRET[...] anywhere is a secret reference.
func checkLogsURL(s string) error {
	if err := checkEndpointURL(s); err != nil {
		return err
	}
	if strings.Contains(s, "SECRET[") {
		return errors.New("must not contain SECRET[ (a Vector secret reference)")
	}
	return nil
}

// checkLogsTokenFile is checkPath for the file Vector reads the logs token
// from: its directory backend takes the file name as the secret key.
func checkLogsTokenFile(s string) error {
	if err := checkPath(s, false); err != nil {
		return err
	}
	if !vectorSecretKey.MatchString(filepath.Base(s)) {
		return fmt.Errorf("file name must match %s (Vector reads it as a secret)", vectorSecretKey)
	}
	return nil
}

// checkImage accepts a docker image reference.
func checkImage(s string) error {
	if len(s) > 255 || !imageRef.MatchString(s) {
		return errors.New("must be a docker image reference like registry:5000/name/image:tag")
	}
	return nil
}
