package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/stackconfig"
)

func newStatusCmd() *cobra.Command {
	var src *source
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: its master and every member",
		Example: `  # ask the local agent
  agent status

  # read etcd directly (works with no agent running)
  agent status --etcd http://127.0.0.1:2379 --cluster default -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := src.check(); err != nil {
				return err
			}
			var view etcd.ClusterView
			if src.direct() {
				err := src.withEtcd(func(ctx context.Context, cli *clientv3.Client, keys etcd.Keys, cfg *stackconfig.Config) error {
					var err error
					view, err = etcd.Registry{KV: cli, Keys: keys, Cluster: cfg.Cluster}.View(ctx)
					return err
				})
				if err != nil {
					return err
				}
			} else if err := src.getJSON("/api/v1/status", &view); err != nil {
				return err
			}
			if src.output == "json" {
				return printJSON(cmd, view)
			}
			printStatus(cmd, view)
			return nil
		},
	}
	src = addSourceFlags(cmd)
	return cmd
}

func printStatus(cmd *cobra.Command, v etcd.ClusterView) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Cluster:\t%s\n", v.Cluster)
	switch {
	case v.Master == nil:
		fmt.Fprintf(w, "Master:\tnone elected\n")
	case v.Master.Since != nil:
		fmt.Fprintf(w, "Master:\t%s (since %s, term revision %d)\n", v.Master.Node, v.Master.Since.Format(time.RFC3339), v.Master.Revision)
	default:
		fmt.Fprintf(w, "Master:\t%s (term revision %d)\n", v.Master.Node, v.Master.Revision)
	}
	fmt.Fprintf(w, "Members:\t%d\n\n", len(v.Members))
	fmt.Fprintln(w, "NODE\tAPI\tVERSION\tSTARTED\tMASTER")
	for _, m := range v.Members {
		mark := ""
		if m.Master {
			mark = "*"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Node, m.API, m.Version, m.Started.Format(time.RFC3339), mark)
	}
	if v.Skipped > 0 {
		fmt.Fprintf(w, "\n%d member record(s) in etcd did not parse and were skipped\n", v.Skipped)
	}
	_ = w.Flush()
}
