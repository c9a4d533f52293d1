package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/stackconfig"
)

func newTargetsCmd() *cobra.Command {
	var src *source
	cmd := &cobra.Command{
		Use:   "targets",
		Short: "List the exporter targets every agent publishes, per job and node",
		Example: `  # ask the local agent
  agent targets

  # an agent whose API serves TLS (api.cert_file), signed by your own CA
  agent targets --api https://10.0.0.2:9464 --api-ca-file /etc/agent/api-ca.pem

  # read etcd directly, as JSON
  agent targets --etcd http://127.0.0.1:2379 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := src.check(); err != nil {
				return err
			}
			var set etcd.TargetSet
			if src.direct() {
				err := src.withEtcd(func(ctx context.Context, cli *clientv3.Client, keys etcd.Keys, cfg *stackconfig.Config) error {
					var err error
					set, err = etcd.Registry{KV: cli, Keys: keys, Cluster: cfg.Cluster}.Targets(ctx)
					return err
				})
				if err != nil {
					return err
				}
			} else if err := src.getJSON("/api/v1/targets", &set); err != nil {
				return err
			}
			if src.output == "json" {
				return printJSON(cmd, set)
			}
			printTargets(cmd, set)
			return nil
		},
	}
	src = addSourceFlags(cmd)
	return cmd
}

func printTargets(cmd *cobra.Command, set etcd.TargetSet) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "JOB\tNODE\tID\tTARGETS\tLABELS")
	for _, t := range set.Targets {
		var labels []string
		for k, v := range t.Labels {
			labels = append(labels, fmt.Sprintf("%s=%q", k, v))
		}
		sort.Strings(labels)
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.Job, t.Node, t.ID, strings.Join(t.Targets, ","), strings.Join(labels, ","))
	}
	for _, b := range set.Skipped {
		fmt.Fprintf(w, "skipped %s: %s\n", b.Key, b.Reason)
	}
	_ = w.Flush()
}
