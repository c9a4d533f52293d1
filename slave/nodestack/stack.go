package nodestack

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/master/collectors"
	"github.com/agentproj/agent/slave/reload"
	"github.com/agentproj/agent/stackconfig"
)

// Owner is the supervisor owner label of the node stack's workloads.
const Owner = "node-stack"

// TargetSetter publishes target groups; slave.TargetPublisher implements it.
type TargetSetter interface {
	Set(source string, groups map[string]etcd.TargetGroup)
}

// Config is what the node stack is made from.
type Config struct {
	Node, Cluster string
	Driver        string
	Stack         stackconfig.Stack
	Manager       stackconfig.Manager
	Dir           string // <data_dir>/stack
	Host          string // this host as the master reaches it
	DockerSocket  string // host path of the Docker socket, for Vector's docker_logs
	// ContainerLogs is the glob of the Docker engine's json-file container
	// logs (docker.Driver.ContainerLogGlob), for the otelcol log shipper;
	// empty with other drivers.
	ContainerLogs string
}

// Stack is the node stack actor.
type Stack struct {
	cfg     Config
	sup     *workload.Supervisor
	targets TargetSetter
	log     *slog.Logger

	mu sync.Mutex
	// collector is the last Jaeger collector URL published in etcd. It
	// is kept while none is published (the master died, the next one is
	// not elected yet), so that the trace agent goes on taking spans
	// into its queue instead of being stopped, and sends them to the
	// next collector once it is re-pointed.
	collector string
	next      *reload.Pending[reloaded] // a reloaded config apply has not taken yet
	nudge     chan struct{}             // new collector URLs
	warned    map[string]string         // component -> last problem logged

	traceEndpoint string // as at start: the applications were given it
}

// New returns the node stack.
func New(cfg Config, d workload.Driver, targets TargetSetter, log *slog.Logger, reg prometheus.Registerer) (*Stack, error) {
	sup, err := workload.NewSupervisor(d, workload.SupervisorOptions{
		Owner:      Owner,
		Selector:   map[string]string{workload.LabelNode: cfg.Node, workload.LabelCluster: cfg.Cluster},
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	return &Stack{cfg: cfg, sup: sup, targets: targets, log: log,
		next: reload.NewPending[reloaded](), nudge: make(chan struct{}, 1), warned: map[string]string{},
		traceEndpoint: "http://" + stackconfig.WithHost(cfg.Stack.TraceAgent.OTLPHTTPListen, "127.0.0.1")}, nil
}

// SetCollectors takes the collector URLs from etcd and nudges Run; the
// trace agent follows the Jaeger collector. A set without one keeps the
// last URL (see Stack.collector).
func (s *Stack) SetCollectors(urls map[string]string) {
	s.mu.Lock()
	if u := urls[collectors.JaegerOTLPGRPC]; u != "" {
		s.collector = u
	}
	s.mu.Unlock()
	select {
	case s.nudge <- struct{}{}:
	default:
	}
}

// SetConfig takes a reloaded [stack] and [manager] (stackconfig.Reload) and nudges
// Run: the configs are rendered again, a workload whose config file
// changed is reloaded, one whose command or image changed is restarted.
func (s *Stack) SetConfig(st stackconfig.Stack, m stackconfig.Manager) {
	s.next.Set(reloaded{st, m})
}

// States reports the node stack's workloads.
func (s *Stack) States() []workload.State { return s.sup.States() }

// TraceEndpoint is the trace agent's OTLP/HTTP endpoint on this node, for
// applications.
func (s *Stack) TraceEndpoint() string { return s.traceEndpoint }

// Run keeps the node stack in step until ctx ends; the workloads stay.
func (s *Stack) Run(ctx context.Context) error {
	s.apply(ctx)
	done := make(chan error, 1)
	go func() { done <- s.sup.Run(ctx) }()
	for {
		select {
		case <-ctx.Done():
			return <-done
		case <-s.nudge:
			s.apply(ctx)
		case <-s.next.Ready():
			s.apply(ctx)
		}
	}
}

// apply renders every config, hands the specs to the supervisor and
// reloads running workloads whose config changed.
func (s *Stack) apply(ctx context.Context) {
	if r, ok := s.next.Take(); ok { // s.cfg is Run's own
		s.cfg.Stack, s.cfg.Manager = r.stack, r.manager
	}
	specs, reload, targets := s.build()
	s.targets.Set("stack", targets)
	// The configs are written: a workload started from now on reads them.
	changedAt := time.Now()
	if err := s.sup.Set(specs); err != nil {
		s.log.Error("node stack rejected", "err", err)
		return
	}
	// Only this stack's own running workloads are signalled (the
	// Supervisor checks their labels and spec), once ready (their
	// Spec.Ready probe); with the none driver, nothing is. The Supervisor
	// logs each reload.
	for _, name := range reload {
		if err := s.sup.Reload(name, syscall.SIGHUP, changedAt); err != nil {
			s.log.Warn("reload", "workload", name, "err", err)
		}
	}
}

// build writes the stack's configs into Dir and returns its workloads,
// the names of those whose config changed and its scrape targets; a
// component that cannot start is logged (once per problem) and left out.
func (s *Stack) build() (specs []workload.Spec, reload []string, targets map[string]etcd.TargetGroup) {
	targets = map[string]etcd.TargetGroup{}
	add := func(component string, spec *workload.Spec, changed bool, err error) {
		if err != nil {
			s.warnOnce(component, err.Error())
			return
		}
		s.warnOnce(component, "")
		if spec == nil {
			return
		}
		specs = append(specs, *spec)
		if changed {
			reload = append(reload, spec.Name)
		}
	}
	st := s.cfg.Stack
	if st.NodeExporter.Enabled {
		spec, err := s.nodeExporter(targets)
		add("node_exporter", spec, false, err)
	}
	if st.Vector.Enabled && st.Logs.Shipper == stackconfig.ShipperVector {
		spec, changed, err := s.vector()
		add("vector", spec, changed, err)
	}
	if st.TraceAgent.Enabled {
		spec, changed, err := s.traceAgent(targets)
		add("trace_agent", spec, changed, err)
	}
	if len(targets) == 0 {
		targets = nil
	}
	return specs, reload, targets
}

// Render writes the node stack's configs into cfg.Dir as the running stack
// does, with collector as the Jaeger collector's OTLP URL that etcd would
// publish, and returns its workloads (agent check); a component that
// would not start is logged on log.
func Render(cfg Config, collector string, log *slog.Logger) []workload.Spec {
	s := &Stack{cfg: cfg, log: log, collector: collector, warned: map[string]string{}}
	specs, _, _ := s.build()
	return specs
}

func (s *Stack) warnOnce(component, problem string) {
	if s.warned[component] == problem {
		return
	}
	s.warned[component] = problem
	if problem != "" {
		s.log.Warn("node stack component not started", "component", component, "err", problem)
	}
}

// target is a scrape target of this node, labelled node and cluster.
func (s *Stack) target(listen string) etcd.TargetGroup {
	return etcd.TargetGroup{
		Targets: []string{stackconfig.WithHost(listen, s.cfg.Host)},
		Labels:  model.LabelSet{"node": model.LabelValue(s.cfg.Node), "cluster": model.LabelValue(s.cfg.Cluster)},
	}
}

func (s *Stack) nodeExporter(targets map[string]etcd.TargetGroup) (*workload.Spec, error) {
	st := s.cfg.Stack.NodeExporter
	spec, err := workload.Component{Key: "stack.node_exporter", Role: workload.RoleNodeExporter, Image: st.Image, Binary: st.Binary}.
		Spec(s.cfg.Driver, "agent-node-exporter-"+s.cfg.Node, []string{"--web.listen-address=" + st.Listen, "--no-collector.systemd"})
	if err != nil {
		return nil, err
	}
	targets["node/node-exporter"] = s.target(st.Listen)
	return &spec, nil
}

func (s *Stack) vector() (*workload.Spec, bool, error) {
	st, m, files := s.cfg.Stack.Vector, s.cfg.Manager, s.cfg.Stack.Logs.Files
	if m.LogsURL == "" {
		return nil, false, errString("manager.logs_url: not set, so logs have nowhere to go")
	}
	dir := filepath.Join(s.cfg.Dir, "vector")
	docker := s.cfg.Driver == "docker"
	toml, err := stackconfig.RenderVector(stackconfig.VectorInput{
		Node: s.cfg.Node, Cluster: s.cfg.Cluster, DataDir: filepath.Join(dir, "data"),
		Docker: docker, ManagedLabel: workload.LabelManaged, GUIDLabel: workload.LabelGUID,
		Files: files, LogsURL: m.LogsURL, BearerTokenFile: m.LogsBearerTokenFile,
		APIListen: st.APIListen,
	})
	if err != nil {
		return nil, false, err
	}
	path := filepath.Join(dir, "vector.toml")
	changed, err := workload.WriteFile(path, toml)
	if err != nil {
		return nil, false, err
	}
	mounts := mountsOf(workload.SamePath(dir, false), files, m.LogsBearerTokenFile)
	if docker && s.cfg.DockerSocket != "" {
		mounts = append(mounts, workload.Mount{Source: s.cfg.DockerSocket, Target: "/var/run/docker.sock", ReadOnly: true})
	}
	spec, err := workload.Component{Key: "stack.vector", Role: workload.RoleVector, Image: st.Image, Binary: st.Binary}.
		Spec(s.cfg.Driver, "agent-vector-"+s.cfg.Node, []string{"--config", path}, mounts...)
	if err != nil {
		return nil, false, err
	}
	if st.APIListen != "" {
		// Vector's API answers /health once its topology runs, after it
		// has installed its SIGHUP handler.
		spec.Ready = "http://" + st.APIListen + "/health"
	}
	return &spec, changed, nil
}

// traceAgent is the node's OpenTelemetry Collector: traces to the last
// Jaeger collector published, and, with the otelcol shipper, the node's
// logs to the manager. Its telemetry is published as target
// otelcol/node-collector.
func (s *Stack) traceAgent(targets map[string]etcd.TargetGroup) (*workload.Spec, bool, error) {
	st, m, logs := s.cfg.Stack.TraceAgent, s.cfg.Manager, s.cfg.Stack.Logs
	s.mu.Lock()
	collector := s.collector
	s.mu.Unlock()
	dir := filepath.Join(s.cfg.Dir, "trace-agent")
	in := stackconfig.TraceAgentInput{
		Node: s.cfg.Node, Cluster: s.cfg.Cluster,
		GRPCListen: st.OTLPGRPCListen, HTTPListen: st.OTLPHTTPListen,
		HealthListen: st.HealthListen, TelemetryListen: st.TelemetryListen,
		StorageDir: filepath.Join(dir, "storage"), MemoryLimitMiB: st.MemoryLimitMiB,
		CollectorURL: collector, QueueSize: st.QueueSize,
	}
	shipLogs := logs.Shipper == stackconfig.ShipperOtelcol && m.LogsURL != ""
	if shipLogs {
		in.LogsURL, in.LogsBearerTokenFile = m.LogsURL, m.LogsBearerTokenFile
		in.LogFiles, in.LogQueueSize = logs.Files, logs.QueueSize
		if s.cfg.Driver == "docker" {
			in.ContainerLogs, in.ManagedLabel, in.NodeLabel, in.GUIDLabel = s.cfg.ContainerLogs, workload.LabelManaged, workload.LabelNode, workload.LabelGUID
		}
	}
	if collector == "" && !shipLogs {
		return nil, false, errString("no Jaeger collector published in etcd yet (collectors/" + collectors.JaegerOTLPGRPC + ") and no logs to ship")
	}
	yml, err := stackconfig.RenderTraceAgent(in)
	if err != nil {
		return nil, false, err
	}
	path := filepath.Join(dir, "config.yml")
	changed, err := workload.WriteFile(path, yml)
	if err != nil {
		return nil, false, err
	}
	var files []string
	if shipLogs {
		files = in.LogFiles
		if in.ContainerLogs != "" {
			files = append(files, in.ContainerLogs)
		}
	}
	mounts := mountsOf(workload.SamePath(dir, false), files, in.LogsBearerTokenFile)
	spec, err := workload.Component{Key: "stack.trace_agent", Role: workload.RoleTraceAgent, Image: st.Image, Binary: st.Binary}.
		Spec(s.cfg.Driver, "agent-trace-agent-"+s.cfg.Node, []string{"--config=" + path}, mounts...)
	if err != nil {
		return nil, false, err
	}
	if st.HealthListen != "" {
		// otelcol installs its SIGHUP handler only once its pipelines
		// have started, when its health check turns ready.
		spec.Ready = "http://" + stackconfig.WithHost(st.HealthListen, "127.0.0.1") + "/status"
	}
	if st.TelemetryListen != "" {
		targets["otelcol/node-collector"] = s.target(st.TelemetryListen)
	}
	return &spec, changed, nil
}

// mountsOf is own (the component's directory) and, read-only, the
// folders of files (paths or globs) and of tokenFile, each once.
func mountsOf(own workload.Mount, files []string, tokenFile string) []workload.Mount {
	mounts := []workload.Mount{own}
	seen := map[string]bool{own.Target: true}
	dirs := make([]string, 0, len(files)+1)
	for _, f := range files {
		dirs = append(dirs, globRoot(f))
	}
	if tokenFile != "" {
		dirs = append(dirs, filepath.Dir(tokenFile))
	}
	for _, d := range dirs {
		if !seen[d] {
			seen[d] = true
			mounts = append(mounts, workload.SamePath(d, true))
		}
	}
	return mounts
}

// globRoot is the folder of a path or glob that holds every file it
// matches: the longest leading part without glob characters.
func globRoot(pattern string) string {
	dir := filepath.Dir(pattern)
	for strings.ContainsAny(dir, "*?[") {
		dir = filepath.Dir(dir)
	}
	return dir
}

type errString string

func (e errString) Error() string { return string(e) }

// reloaded is what SetConfig takes.
type reloaded struct {
	stack   stackconfig.Stack
	manager stackconfig.Manager
}
