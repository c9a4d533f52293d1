package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "agent",
		Short: "Cluster agent for multi-node observability stacks, coordinated through etcd",
		Long: `agent runs on every host. The agents meet in etcd, elect one master, and
split the work: every node registers itself and its exporter targets; the
master runs the cluster stack and turns the targets into Prometheus service
discovery. With no --etcd endpoints, agent join starts an embedded etcd and is
a one-node cluster.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newJoinCmd(), newCheckCmd(), newStatusCmd(), newTargetsCmd(), newAppsCmd(), newPluginsCmd(), newTopCmd(), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the agent's version",
		Example: "  agent version",
		Args:    cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "agent %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
