package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/master/relay"
	"github.com/agentproj/agent/stackconfig"
)

func newStatusCmd() *cobra.Command {
	var src *source
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: its master and every member",
		Example: `  # ask the local agent
  agent status

  # an agent whose API serves TLS (api.cert_file), signed by your own CA
  agent status --api https://10.0.0.2:9464 --api-ca-file /etc/agent/api-ca.pem

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
					if err != nil {
						return err
					}
					ev, err := etcd.ReadEtcdView(ctx, cli, cfg.Etcd.Prefix)
					view.Etcd = &ev
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
		api := m.API
		if m.APIScheme != "" {
			api = m.APIScheme + "://" + api
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Node, api, m.Version, m.Started.Format(time.RFC3339), mark)
	}
	for _, m := range v.Members {
		if m.Status == nil {
			continue
		}
		fmt.Fprintf(w, "\nNode %s (reported %s):\n", m.Node, m.Status.Updated.Format(time.RFC3339))
		if len(m.Status.Stack) > 0 {
			fmt.Fprintln(w, "  WORKLOAD\tDRIVER\tSTATE\tIMAGE/BINARY\tSINCE\tRESTARTS\tLAST ERROR")
		}
		for _, c := range m.Status.Stack {
			what := c.Image
			if what == "" {
				what = c.Binary
			}
			since := ""
			if !c.Since.IsZero() {
				since = c.Since.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%d\t%s\n", c.Name, c.Driver, c.Status, what, since, c.Restarts, c.LastError)
		}
		// Below the table, so its columns stay aligned: what a
		// crash-looping workload last wrote, which says why it exits.
		for _, c := range m.Status.Stack {
			if len(c.LastOutput) == 0 {
				continue
			}
			fmt.Fprintf(w, "  last output of %s:\n", c.Name)
			for _, line := range c.LastOutput {
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
		if len(m.Status.Kubernetes) > 0 {
			var ks state.Report
			if json.Unmarshal(m.Status.Kubernetes, &ks) == nil {
				printKubernetes(w, ks)
			}
		}
		if len(m.Status.Relay) > 0 {
			var rs relay.Stats
			if json.Unmarshal(m.Status.Relay, &rs) == nil {
				for _, u := range rs.Upstreams {
					fmt.Fprintf(w, "  relay -> %s\t%s\tqueue %d B, %d samples, oldest %.0fs\tforwarded %d, dropped %d\t%s\n",
						u.URL, u.State, u.QueueBytes, u.QueueSamples, u.OldestEntryAgeSeconds, u.SamplesForwarded, u.SamplesDropped, u.LastError)
				}
			}
		}
	}
	if v.Etcd != nil {
		printEtcd(w, *v.Etcd)
	}
	if len(v.Apps) > 0 {
		fmt.Fprintf(w, "\nApps: %d\n", len(v.Apps))
		fmt.Fprintln(w, "  GUID\tNODE\tIMAGE\tSTATE")
		for _, a := range v.Apps {
			st := a.Status
			if st == "" {
				st = "not reported"
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", a.GUID, a.Node, a.Image, st)
		}
	}
	if v.Skipped > 0 {
		fmt.Fprintf(w, "\n%d record(s) in etcd did not parse and were skipped\n", v.Skipped)
	}
	_ = w.Flush()
}

// printKubernetes shows the master's Helm releases and guid namespaces
// (Kubernetes mode): chart, version, revision and Helm's status of each
// release, and the error and next attempt of one that fails.
func printKubernetes(w io.Writer, ks state.Report) {
	if len(ks.Releases) > 0 {
		fmt.Fprintln(w, "  RELEASE\tNAMESPACE\tCHART\tVERSION\tREVISION\tSTATUS\tLAST ERROR")
	}
	for _, r := range ks.Releases {
		msg := r.LastError
		if msg == "" && r.Status == "failed" {
			msg = r.Description
		}
		if !r.NextTry.IsZero() {
			msg += " (next try " + r.NextTry.Format(time.RFC3339) + ")"
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Name, r.Namespace, r.Chart, r.Version, r.Revision, r.Status, singleLine(msg))
	}
	if len(ks.Namespaces) > 0 {
		fmt.Fprintln(w, "  GUID NAMESPACE\tPHASE\tCREATED")
	}
	for _, ns := range ks.Namespaces {
		created := ""
		if !ns.Created.IsZero() {
			created = ns.Created.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\n", ns.Name, ns.Phase, created)
	}
}

// singleLine keeps a message on its row: Helm's errors can span lines.
func singleLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func printEtcd(w io.Writer, v etcd.EtcdView) {
	fmt.Fprintf(w, "\netcd: %d members", len(v.Members))
	if v.GrowsTo > 0 {
		fmt.Fprintf(w, ", grows to %d as agents join", v.GrowsTo)
	}
	if v.GrowsTo > 1 && v.ReplaceDeadAfter > 0 {
		fmt.Fprintf(w, "; a member dead for %s is replaced", v.ReplaceDeadAfter.Duration())
	}
	fmt.Fprintln(w, "\n  NAME\tID\tSTATE\tCLIENT URLS\tPEER URLS")
	for _, m := range v.Members {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", cmp.Or(m.Name, "-"), m.ID, m.State(), strings.Join(m.ClientURLs, ","), strings.Join(m.PeerURLs, ","))
	}
}
