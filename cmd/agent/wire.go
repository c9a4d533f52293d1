package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/docker/docker/client"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/docker"
	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/master"
	"github.com/agentproj/agent/master/clusterstack"
	"github.com/agentproj/agent/master/collectors"
	"github.com/agentproj/agent/master/filesd"
	"github.com/agentproj/agent/master/placement"
	"github.com/agentproj/agent/master/relay"
	"github.com/agentproj/agent/master/targetsync"
	"github.com/agentproj/agent/slave"
	"github.com/agentproj/agent/slave/apps"
	"github.com/agentproj/agent/slave/monitor"
	"github.com/agentproj/agent/slave/nodestack"
	"github.com/agentproj/agent/slave/plugins"
	"github.com/agentproj/agent/slave/push"
	"github.com/agentproj/agent/stackconfig"
)

// parts are the agent's actors, wired.
type parts struct {
	node   *slave.Node
	api    *slave.API
	actors []func(context.Context) error // run beside the node and the API
	// relay stops last: the master's Prometheus writes into it until the
	// node's master duties have stopped it.
	relay  func(context.Context) error
	reload func(*stackconfig.Config) // applies what SIGHUP may change (stackconfig.Reload)
}

// onReload adds fn to what a SIGHUP applies, after what is there.
func (p *parts) onReload(fn func(next *stackconfig.Config)) {
	prev := p.reload
	p.reload = func(next *stackconfig.Config) { prev(next); fn(next) }
}

// wire builds every component from cfg. Nothing runs yet.
func wire(ctx context.Context, cfg *stackconfig.Config, cli *clientv3.Client, log *slog.Logger, reg *prometheus.Registry) (*parts, error) {
	p := &parts{reload: func(*stackconfig.Config) {}}
	keys := etcd.NewKeys(cfg.Etcd.Prefix, cfg.Cluster)
	host := hostOf(cfg.AdvertiseAddr())

	// One token guards the manager API and the relay when configured; it is
	// required when the API listens beyond loopback (stackconfig.API).
	// A token rotated in api.token_file applies at once (apps.NewTokenFile).
	var token *apps.Token
	if cfg.API.TokenFile != "" {
		var err error
		if token, err = apps.NewTokenFile(cfg.API.TokenFile); err != nil {
			return nil, exitCode{2, fmt.Errorf("api.token_file: %w", err)}
		}
	}

	apiTLS, apiPair, err := cfg.API.ServerTLS()
	if err != nil {
		return nil, exitCode{2, err}
	}
	if apiPair != nil {
		p.onReload(func(next *stackconfig.Config) { reloadCertificate(apiPair, next.API, log) })
	}
	var kube *kubernetes
	if kubernetesMode(cfg) {
		if kube, err = openKubernetes(ctx, cfg, log.With("component", "driver")); err != nil {
			return nil, err
		}
	}

	targets := slave.NewTargetPublisher(cfg.Node, keys, cli, log.With("component", "targets"), reg)
	targets.Set("exporters", slave.ExporterGroups(cfg.Node, cfg.Cluster, cfg.Exporters))
	p.onReload(func(next *stackconfig.Config) {
		targets.Set("exporters", slave.ExporterGroups(cfg.Node, cfg.Cluster, next.Exporters))
		if token != nil {
			reloadToken(token, next.API.TokenFile, log)
		}
	})

	var relayURL string
	var rel *relay.Service
	if cfg.Relay.Enabled() {
		rel, err = relay.NewService(cfg.Relay.WithAgentDefaults(cfg.Cluster, cfg.DataDir), log.With("component", "relay"), reg)
		if err != nil {
			return nil, err
		}
		relayURL = relayURLOf(cfg)
		p.relay = rel.Run
		p.onReload(func(next *stackconfig.Config) {
			rel.Reload(next.Relay.WithAgentDefaults(cfg.Cluster, cfg.DataDir))
		})
	}

	var duties master.Duties
	var sources slave.StatusSources
	var workers []slave.SessionWorker
	var driver workload.Driver // nil in Kubernetes mode
	if kube != nil {
		// Kubernetes mode: the stack and the apps are the master's Helm
		// releases; its Prometheus reads the targets from /sd/http.
		duties = kube.duties(cli, cfg, keys, log, reg)
		sources.Kubernetes = kube.status
	} else if duties, sources, workers, driver, err = wireHostStack(ctx, cfg, cli, keys, host, relayURL, targets, p, log, reg); err != nil {
		return nil, err
	}
	if rel != nil {
		sources.Relay = func() any { return rel.Stats() }
	}
	status := slave.NewStatusPublisher(cfg.Node, keys, cli, sources, 5*time.Second, log.With("component", "status"))

	etcdTLS, _ := clientConfig(cfg, nil).TLSConfig() // the client took it
	p.node = slave.NewNode(slave.NodeConfig{
		Node: cfg.Node, API: cfg.AdvertiseAddr(), APIScheme: cfg.API.Scheme(), Version: version,
		Labels: cfg.Labels, TTL: cfg.TTL, Keys: keys, LeaseFile: filepath.Join(cfg.DataDir, "lease.json"),
		EtcdTLS: etcdTLS,
	}, cli, duties, append([]slave.SessionWorker{targets, status}, workers...), log.With("component", "node"), reg)
	p.api, err = slave.NewAPI(cfg.Listen, apiTLS, p.node, reg, log.With("component", "api"))
	if err != nil {
		return nil, err
	}
	// The read endpoints answer from one watched snapshot, never a read per
	// request. Through an etcd outage it holds removed targets by the rule
	// of the master's file_sd (etcd.RemovalHold, from the TTL).
	snap := slave.NewSnapshot(cli, slave.SnapshotConfig{Keys: keys, Cluster: cfg.Cluster, TTL: cfg.TTL},
		log.With("component", "api-snapshot"), reg)
	p.actors = append(p.actors, snap.Run, func(ctx context.Context) error {
		return snap.FollowEtcd(ctx, func(ctx context.Context) (etcd.EtcdView, error) {
			return etcd.ReadEtcdView(ctx, cli, cfg.Etcd.Prefix)
		}, 15*time.Second)
	})
	p.api.HandleSnapshot(snap)
	appsAPI := apps.NewHandler(cli, apps.HandlerConfig{
		Keys: keys, AllowedImages: cfg.API.AllowedImages, Charts: appCharts(cfg), MaxBodyBytes: cfg.API.MaxBodyBytes,
	}, log.With("component", "apps-api"), reg)
	appsAPI.Register(p.api, token)
	if cfg.Monitor.Enabled {
		var extra []prometheus.Collector
		if kube != nil && cfg.Monitor.Pods {
			if pods := kube.pods(cfg, log.With("component", "pods"), reg); pods != nil {
				p.actors = append(p.actors, pods.Run)
				extra = append(extra, pods.Collector())
			}
		}
		mon, err := newMonitor(cfg, driver, extra, log.With("component", "monitor"), reg)
		if err != nil {
			return nil, err
		}
		p.actors = append(p.actors, mon.Run)
		p.onReload(func(next *stackconfig.Config) {
			mon.SetConfig(next.Monitor)
		})
		p.api.Handle("GET "+monitor.Path, mon.Handler())
		targets.Set("monitor", monitor.TargetGroups(cfg.Node, cfg.Cluster, cfg.API.Scheme(), cfg.AdvertiseAddr()))
	}
	guard := func(h http.Handler) http.Handler {
		if token != nil {
			return apps.RequireToken(token, h)
		}
		return h
	}
	if rel != nil {
		p.api.Handle("POST /api/v1/write", guard(rel))
	}

	// Push and plugins put their samples into this agent's own relay
	// (docs/push.md); without one, push answers 503 and plugins run on
	// demand only.
	var pushApp push.Appender
	var pluginApp plugins.Appender
	if rel != nil {
		pushApp, pluginApp = rel, rel
	}
	pushAPI := push.NewHandler(push.Config{
		Node: cfg.Node, Cluster: cfg.Cluster, MaxBodyBytes: cfg.Push.MaxBodyBytes,
	}, pushApp, log.With("component", "push"), reg)
	p.api.Handle("/api/v1/push", guard(pushAPI))
	pluginsOf := func(c *stackconfig.Config) plugins.Config {
		return plugins.Config{Node: cfg.Node, Cluster: cfg.Cluster, Dir: c.PluginsPath(), Plugins: c.Plugins}
	}
	plugs, err := plugins.NewService(pluginsOf(cfg), pluginApp, log.With("component", "plugins"), reg)
	if err != nil {
		return nil, exitCode{2, err}
	}
	p.actors = append(p.actors, plugs.Run)
	p.onReload(func(next *stackconfig.Config) {
		plugs.Reload(pluginsOf(next))
		appsAPI.SetLimits(next.API.AllowedImages, next.API.MaxBodyBytes)
		pushAPI.SetMaxBodyBytes(next.Push.MaxBodyBytes)
		if kube != nil {
			kube.reload(next)
		}
	})
	for pattern, h := range plugs.Routes() {
		p.api.Handle(pattern, guard(h))
	}
	return p, nil
}

// wireHostStack builds what runs the stack on a host (docker, process or
// none): the master's cluster stack and file_sd, every node's stack and
// the apps assigned to it.
func wireHostStack(ctx context.Context, cfg *stackconfig.Config, cli *clientv3.Client, keys etcd.Keys, host, relayURL string,
	targets *slave.TargetPublisher, p *parts, log *slog.Logger, reg *prometheus.Registry,
) (master.Duties, slave.StatusSources, []slave.SessionWorker, workload.Driver, error) {
	var none slave.StatusSources
	driver, err := openDriver(ctx, cfg, log.With("component", "driver"))
	if err != nil {
		return nil, none, nil, nil, err
	}
	// A Prometheus left by an earlier process that crashed while master
	// must not run beside the next master's.
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = clusterstack.RemoveLeftovers(lctx, driver, cfg.Node, cfg.Cluster)
	cancel()
	if err != nil {
		return nil, none, nil, nil, err
	}

	csCfg, nsCfg := hostStackConfigs(cfg, driver.Name(), filepath.Join(cfg.DataDir, "stack"), relayURL)
	csCfg.Targets = targets
	nsCfg.ContainerLogs = containerLogs(ctx, driver, log)
	cluster, err := clusterstack.New(csCfg, driver, log.With("component", "cluster-stack"), reg)
	if err != nil {
		return nil, none, nil, nil, err
	}
	sdWriter, err := filesd.NewWriter(cfg.SDPath())
	if err != nil {
		return nil, none, nil, nil, err
	}
	duties := master.Duties{
		{Name: "placement", Duty: placement.New(cli, placement.Config{Keys: keys, Grace: max(placement.DefaultGrace, 2*cfg.TTL)}, log.With("component", "placement"), reg)},
		{Name: "target-sync", Duty: targetsync.New(cli, keys, sdWriter, log.With("component", "target-sync"), reg, targetsync.WithTTL(cfg.TTL))},
		{Name: "cluster-stack", Duty: cluster},
		{Name: "collectors", Duty: collectors.NewPublisher(keys, clusterstack.URLs(csCfg), log.With("component", "collectors"))},
	}

	nodeStack, err := nodestack.New(nsCfg, driver, targets, log.With("component", "node-stack"), reg)
	if err != nil {
		return nil, none, nil, nil, err
	}
	p.onReload(func(next *stackconfig.Config) {
		nodeStack.SetConfig(next.Stack, next.Manager)
		cluster.SetConfig(next.Stack, next.Manager)
	})
	watch := slave.NewCollectorWatch(cli, keys, nodeStack.SetCollectors, log.With("component", "collectors"))
	p.actors = append(p.actors, nodeStack.Run, watch.Run)

	// Apps: the Reconciler hands the Supervisor the apps assigned here
	// (the Supervisor reconciles from the first set on, so it adopts the
	// apps an earlier agent left running).
	appSup, err := workload.NewSupervisor(driver, workload.SupervisorOptions{
		Owner:    "apps",
		Selector: map[string]string{workload.LabelNode: cfg.Node, workload.LabelCluster: cfg.Cluster},
		Logger:   log.With("component", "apps-supervisor"), Registerer: reg,
	})
	if err != nil {
		return nil, none, nil, nil, err
	}
	appRec := apps.NewReconciler(cli, apps.ReconcilerConfig{
		Node: cfg.Node, Cluster: cfg.Cluster, Keys: keys, Host: host,
		OTLPEndpoint: nodeStack.TraceEndpoint(), AllowedImages: cfg.API.AllowedImages,
	}, appSup, targets, log.With("component", "apps"), reg)
	p.onReload(func(next *stackconfig.Config) {
		appRec.SetAllowedImages(next.API.AllowedImages)
	})
	p.actors = append(p.actors, appSup.Run)

	sources := slave.StatusSources{Stack: []func() []workload.State{nodeStack.States, cluster.States}}
	return duties, sources, []slave.SessionWorker{appRec}, driver, nil
}

// relayURLOf is the relay's URL on this agent's advertised API.
func relayURLOf(cfg *stackconfig.Config) string {
	return cfg.API.Scheme() + "://" + cfg.AdvertiseAddr() + "/api/v1/write"
}

// hostStackConfigs are what the cluster stack (when master) and the node
// stack of a host are made from, their configs rendered under dir, with
// Prometheus writing to relayURL ("" for none).
func hostStackConfigs(cfg *stackconfig.Config, driver, dir, relayURL string) (clusterstack.Config, nodestack.Config) {
	host := hostOf(cfg.AdvertiseAddr())
	return clusterstack.Config{
			Node: cfg.Node, Cluster: cfg.Cluster, Driver: driver, Stack: cfg.Stack, Manager: cfg.Manager,
			Dir: dir, SDDir: cfg.SDPath(), RelayURL: relayURL, RelayTokenFile: cfg.API.TokenFile, AgentCAFile: cfg.API.CAFile, Host: host,
		}, nodestack.Config{
			Node: cfg.Node, Cluster: cfg.Cluster, Driver: driver, Stack: cfg.Stack, Manager: cfg.Manager,
			Dir: dir, Host: host, DockerSocket: dockerSocket(),
		}
}

// newMonitor builds the node monitor; containers are listed through the
// docker driver's client, or a client of the host's engine (DOCKER_HOST)
// when another driver runs the stack.
func newMonitor(cfg *stackconfig.Config, driver workload.Driver, extra []prometheus.Collector, log *slog.Logger, reg prometheus.Registerer) (*monitor.Monitor, error) {
	mc := monitor.Config{Monitor: cfg.Monitor, Collectors: extra}
	if cfg.Monitor.Containers {
		if d, ok := driver.(*docker.Driver); ok {
			mc.Docker = d.Client()
		} else if cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation()); err == nil {
			mc.Docker = cli
		} else {
			log.Warn("containers are not measured: no Docker client", "err", err)
		}
	}
	return monitor.New(mc, log, reg)
}

// containerLogs is where the Docker engine keeps the containers' json-file
// logs, for the otelcol log shipper; "" with other drivers.
func containerLogs(ctx context.Context, d workload.Driver, log *slog.Logger) string {
	e, ok := d.(interface {
		ContainerLogGlob(context.Context) (string, error)
	})
	if !ok {
		return ""
	}
	glob, err := e.ContainerLogGlob(ctx)
	if err != nil {
		log.Warn("container logs will not be shipped", "err", err)
	}
	return glob
}

func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// reloadCertificate points the API's key pair at the files a reload named
// (stackconfig.Reload), if they changed; a pair that does not load keeps
// the one served.
func reloadCertificate(pair *stackconfig.KeyPairFiles, next stackconfig.API, log *slog.Logger) {
	if cert, key := pair.Files(); next.CertFile == "" || next.CertFile == cert && next.KeyFile == key {
		return
	}
	if err := pair.SetFiles(next.CertFile, next.KeyFile); err != nil {
		log.Error("api.cert_file: the reloaded certificate does not load, keeping the one served", "cert_file", next.CertFile, "key_file", next.KeyFile, "err", err)
		return
	}
	log.Info("api certificate served from the reloaded files", "cert_file", next.CertFile, "key_file", next.KeyFile)
}

// reloadToken reads api.token_file again (SIGHUP; a request with another
// token does too); a file that cannot be read keeps the token. Another
// path needs a restart: the master's Prometheus was given this one.
func reloadToken(token *apps.Token, file string, log *slog.Logger) {
	changed, err := token.SetFile(file)
	switch {
	case err != nil:
		log.Error("api.token_file: cannot read it again, keeping the token", "err", err)
	case changed:
		log.Info("api token replaced from api.token_file", "file", file)
	}
}
