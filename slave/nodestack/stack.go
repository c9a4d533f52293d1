package nodestack

import (
	"context"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/master/collectors"
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
}

// Stack is the node stack actor.
type Stack struct {
	cfg     Config
	sup     *workload.Supervisor
	targets TargetSetter
	log     *slog.Logger

	mu         sync.Mutex
	collectors map[string]string
	nudge      chan struct{}
	warned     map[string]string // component -> last problem logged
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
		collectors: map[string]string{}, nudge: make(chan struct{}, 1), warned: map[string]string{}}, nil
}

// SetCollectors stores the collector URLs from etcd and nudges Run; the
// trace agent follows the Jaeger collector.
func (s *Stack) SetCollectors(urls map[string]string) {
	s.mu.Lock()
	s.collectors = maps.Clone(urls)
	s.mu.Unlock()
	select {
	case s.nudge <- struct{}{}:
	default:
	}
}

// States reports the node stack's workloads.
func (s *Stack) States() []workload.State { return s.sup.States() }

// TraceEndpoint is the trace agent's OTLP/HTTP endpoint on this node, for
// applications.
func (s *Stack) TraceEndpoint() string {
	return "http://" + stackconfig.WithHost(s.cfg.Stack.TraceAgent.OTLPHTTPListen, "127.0.0.1")
}

// Run keeps the node stack in step until ctx ends; the workloads stay.
func (s *Stack) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.sup.Run(ctx) }()
	s.apply(ctx)
	for {
		select {
		case <-ctx.Done():
			return <-done
		case <-s.nudge:
			s.apply(ctx)
		}
	}
}

// apply renders every config, hands the specs to the supervisor and
// reloads running workloads whose config changed.
func (s *Stack) apply(ctx context.Context) {
	var specs []workload.Spec
	var reload []string
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
		spec, err := s.nodeExporter()
		add("node_exporter", spec, false, err)
	} else {
		s.targets.Set("stack", nil)
	}
	if st.Vector.Enabled {
		spec, changed, err := s.vector()
		add("vector", spec, changed, err)
	}
	if st.TraceAgent.Enabled {
		spec, changed, err := s.traceAgent()
		add("trace_agent", spec, changed, err)
	}
	// The configs are written: a workload started from now on reads them.
	changedAt := time.Now()
	if err := s.sup.Set(specs); err != nil {
		s.log.Error("node stack rejected", "err", err)
		return
	}
	// Only this stack's own running workloads are signalled (the
	// Supervisor checks their labels and spec); with the none driver,
	// nothing is.
	for _, name := range reload {
		switch ok, err := s.sup.Reload(ctx, name, syscall.SIGHUP, changedAt); {
		case err != nil:
			s.log.Warn("reload", "workload", name, "err", err)
		case ok:
			s.log.Info("config reloaded", "workload", name)
		}
	}
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

func (s *Stack) nodeExporter() (*workload.Spec, error) {
	st := s.cfg.Stack.NodeExporter
	spec, err := workload.Component{Key: "stack.node_exporter", Role: workload.RoleNodeExporter, Image: st.Image, Binary: st.Binary}.
		Spec(s.cfg.Driver, "agent-node-exporter-"+s.cfg.Node, []string{"--web.listen-address=" + st.Listen, "--no-collector.systemd"})
	if err != nil {
		return nil, err
	}
	s.targets.Set("stack", map[string]etcd.TargetGroup{"node/node-exporter": {
		Targets: []string{stackconfig.WithHost(st.Listen, s.cfg.Host)},
		Labels:  model.LabelSet{"node": model.LabelValue(s.cfg.Node), "cluster": model.LabelValue(s.cfg.Cluster)},
	}})
	return &spec, nil
}

func (s *Stack) vector() (*workload.Spec, bool, error) {
	st, m := s.cfg.Stack.Vector, s.cfg.Manager
	if m.LogsURL == "" {
		return nil, false, errString("manager.logs_url: not set, so logs have nowhere to go")
	}
	dir := filepath.Join(s.cfg.Dir, "vector")
	docker := s.cfg.Driver == "docker"
	toml, err := stackconfig.RenderVector(stackconfig.VectorInput{
		Node: s.cfg.Node, Cluster: s.cfg.Cluster, DataDir: filepath.Join(dir, "data"),
		Docker: docker, ManagedLabel: workload.LabelManaged, GUIDLabel: workload.LabelGUID,
		Files: st.Files, LogsURL: m.LogsURL, BearerTokenFile: m.LogsBearerTokenFile,
	})
	if err != nil {
		return nil, false, err
	}
	path := filepath.Join(dir, "vector.toml")
	changed, err := workload.WriteFile(path, toml)
	if err != nil {
		return nil, false, err
	}
	mounts := []workload.Mount{workload.SamePath(dir, false)}
	for _, f := range st.Files {
		mounts = append(mounts, workload.SamePath(filepath.Dir(f), true))
	}
	if m.LogsBearerTokenFile != "" {
		mounts = append(mounts, workload.SamePath(filepath.Dir(m.LogsBearerTokenFile), true))
	}
	if docker && s.cfg.DockerSocket != "" {
		mounts = append(mounts, workload.Mount{Source: s.cfg.DockerSocket, Target: "/var/run/docker.sock", ReadOnly: true})
	}
	spec, err := workload.Component{Key: "stack.vector", Role: workload.RoleVector, Image: st.Image, Binary: st.Binary}.
		Spec(s.cfg.Driver, "agent-vector-"+s.cfg.Node, []string{"--config", path}, mounts...)
	if err != nil {
		return nil, false, err
	}
	return &spec, changed, nil
}

func (s *Stack) traceAgent() (*workload.Spec, bool, error) {
	st := s.cfg.Stack.TraceAgent
	s.mu.Lock()
	collector := s.collectors[collectors.JaegerOTLPGRPC]
	s.mu.Unlock()
	if collector == "" {
		return nil, false, errString("no Jaeger collector published in etcd yet (collectors/" + collectors.JaegerOTLPGRPC + ")")
	}
	yml, err := stackconfig.RenderTraceAgent(stackconfig.TraceAgentInput{
		Node: s.cfg.Node, Cluster: s.cfg.Cluster,
		GRPCListen: st.OTLPGRPCListen, HTTPListen: st.OTLPHTTPListen,
		HealthListen: st.HealthListen, TelemetryListen: st.TelemetryListen,
		CollectorURL: collector, QueueSize: st.QueueSize,
	})
	if err != nil {
		return nil, false, err
	}
	dir := filepath.Join(s.cfg.Dir, "trace-agent")
	path := filepath.Join(dir, "config.yml")
	changed, err := workload.WriteFile(path, yml)
	if err != nil {
		return nil, false, err
	}
	spec, err := workload.Component{Key: "stack.trace_agent", Role: workload.RoleTraceAgent, Image: st.Image, Binary: st.Binary}.
		Spec(s.cfg.Driver, "agent-trace-agent-"+s.cfg.Node, []string{"--config=" + path}, workload.SamePath(dir, true))
	if err != nil {
		return nil, false, err
	}
	return &spec, changed, nil
}

type errString string

func (e errString) Error() string { return string(e) }
