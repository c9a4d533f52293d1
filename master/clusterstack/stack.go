package clusterstack

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/master"
	"github.com/agentproj/agent/master/collectors"
	"github.com/agentproj/agent/slave/reload"
	"github.com/agentproj/agent/stackconfig"
)

// Owner is the supervisor owner label of the cluster stack's workloads.
const Owner = "cluster-stack"

// Config is what the cluster stack is made from.
type Config struct {
	Node, Cluster string
	Driver        string // workload driver name
	Stack         stackconfig.Stack
	Manager       stackconfig.Manager
	Dir           string // <data_dir>/stack: rendered configs and Prometheus data
	SDDir         string // the file_sd directory the target-sync duty writes
	RelayURL      string // Prometheus' remote_write target; "" for none
	// RelayTokenFile holds the bearer token the relay requires, when the
	// API has one; Prometheus sends it.
	RelayTokenFile string
	// AgentCAFile is the CA of the agents' API certificates (api.ca_file)
	// when the API speaks https; Prometheus trusts it for the relay and the
	// monitor targets. "" when the API has no TLS.
	AgentCAFile string
	Host        string // this host as other nodes reach it
	// Targets publishes the stack's own scrape targets (the Jaeger
	// collector's metrics) for the term; nil publishes none.
	Targets TargetSetter
}

// TargetSetter publishes target groups of this node under a source;
// slave.TargetPublisher implements it.
type TargetSetter interface {
	Set(source string, groups map[string]etcd.TargetGroup)
}

// targetSource is the cluster stack's source in the TargetSetter.
const targetSource = "cluster-stack"

// Stack is the duty.
type Stack struct {
	running atomic.Bool
	cfg     Config // Run's own
	sup     *workload.Supervisor
	log     *slog.Logger
	next    *reload.Pending[reloaded] // a reloaded config Run has not taken yet
}

// New returns the duty, running workloads through d.
func New(cfg Config, d workload.Driver, log *slog.Logger, reg prometheus.Registerer) (*Stack, error) {
	sup, err := workload.NewSupervisor(d, workload.SupervisorOptions{
		Owner:      Owner,
		Selector:   selector(cfg.Node, cfg.Cluster),
		StopOnExit: true,
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	return &Stack{cfg: cfg, sup: sup, log: log, next: reload.NewPending[reloaded]()}, nil
}

// SetConfig takes a reloaded [stack] and [manager] (stackconfig.Reload): a running
// term renders its configs again at once (Prometheus re-reads a changed
// file on SIGHUP; a changed command or image restarts the workload), a
// later term starts with it.
func (s *Stack) SetConfig(st stackconfig.Stack, m stackconfig.Manager) {
	s.next.Set(reloaded{st, m})
}

func selector(node, cluster string) map[string]string {
	return map[string]string{workload.LabelNode: node, workload.LabelCluster: cluster}
}

// States reports the cluster stack's workloads (none when not master).
func (s *Stack) States() []workload.State {
	if !s.running.Load() {
		return nil
	}
	return s.sup.States()
}

// URLs are the collector URLs this master publishes.
func URLs(cfg Config) map[string]string {
	urls := map[string]string{}
	if cfg.Stack.Prometheus.Enabled {
		urls[collectors.Prometheus] = "http://" + stackconfig.WithHost(cfg.Stack.Prometheus.Listen, cfg.Host)
	}
	if cfg.Stack.Jaeger.Enabled && cfg.Manager.TracesOTLPEndpoint != "" {
		urls[collectors.JaegerOTLPGRPC] = "http://" + stackconfig.WithHost(cfg.Stack.Jaeger.OTLPGRPCListen, cfg.Host)
		urls[collectors.JaegerOTLPHTTP] = "http://" + stackconfig.WithHost(cfg.Stack.Jaeger.OTLPHTTPListen, cfg.Host)
	}
	if cfg.RelayURL != "" {
		urls[collectors.Relay] = cfg.RelayURL
	}
	return urls
}

// Run keeps the stack running until the term ends, then stops it.
func (s *Stack) Run(ctx context.Context, _ etcd.Leader) error {
	if err := s.apply(); err != nil {
		return err
	}
	if t := s.cfg.Targets; t != nil {
		defer t.Set(targetSource, nil)
	}
	s.running.Store(true)
	defer s.running.Store(false)
	done := make(chan error, 1)
	go func() { done <- s.sup.Run(ctx) }()
	for {
		select {
		case err := <-done:
			return err
		case <-s.next.Ready():
			if err := s.apply(); err != nil {
				s.log.Error("reloaded cluster stack rejected, keeping the running one", "err", err)
			}
		}
	}
}

// apply takes a reloaded config, renders the configs, hands the specs to
// the supervisor and publishes the stack's targets.
func (s *Stack) apply() error {
	if r, ok := s.next.Take(); ok {
		s.cfg.Stack, s.cfg.Manager = r.stack, r.manager
	}
	specs, reload, err := s.specs()
	if err != nil {
		return err
	}
	changedAt := time.Now()
	if err := s.sup.Set(specs); err != nil {
		return fmt.Errorf("cluster stack: %w", err)
	}
	// A running or adopted workload whose file changed must read it.
	for _, name := range reload {
		s.reload(name, changedAt)
	}
	if t := s.cfg.Targets; t != nil {
		t.Set(targetSource, s.targets(specs))
	}
	return nil
}

// targets are the scrape targets of the term's workloads: the Jaeger
// collector's own metrics (queue, dropped and sent spans), as job jaeger.
func (s *Stack) targets(specs []workload.Spec) map[string]etcd.TargetGroup {
	j := s.cfg.Stack.Jaeger
	for _, spec := range specs {
		if spec.Labels[workload.LabelRole] == workload.RoleJaeger && j.TelemetryListen != "" {
			return map[string]etcd.TargetGroup{"jaeger/collector": {
				Targets: []string{stackconfig.WithHost(j.TelemetryListen, s.cfg.Host)},
				Labels:  model.LabelSet{"node": model.LabelValue(s.cfg.Node), "cluster": model.LabelValue(s.cfg.Cluster)},
			}}
		}
	}
	return nil
}

// specs renders the configs and returns the workloads of a term, and those
// whose config file was rewritten.
func (s *Stack) specs() ([]workload.Spec, []string, error) {
	var specs []workload.Spec
	var reload []string
	st := s.cfg.Stack
	if st.Prometheus.Enabled {
		dir := filepath.Join(s.cfg.Dir, "prometheus")
		labels := model.LabelSet{"cluster": model.LabelValue(s.cfg.Cluster)}
		for k, v := range st.Prometheus.ExternalLabels {
			labels[model.LabelName(k)] = model.LabelValue(v)
		}
		// Prometheus 3 gets a config that sends remote-write 2.0.
		major, how := stackconfig.PrometheusMajor(context.Background(), st.Prometheus, s.cfg.Driver)
		s.log.Debug("prometheus version", "major", major, "from", how)
		// The node monitors' roll-ups (per guid, per node), beside the config.
		rules, err := stackconfig.RenderRules(stackconfig.RulesInput{ScrapeInterval: st.Prometheus.ScrapeInterval})
		if err != nil {
			return nil, nil, err
		}
		rulesPath := filepath.Join(dir, stackconfig.RulesFile)
		rulesChanged, err := workload.WriteFile(rulesPath, rules)
		if err != nil {
			return nil, nil, fmt.Errorf("write prometheus rules: %w", err)
		}
		yml, err := stackconfig.RenderPrometheus(stackconfig.PrometheusInput{
			ScrapeInterval: st.Prometheus.ScrapeInterval, ScrapeTimeout: st.Prometheus.ScrapeTimeout,
			EvaluationInterval: st.Prometheus.EvaluationInterval, ExternalLabels: labels,
			SDDir: s.cfg.SDDir, SDRefreshInterval: st.Prometheus.FileSDRefreshInterval,
			Listen: st.Prometheus.Listen, RemoteWriteURL: s.cfg.RelayURL, RemoteWriteTokenFile: s.cfg.RelayTokenFile,
			AgentCAFile: s.cfg.AgentCAFile,
			Major:       major,
			RuleFiles:   []string{rulesPath},
		})
		if err != nil {
			return nil, nil, err
		}
		cfgPath := filepath.Join(dir, "prometheus.yml")
		ymlChanged, err := workload.WriteFile(cfgPath, yml)
		if err != nil {
			return nil, nil, fmt.Errorf("write prometheus config: %w", err)
		}
		mounts := []workload.Mount{workload.SamePath(dir, false), workload.SamePath(s.cfg.SDDir, true)}
		if s.cfg.RelayTokenFile != "" {
			mounts = append(mounts, workload.SamePath(s.cfg.RelayTokenFile, true))
		}
		if s.cfg.AgentCAFile != "" {
			mounts = append(mounts, workload.SamePath(s.cfg.AgentCAFile, true))
		}
		spec, err := workload.Component{Key: "stack.prometheus", Role: workload.RolePrometheus, Image: st.Prometheus.Image, Binary: st.Prometheus.Binary}.
			Spec(s.cfg.Driver, prometheusName(s.cfg.Node), []string{
				"--config.file=" + cfgPath,
				"--storage.tsdb.path=" + filepath.Join(dir, "data"),
				"--storage.tsdb.retention.time=" + model.Duration(st.Prometheus.Retention).String(),
				"--web.listen-address=" + st.Prometheus.Listen,
				"--web.enable-lifecycle",
			}, mounts...)
		if err != nil {
			return nil, nil, err
		}
		spec.Ready = "http://" + stackconfig.WithHost(st.Prometheus.Listen, "127.0.0.1") + "/-/ready"
		specs = append(specs, spec)
		if ymlChanged || rulesChanged {
			reload = append(reload, spec.Name)
		}
	}
	if st.Jaeger.Enabled {
		spec, changed, err := s.jaeger()
		if err != nil {
			s.log.Warn("jaeger collector not started", "err", err)
		} else if spec != nil {
			specs = append(specs, *spec)
			if changed {
				reload = append(reload, spec.Name)
			}
		}
	}
	return specs, reload, nil
}

// Render writes the cluster stack's configs into cfg.Dir as the master's
// duty does and returns its workloads (agent check); a Jaeger collector
// that would not start is logged on log.
func Render(cfg Config, log *slog.Logger) ([]workload.Spec, error) {
	specs, _, err := (&Stack{cfg: cfg, log: log}).specs()
	return specs, err
}

// jaeger returns the collector's spec, or nil when there is nowhere to send
// traces, and whether its config file was rewritten.
func (s *Stack) jaeger() (*workload.Spec, bool, error) {
	st, m := s.cfg.Stack.Jaeger, s.cfg.Manager
	if m.TracesOTLPEndpoint == "" {
		return nil, false, fmt.Errorf("manager.traces_otlp_endpoint: not set, so traces have nowhere to go")
	}
	yml, err := stackconfig.RenderJaeger(stackconfig.JaegerInput{
		GRPCListen: st.OTLPGRPCListen, HTTPListen: st.OTLPHTTPListen,
		HealthListen: st.HealthListen, TelemetryListen: st.TelemetryListen,
		Endpoint: m.TracesOTLPEndpoint, Protocol: m.TracesOTLPProtocol,
		BearerTokenFile: m.TracesBearerTokenFile, QueueSize: st.QueueSize,
	})
	if err != nil {
		return nil, false, err
	}
	dir := filepath.Join(s.cfg.Dir, "jaeger")
	path := filepath.Join(dir, "config.yml")
	changed, err := workload.WriteFile(path, yml)
	if err != nil {
		return nil, false, fmt.Errorf("write jaeger config: %w", err)
	}
	mounts := []workload.Mount{workload.SamePath(dir, true)}
	if m.TracesBearerTokenFile != "" {
		mounts = append(mounts, workload.SamePath(m.TracesBearerTokenFile, true))
	}
	spec, err := workload.Component{Key: "stack.jaeger", Role: workload.RoleJaeger, Image: st.Image, Binary: st.Binary}.
		Spec(s.cfg.Driver, "agent-jaeger-"+s.cfg.Node, []string{"--config=" + path}, mounts...)
	if err != nil {
		return nil, false, err
	}
	if st.HealthListen != "" {
		// Jaeger (an OpenTelemetry Collector) takes SIGHUP only once its
		// pipelines have started, when its health check turns ready.
		spec.Ready = "http://" + stackconfig.WithHost(st.HealthListen, "127.0.0.1") + "/status"
	}
	return &spec, changed, nil
}

// reload has the Supervisor send SIGHUP to this stack's own workload name
// (Prometheus, Jaeger), if it runs already, once it is ready (Spec.Ready),
// so that it re-reads its config. Never over HTTP: the Prometheus
// answering on the configured port may be one the agent does not run (the
// none driver, or the operator's own), and the agent touches only
// workloads it started or adopted, by their labels.
func (s *Stack) reload(name string, changedAt time.Time) {
	if err := s.sup.Reload(name, syscall.SIGHUP, changedAt); err != nil {
		s.log.Warn("reload", "workload", name, "err", err)
	}
}

func prometheusName(node string) string { return "agent-prometheus-" + node }

// RemoveLeftovers removes the cluster-stack workloads of this node that an
// earlier agent process left running (it crashed while master). Call it
// before joining: a new term starts them again.
func RemoveLeftovers(ctx context.Context, d workload.Driver, node, cluster string) error {
	sel := selector(node, cluster)
	sel[workload.LabelOwner] = Owner
	states, err := d.List(ctx, sel)
	if err != nil {
		return fmt.Errorf("list cluster-stack leftovers: %w", err)
	}
	for _, st := range states {
		if err := d.Remove(ctx, st.Name); err != nil {
			return fmt.Errorf("remove leftover %s: %w", st.Name, err)
		}
	}
	return nil
}

var _ master.Duty = (*Stack)(nil)

// reloaded is what SetConfig takes.
type reloaded struct {
	stack   stackconfig.Stack
	manager stackconfig.Manager
}
