//go:build kubernetes

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/helm"
	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/master"
	"github.com/agentproj/agent/master/releases"
	"github.com/agentproj/agent/slave/monitor/kubepods"
	"github.com/agentproj/agent/stackconfig"
	"sigs.k8s.io/yaml"
)

// kubernetes is the helm driver and the settings Kubernetes mode resolves
// from the pod: the agent's namespace and pod name.
type kubernetes struct {
	client    *helm.Client
	helm      stackconfig.Helm // Namespace and PodName resolved
	releases  *releases.Duty
	masterPod *releases.MasterLabel // nil without a pod name
}

// openKubernetes connects to the Kubernetes API. Outside a pod without a
// kubeconfig it fails with a message that says so (exit 2: a
// configuration error, nothing to retry).
func openKubernetes(ctx context.Context, cfg *stackconfig.Config, log *slog.Logger) (*kubernetes, error) {
	h, err := resolveHelm(cfg)
	if err != nil {
		return nil, err
	}
	c, err := helm.New(ctx, helm.Config{
		Kubeconfig: h.Kubeconfig, Namespace: h.Namespace, Timeout: h.Timeout,
		MaxHistory: h.MaxHistory, ChartCache: h.ChartCache,
	}, helm.WithLogger(log))
	if errors.Is(err, helm.ErrNoAPI) {
		return nil, exitCode{2, err}
	}
	if err != nil {
		return nil, err
	}
	log.Info("stack driver: helm (Kubernetes)", "api", c.Host(), "namespace", h.Namespace, "pod", h.PodName)
	k := &kubernetes{client: c, helm: h}
	if h.PodName != "" {
		k.masterPod = releases.NewMasterLabel(c, h.Namespace, h.PodName, log.With("component", "master-label"))
		// A pod of an earlier process that crashed while master may still
		// carry the label: the Service must not route here before this
		// agent is master again.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := k.masterPod.Clear(cctx)
		cancel()
		if err != nil {
			log.Warn("remove a leftover master label from this pod", "pod", h.PodName, "err", err)
		}
	} else {
		log.Warn("no pod name (POD_NAME, stack.helm.pod_name): this agent's pod is not labelled while master, so the agent Service will not route to it")
	}
	return k, nil
}

// resolveHelm is stack.helm with what the pod says (namespace, pod name)
// and the defaults filled in, checked against the API's TLS: the metrics
// stack needs the CA from a Secret, and checks every agent's certificate
// against the Service's name.
func resolveHelm(cfg *stackconfig.Config) (stackconfig.Helm, error) {
	h := cfg.Stack.Helm
	if h.Namespace == "" {
		h.Namespace = state.PodNamespace()
	}
	if h.Namespace == "" {
		h.Namespace = "default"
	}
	if h.PodName == "" {
		h.PodName = os.Getenv("POD_NAME")
	}
	if h.ChartCache == "" {
		h.ChartCache = filepath.Join(cfg.DataDir, "charts")
	}
	if cfg.API.TLS() {
		if h.CASecret == "" {
			return h, exitCode{2, fmt.Errorf("stack.helm.ca_secret: required when the API serves TLS (api.cert_file %q) in Kubernetes mode: the Secret (key ca.crt) that holds api.ca_file's CA, for the metrics stack", cfg.API.CertFile)}
		}
		if err := cfg.API.VerifyServerName(k8sValues(cfg, h).ServerName()); err != nil {
			return h, exitCode{2, err}
		}
	}
	return h, nil
}

// renderKubernetes writes the values the master gives the metrics, logs
// and (for an example guid) traces releases into dir, as YAML (agent
// check), and returns the files written.
func renderKubernetes(cfg *stackconfig.Config, dir string) ([]string, error) {
	h, err := resolveHelm(cfg)
	if err != nil {
		return nil, err
	}
	in := k8sValues(cfg, h)
	var files []string
	write := func(name string, v map[string]any, ok bool, err error) error {
		if err != nil || !ok {
			return err
		}
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, name)
		files = append(files, path)
		return os.WriteFile(path, b, 0o644)
	}
	metrics, err := releases.MetricsValues(in)
	if err := write("metrics-values.yaml", metrics, h.Metrics.Enabled, err); err != nil {
		return nil, exitCode{2, err}
	}
	logs, ok, err := releases.LogsValues(in)
	if err := write("logs-values.yaml", logs, ok && h.Logs.Enabled, err); err != nil {
		return nil, exitCode{2, err}
	}
	traces, ok, err := releases.TracesValues(in, "example-guid")
	if err := write("traces-values-example-guid.yaml", traces, ok && h.Traces.Enabled, err); err != nil {
		return nil, exitCode{2, err}
	}
	return files, nil
}

// duties are the master duties of Kubernetes mode: the releases, and the
// label that makes the agent Service route to the master.
func (k *kubernetes) duties(cli *clientv3.Client, cfg *stackconfig.Config, keys etcd.Keys, log *slog.Logger, reg prometheus.Registerer) master.Duties {
	k.releases = releases.New(cli, releases.Config{
		Node: cfg.Node, Cluster: cfg.Cluster, Keys: keys, Helm: k.helm,
		Values: k.values(cfg), AllowedImages: cfg.API.AllowedImages,
	}, k.client, log.With("component", "releases"), reg)
	d := master.Duties{{Name: "releases", Duty: k.releases}}
	if k.masterPod != nil {
		d = append(d, master.Named{Name: "master-label", Duty: k.masterPod})
	}
	return d
}

// values is what the releases' values are rendered from.
func (k *kubernetes) values(cfg *stackconfig.Config) releases.Input { return k8sValues(cfg, k.helm) }

// k8sValues is what the releases' values are rendered from, with h's
// namespace resolved.
func k8sValues(cfg *stackconfig.Config, h stackconfig.Helm) releases.Input {
	in := releases.Input{
		Cluster: cfg.Cluster, Namespace: h.Namespace,
		Service: h.Service, ServicePort: h.ServicePort, TokenSecret: h.TokenSecret,
		Relay: cfg.Relay.Enabled(), Prometheus: cfg.Stack.Prometheus, Manager: cfg.Manager,
		TracesRelease: h.Traces.Release, TracesQueueSize: cfg.Stack.Jaeger.QueueSize,
	}
	if cfg.API.TLS() {
		in.CASecret = h.CASecret
	}
	return in
}

// reload applies a reloaded config (stackconfig.Reload) to the releases:
// their values, and api.allowed_images for the guid apps.
func (k *kubernetes) reload(next *stackconfig.Config) {
	if k.releases != nil {
		k.releases.SetValues(k.values(next))
		k.releases.SetAllowedImages(next.API.AllowedImages)
	}
}

// status is what the master reports of Kubernetes mode; nil when not
// master.
func (k *kubernetes) status() any {
	if s := k.releases.Status(); s != nil {
		return s
	}
	return nil
}

// newPods builds the pod monitor of this node (Kubernetes mode): the
// kubepods cgroups under monitor.cgroup_root, named through a watch of the
// pods whose spec.nodeName is this agent's node name. Without a cgroup
// hierarchy the agent runs on without pod metrics, as it does without
// container metrics, and says so; nil then.
func (k *kubernetes) pods(cfg *stackconfig.Config, log *slog.Logger, reg prometheus.Registerer) podMonitor {
	p, err := kubepods.New(kubepods.Config{
		Node: cfg.Node, Interval: cfg.Monitor.Interval, ProcRoot: cfg.Monitor.ProcRoot, CgroupRoot: cfg.Monitor.CgroupRoot,
		MaxSeries: cfg.Monitor.MaxSeries,
	}, k.client.Kubernetes(), log, reg)
	if err != nil {
		log.Warn("pods are not measured", "err", err)
		return nil
	}
	return p
}
