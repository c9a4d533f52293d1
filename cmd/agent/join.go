package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/slave"
	"github.com/agentproj/agent/stackconfig"
)

func newJoinCmd() *cobra.Command {
	var cfgFile string
	cmd := &cobra.Command{
		Use:   "join",
		Short: "Join the cluster (or start a one-node cluster on an embedded etcd) and run until stopped",
		Long: `join keeps this agent in the cluster: it registers the node, campaigns for
mastership, and runs the master duties while elected. Every flag is also a key
in the TOML file given by --config and an AGENT_* environment variable
(precedence: flag > environment > file > default).

Signals: SIGTERM or SIGINT resigns mastership, revokes the lease and exits 0;
SIGHUP reloads the config file and says which changes need a restart.`,
		Example: `  # a one-node cluster on an embedded etcd (client URL http://127.0.0.1:2379)
  agent join --data-dir /var/lib/agent

  # a second agent on the same host, joining the first one's etcd
  agent join --etcd http://127.0.0.1:2379 --node n2 --listen 127.0.0.1:9465 --data-dir /tmp/n2

  # join an external etcd cluster over TLS
  agent join --etcd https://10.0.0.1:2379,https://10.0.0.2:2379 --etcd-ca-file ca.pem \
    --etcd-cert-file agent.pem --etcd-key-file agent-key.pem --config /etc/agent/agent.toml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := stackconfig.Load(cfgFile, cmd.Flags(), stackconfig.JoinOptions)
			if err != nil {
				return exitCode{2, err}
			}
			return runJoin(cfg, func() (*stackconfig.Config, error) {
				return stackconfig.Load(cfgFile, cmd.Flags(), stackconfig.JoinOptions)
			})
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", os.Getenv("AGENT_CONFIG"), "TOML config file (env AGENT_CONFIG)")
	stackconfig.AddFlags(cmd.Flags(), stackconfig.JoinOptions)
	cmd.Flags().SortFlags = false
	return cmd
}

// runJoin wires the actors and runs them until a signal or a fatal error.
func runJoin(cfg *stackconfig.Config, reload func() (*stackconfig.Config, error)) error {
	log, level := newLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel)
	log = log.With("node", cfg.Node)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()

	// The agent runs an etcd member when it founds the cluster (no
	// endpoints) or became a member of the one it joined (its data is
	// here, unless the member was removed meanwhile); else it may become
	// one (etcd.Grower, below).
	endpoints := cfg.Etcd.Endpoints
	member := etcd.EmbedConfig{
		Name: cfg.Node, Dir: filepath.Join(cfg.DataDir, "etcd"),
		ClientURL: cfg.Etcd.EmbeddedListen, PeerURL: cfg.Etcd.EmbeddedPeerListen,
		CertFile: cfg.Etcd.EmbeddedCertFile, KeyFile: cfg.Etcd.EmbeddedKeyFile, TrustedCAFile: cfg.Etcd.CAFile,
	}
	// A founder has no endpoints to ask whether its member is still one;
	// once its etcd grew, it asks the members it last saw.
	endpointsFile := filepath.Join(cfg.DataDir, etcd.EndpointsFile)
	founder := cfg.Embedded()
	if founder && etcd.HasMemberData(member.Dir) {
		if endpoints, err = etcd.RememberedEndpoints(endpointsFile, member.ClientURL); err != nil {
			return err
		}
	}
	var embedded *etcd.Embedded
	switch {
	case founder && len(endpoints) == 0:
		embedded, err = etcd.StartEmbedded(ctx, member)
	case etcd.HasMemberData(member.Dir): // nil when it was removed meanwhile
		embedded, err = etcd.RestartMember(ctx, member, clientConfig(cfg, endpoints), log)
	}
	if err != nil {
		return err
	}
	founder = founder && embedded != nil // a founder replaced while down is a client now
	if embedded != nil {
		defer embedded.Close()
		endpoints = append(embedded.Endpoints(), endpoints...)
		log.Info("embedded etcd started", "endpoints", strings.Join(endpoints, ","), "data_dir", member.Dir)
		etcd.WarnIfExposed(log, member)
	}
	cli, err := etcd.NewClient(clientConfig(cfg, endpoints))
	if err != nil {
		return err
	}
	defer cli.Close()
	recorded := !founder || recordGrowth(ctx, cli, cfg)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	parts, err := wire(ctx, cfg, cli, log, reg)
	if err != nil {
		return err
	}
	api, node := parts.api, parts.node
	log.Info("agent starting", "version", version, "api", api.Addr(), "cluster", cfg.Cluster, "etcd", strings.Join(endpoints, ","))

	// Shutdown (a signal, or a fatal error of any part) runs in three
	// steps, so that nothing loses its receiver while it still writes:
	//  1. the node leaves the cluster: the master duties stop, so the
	//     cluster Prometheus flushes its remote-write into this agent's
	//     relay and exits by itself; the agent resigns and revokes its lease;
	//  2. the API and the other actors stop;
	//  3. the relay stops, with everything it acknowledged on disk.
	g, gctx := errgroup.WithContext(ctx)
	restCtx, stopRest := context.WithCancel(context.WithoutCancel(gctx))
	defer stopRest()
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(gctx))
	defer stopRelay()
	g.Go(func() error {
		defer stopRest()
		err := node.Run(gctx)
		stop() // the node is gone from the cluster: everything else stops too
		return err
	})
	var rest sync.WaitGroup
	goRest := func(actor func(context.Context) error) {
		rest.Add(1)
		g.Go(func() error { defer rest.Done(); return actor(restCtx) })
	}
	goRest(api.Run)
	goRest(func(ctx context.Context) error { notifyReady(ctx, node); return nil })
	goRest(func(ctx context.Context) error {
		// In Kubernetes mode the stack is Helm releases: only their values follow.
		return reloadOnHUP(ctx, cfg, reload, parts.reload, !kubernetesMode(cfg), level, log)
	})
	for _, actor := range parts.actors {
		goRest(actor)
	}
	if embedded != nil {
		goRest(func(ctx context.Context) error {
			select {
			case err := <-embedded.Err():
				return fmt.Errorf("embedded etcd: %w", err)
			case <-ctx.Done():
				return nil
			}
		})
		if !recorded {
			goRest(func(ctx context.Context) error {
				return etcd.RecordGrowth(ctx, cli, cfg.Etcd.Prefix, growth(cfg), log)
			})
		}
		// Every 5 s (other agents: every 30 s): a founder that dies
		// before it has kept the members has no one to ask at its next
		// start, so it keeps them soon after the etcd grows. Two reads
		// of its own member per look.
		goRest(func(ctx context.Context) error {
			return etcd.SyncEndpoints(ctx, cli, cfg.Etcd.Prefix, endpointsFile, 5*time.Second, log)
		})
	} else {
		goRest(etcd.Grower{Client: cli, Prefix: cfg.Etcd.Prefix, Member: member, Logger: log, EndpointsFile: endpointsFile}.Run)
	}
	if parts.relay != nil {
		g.Go(func() error { return parts.relay(relayCtx) })
	}
	g.Go(func() error { rest.Wait(); stopRelay(); return nil })
	err = g.Wait()
	sdNotify("STOPPING=1")
	if err != nil {
		return err
	}
	log.Info("agent stopped")
	return nil
}

// growth is how the founding agent's etcd grows.
func growth(cfg *stackconfig.Config) etcd.Growth {
	return etcd.Growth{Members: cfg.Etcd.Members, ReplaceDeadAfter: etcd.Seconds(cfg.Etcd.ReplaceDeadAfter / time.Second)}
}

// recordGrowth has the founding agent record how far its etcd grows
// before it starts its duties, so that agents starting beside it find it
// at once; false when etcd did not take it within 5 s (a restarted member
// without quorum yet), and RecordGrowth is to go on asking.
func recordGrowth(ctx context.Context, cli *clientv3.Client, cfg *stackconfig.Config) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return etcd.SetGrowth(ctx, cli, cfg.Etcd.Prefix, growth(cfg)) == nil
}

func clientConfig(cfg *stackconfig.Config, endpoints []string) etcd.ClientConfig {
	e := cfg.Etcd
	cert, key := e.ClientCert()
	return etcd.ClientConfig{
		Endpoints: endpoints, DialTimeout: e.DialTimeout,
		Username: e.Username, PasswordFile: e.PasswordFile,
		CAFile: e.CAFile, CertFile: cert, KeyFile: key, InsecureSkipVerify: e.InsecureSkipVerify,
	}
}

// notifyReady tells systemd once the agent has joined.
func notifyReady(ctx context.Context, node *slave.Node) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !node.Ready() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	sdNotify("READY=1")
}

// reloadOnHUP applies the config file on SIGHUP as stackconfig.Reload
// says (with stacks: [stack] and [manager] too); every other changed key
// is reported as needing a restart.
func reloadOnHUP(ctx context.Context, start *stackconfig.Config, reload func() (*stackconfig.Config, error), apply func(*stackconfig.Config), stacks bool, level *slog.LevelVar, log *slog.Logger) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cur := *start // what runs; start is shared with the other parts
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		sdNotify("RELOADING=1")
		next, err := reload()
		if err != nil {
			log.Error("reload: config rejected, keeping the running one", "err", err)
			sdNotify("READY=1")
			continue
		}
		applied := stackconfig.Reload(&cur, next, stacks)
		log.Info("reloaded", "log_level", next.LogLevel, "exporters", len(next.Exporters), // before a stricter level hides it
			"applied", strings.Join(stackconfig.Changed(&cur, &applied), ","))
		setLevel(level, next.LogLevel)
		apply(&applied)
		if restart := stackconfig.Changed(&applied, next); len(restart) > 0 {
			log.Warn("reload: these changes take effect only after a restart", "keys", strings.Join(restart, ","))
		}
		cur = applied
		sdNotify("READY=1")
	}
}
