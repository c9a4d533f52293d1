package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/master/clusterstack"
	"github.com/agentproj/agent/master/collectors"
	"github.com/agentproj/agent/slave/nodestack"
	"github.com/agentproj/agent/stackconfig"
)

func newCheckCmd() *cobra.Command {
	var cfgFile, renderDir string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the configuration join would run with, and render the stack's configs without running anything",
		Long: `check loads the configuration exactly as join does (the same flags, AGENT_*
environment variables and --config file), reports every problem at once, each
naming the key and the value, and exits 2 when there is one, as join would.

On a host (stack.driver docker, process or none) it then renders what this
agent would run: the node stack (node_exporter, the log shipper, the trace
agent) and, as master, the cluster stack (Prometheus with its rules, the
Jaeger collector), into --render (default: a temporary folder, removed
after), and lists each workload and file. In Kubernetes mode it renders the
values the master gives the metrics, logs and traces releases. A component that would not start
(no manager.logs_url, say) is reported as the running agent would log it. It
contacts nothing but, when stack.driver is empty, the local Docker engine, to
pick the driver as join does; it needs no etcd.

A config that does not pass here is one a reload would reject: the systemd
unit runs it before every reload, so that systemctl reload fails then.`,
		Example: `  # the unit's own flags and file
  agent check --config /etc/agent/agent.toml --listen 0.0.0.0:9464

  # keep the rendered configs to read them (in a new or empty folder)
  agent check --config /etc/agent/agent.toml --render /tmp/agent-stack`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := stackconfig.Load(cfgFile, cmd.Flags(), stackconfig.JoinOptions)
			if err != nil {
				return exitCode{2, err}
			}
			return runCheck(cmd.Context(), cmd.OutOrStdout(), cfgFile, renderDir, cfg)
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", os.Getenv("AGENT_CONFIG"), "TOML config file (env AGENT_CONFIG)")
	cmd.Flags().StringVar(&renderDir, "render", "", "new or empty folder to render the stack's configs into, kept (default: a temporary one, removed)")
	stackconfig.AddFlags(cmd.Flags(), stackconfig.JoinOptions)
	cmd.Flags().SortFlags = false
	return cmd
}

// runCheck reports the loaded, valid cfg and renders the host's stacks.
func runCheck(ctx context.Context, out io.Writer, cfgFile, renderDir string, cfg *stackconfig.Config) error {
	if cfgFile == "" {
		cfgFile = "(no file: flags, environment and defaults)"
	}
	fmt.Fprintf(out, "config %s: valid\n", cfgFile)
	fmt.Fprintf(out, "node %s, cluster %s, API %s://%s", cfg.Node, cfg.Cluster, cfg.API.Scheme(), cfg.AdvertiseAddr())
	if cfg.API.TokenFile != "" {
		fmt.Fprint(out, " (bearer token required)")
	}
	fmt.Fprintln(out)
	if len(cfg.Etcd.Endpoints) == 0 {
		fmt.Fprintf(out, "etcd: embedded, data in %s\n", filepath.Join(cfg.DataDir, "etcd"))
	} else {
		fmt.Fprintf(out, "etcd: %s\n", strings.Join(cfg.Etcd.Endpoints, ", "))
	}
	relayURL := ""
	if cfg.Relay.Enabled() {
		relayURL = relayURLOf(cfg)
		fmt.Fprintf(out, "relay: %s, to %d upstream(s)\n", relayURL, len(cfg.Relay.Upstream))
	}
	dir := renderDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "agent-check")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := emptyDir(dir); err != nil {
		return exitCode{2, fmt.Errorf("--render: %w", err)}
	}
	if kubernetesMode(cfg) {
		files, err := renderKubernetes(cfg, dir)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "stack: Kubernetes mode, the releases' values rendered into %s\n", dir)
		printFiles(out, files)
		return nil
	}

	// What the running agent would log as a warning is listed at the end.
	var warnings bytes.Buffer
	log := slog.New(slog.NewTextHandler(&warnings, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	driver, why, logGlob := checkDriver(ctx, cfg, log)
	csCfg, nsCfg := hostStackConfigs(cfg, driver, dir, relayURL)
	nsCfg.ContainerLogs = logGlob
	fmt.Fprintf(out, "stack: driver %s%s, configs rendered into %s\n", driver, why, dir)
	// The trace agent sends to the collector this host would publish as
	// master (collectors/<name> in etcd).
	node := nodestack.Render(nsCfg, clusterstack.URLs(csCfg)[collectors.JaegerOTLPGRPC], log)
	printSpecs(out, "every node", node)
	master, err := clusterstack.Render(csCfg, log)
	if err != nil {
		return exitCode{2, fmt.Errorf("cluster stack: %w", err)}
	}
	printSpecs(out, "as master", master)
	var files []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		return err
	}
	printFiles(out, files)
	if warnings.Len() > 0 {
		fmt.Fprintf(out, "would not start (the running agent logs these as warnings):\n")
		for line := range strings.Lines(warnings.String()) {
			fmt.Fprintf(out, "  %s", line)
		}
	}
	return nil
}

// emptyDir makes dir, or checks that it is empty: files of an earlier run
// would be listed as this one's.
func emptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty (it has %s): give a new or empty folder", dir, entries[0].Name())
	}
	return nil
}

// checkDriver is the workload driver join would open (openDriver, without
// opening the process driver's folder): stack.driver, or when empty docker
// if the local engine answers, else process; why says which, for an empty
// one. With docker, logGlob is where the engine keeps the containers'
// logs, as join reads it (containerLogs, which logs why when it cannot).
func checkDriver(ctx context.Context, cfg *stackconfig.Config, log *slog.Logger) (name, why, logGlob string) {
	if cfg.Stack.Driver != "" && cfg.Stack.Driver != "docker" {
		return cfg.Stack.Driver, "", ""
	}
	auto := cfg.Stack.Driver == ""
	d, err := localDocker(ctx, auto, log)
	switch {
	case err != nil && auto:
		return "process", " (stack.driver empty: no Docker engine answers)", ""
	case err != nil:
		return "docker", " (its engine does not answer: " + err.Error() + ")", ""
	}
	defer d.Close()
	if auto {
		why = " (stack.driver empty: the Docker engine answers)"
	}
	return "docker", why, containerLogs(ctx, d, log)
}

// printFiles lists the files rendered.
func printFiles(out io.Writer, files []string) {
	fmt.Fprintf(out, "rendered files:\n")
	for _, f := range files {
		fmt.Fprintf(out, "  %s\n", f)
	}
}

// printSpecs lists workloads: name, what runs and its arguments.
func printSpecs(out io.Writer, title string, specs []workload.Spec) {
	fmt.Fprintf(out, "%s:\n", title)
	if len(specs) == 0 {
		fmt.Fprintln(out, "  (nothing)")
	}
	for _, s := range specs {
		what := s.Binary
		if s.Image != "" {
			what = "image " + s.Image
		}
		fmt.Fprintf(out, "  %s: %s %s\n", s.Name, what, strings.Join(s.Args, " "))
	}
}
