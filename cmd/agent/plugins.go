package main

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentproj/agent/slave/plugins"
	"github.com/agentproj/agent/slave/samples"
)

func newPluginsCmd() *cobra.Command {
	c := &appsClient{}
	cmd := &cobra.Command{
		Use:   "plugins",
		Short: "List, run, enable, disable and update the plugins of an agent",
		Long: `plugins talks to the plugin API of one agent (GET /api/v1/plugins,
POST /api/v1/plugins/<name>/{run,enable,disable,update}). Plugins are the
[[plugins]] of that agent's config: executables whose output goes to the
relay as plugin_<name>_<metric>. See docs/plugins.md.`,
		Example: `  agent plugins list
  agent plugins list --api https://10.0.0.2:9464 --api-ca-file /etc/agent/api-ca.pem
  agent plugins run disk --param /var --timeout 30s
  agent plugins disable disk
  agent plugins enable disk
  agent plugins update check_dns`,
		Args: cobra.NoArgs,
	}
	c.addFlags(cmd, "URL of the agent's API")
	cmd.AddCommand(c.pluginsListCmd(), c.pluginsRunCmd(), c.pluginsToggleCmd("enable"), c.pluginsToggleCmd("disable"), c.pluginsUpdateCmd())
	return cmd
}

func (c *appsClient) pluginsListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the plugins with their state and last run",
		Example: "  agent plugins list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return show(c, cmd, http.MethodGet, "/api/v1/plugins", func(list plugins.List) error {
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tENABLED\tINTERVAL\tLAST RUN\tDURATION\tEXIT\tSAMPLES\tLAST ERROR")
				for _, p := range list.Plugins {
					enabled := fmt.Sprint(p.Enabled)
					if p.DisabledUntil != nil {
						enabled = "no, until " + p.DisabledUntil.Local().Format(time.DateTime)
					}
					if p.Running {
						enabled += " (running)"
					}
					interval := "on demand"
					if p.IntervalSeconds > 0 {
						interval = (time.Duration(p.IntervalSeconds * float64(time.Second))).String()
					}
					last, dur, exit := "-", "-", "-"
					if p.LastRun != nil {
						last = p.LastRun.Local().Format(time.DateTime)
						dur = fmt.Sprintf("%.3fs", p.DurationSeconds)
					}
					if p.ExitCode != nil {
						exit = fmt.Sprint(*p.ExitCode)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", p.Name, enabled, interval, last, dur, exit, p.Samples, oneLine(p.LastError))
				}
				return w.Flush()
			})
		},
	}
}

func (c *appsClient) pluginsRunCmd() *cobra.Command {
	var (
		timeout time.Duration
		param   string
	)
	cmd := &cobra.Command{
		Use:   "run NAME",
		Short: "Run a plugin now and print its samples",
		Long: `run runs the plugin at once on the agent and prints what it produced. The
samples also go to the relay, as those of a scheduled run. --param reaches
the plugin in the PLUGIN_PARAM environment variable (never as an argument).
A plugin that is already running is not started twice.`,
		Example: "  agent plugins run disk --param /var --timeout 30s",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			// The agent answers once the run has ended: wait for it.
			c.timeout = plugins.MaxRunTimeout + time.Minute
			if cmd.Flags().Changed("timeout") {
				q.Set("timeout", timeout.String())
				c.timeout = timeout + time.Minute
			}
			if cmd.Flags().Changed("param") {
				q.Set("param", param)
			}
			path := "/api/v1/plugins/" + url.PathEscape(args[0]) + "/run"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			return show(c, cmd, http.MethodPost, path, func(res plugins.RunResult) error {
				out := cmd.OutOrStdout()
				for _, v := range res.Values {
					fmt.Fprintln(out, sampleLine(v))
				}
				where := "not stored (this agent has no relay)"
				if res.Stored {
					where = "stored in the relay's queue"
				}
				fmt.Fprintf(out, "plugin %s ran in %.3fs: %d samples, %s\n", res.Plugin, res.DurationSeconds, res.Samples, where)
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "timeout of this run (default: the plugin's; at most 1h)")
	cmd.Flags().StringVar(&param, "param", "", "value handed to the plugin in PLUGIN_PARAM")
	return cmd
}

func (c *appsClient) pluginsToggleCmd(action string) *cobra.Command {
	short := map[string]string{
		"enable":  "Enable a disabled plugin at once",
		"disable": "Disable a plugin (scheduled and on-demand runs) until enabled, or for its disable_max",
	}[action]
	return &cobra.Command{
		Use:     action + " NAME",
		Short:   short,
		Example: "  agent plugins " + action + " disk",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(c, cmd, http.MethodPost, "/api/v1/plugins/"+url.PathEscape(args[0])+"/"+action, func(st plugins.Status) error {
				if st.DisabledUntil != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "plugin %s disabled until %s\n", st.Name, st.DisabledUntil.Local().Format(time.DateTime))
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "plugin %s enabled\n", st.Name)
				}
				return nil
			})
		},
	}
}

func (c *appsClient) pluginsUpdateCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "update NAME",
		Short:   "Pull the repository of a git plugin (fast-forward only)",
		Example: "  agent plugins update check_dns",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c.timeout = 5 * time.Minute // a clone or pull takes up to 2 minutes
			return show(c, cmd, http.MethodPost, "/api/v1/plugins/"+url.PathEscape(args[0])+"/update", func(res plugins.UpdateResult) error {
				if res.From == res.To {
					fmt.Fprintf(cmd.OutOrStdout(), "plugin %s is up to date at %s\n", res.Plugin, res.To)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "plugin %s updated: %s -> %s\n", res.Plugin, res.From, res.To)
				}
				return nil
			})
		},
	}
}

// sampleLine writes a sample as a line of the text format.
func sampleLine(s samples.JSONSample) string {
	var b strings.Builder
	b.WriteString(s.Name)
	if len(s.Tags) > 0 {
		b.WriteByte('{')
		for i, k := range slices.Sorted(maps.Keys(s.Tags)) {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=%q", k, s.Tags[k])
		}
		b.WriteByte('}')
	}
	if s.Value != nil {
		fmt.Fprintf(&b, " %v", *s.Value)
	}
	return b.String()
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}
