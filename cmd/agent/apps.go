package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentproj/agent/slave/apps"
	"github.com/agentproj/agent/stackconfig"
)

// appsClient talks to an agent's apps API.
type appsClient struct {
	api       apiClient
	tokenFile string
	output    string
	timeout   time.Duration // of one request; 0: 15s
}

func newAppsCmd() *cobra.Command {
	c := &appsClient{}
	cmd := &cobra.Command{
		Use:   "apps",
		Short: "Create, list, show and delete the manager's guid applications",
		Long: `apps talks to the manager API of any agent (POST/GET/DELETE /api/v1/apps).
An app is placed on the live node with the fewest apps unless --node pins it;
that node runs it as a container named after the guid and publishes its
metrics port to Prometheus. See docs/apps.md.`,
		Example: `  agent apps create -f testdata/apps/full.json
  agent apps create --guid shop-web --image registry.example/shop/web:1.4.2 \
    --env LOG_LEVEL=info --metrics-port 9102 --label team=shop
  agent apps list
  agent apps list --api https://10.0.0.2:9464 --api-ca-file /etc/agent/api-ca.pem
  agent apps get shop-web -o json
  agent apps delete shop-web`,
		Args: cobra.NoArgs,
	}
	c.addFlags(cmd, "URL of an agent's API")
	cmd.AddCommand(c.createCmd(), c.listCmd(), c.getCmd(), c.deleteCmd())
	return cmd
}

// addFlags adds the client's flags (--api, described by apiHelp,
// --api-ca-file, --token-file and --output) to cmd and its subcommands.
func (c *appsClient) addFlags(cmd *cobra.Command, apiHelp string) {
	f := cmd.PersistentFlags()
	c.api.addFlags(f, apiHelp, "")
	f.StringVar(&c.tokenFile, "token-file", os.Getenv("AGENT_TOKEN_FILE"), "file holding the API's bearer token (env AGENT_TOKEN_FILE)")
	f.StringVarP(&c.output, "output", "o", "table", "output format: table or json")
}

func (c *appsClient) createCmd() *cobra.Command {
	var (
		file        string
		spec        apps.AppSpec
		env, labels []string
		metricsPort int
		metricsPath string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an app from a JSON file (-f FILE, - for stdin) or from flags",
		Example: `  agent apps create -f app.json
  agent apps create --guid shop-web --image registry.example/shop/web:1.4.2 --node n2 --arg=--verbose`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var body []byte
			specFlags := cmd.Flags().Changed("guid") || cmd.Flags().Changed("image")
			switch {
			case file != "" && specFlags:
				return exitCode{2, fmt.Errorf("-f: give the app as a file or as flags, not both")}
			case file != "":
				b, err := readSpecFile(cmd, file)
				if err != nil {
					return err
				}
				body = b
			default:
				var err error
				if spec.Env, err = keyValues("--env", env); err != nil {
					return err
				}
				if spec.Labels, err = keyValues("--label", labels); err != nil {
					return err
				}
				if metricsPort != 0 || metricsPath != "" {
					spec.Metrics = &apps.Metrics{Port: metricsPort, Path: metricsPath}
				}
				if body, err = json.Marshal(spec); err != nil {
					return err
				}
			}
			var view apps.AppView
			code, err := c.do(cmd, http.MethodPost, "/api/v1/apps", body, &view)
			if err != nil {
				return err
			}
			if c.output == "json" {
				return printJSON(cmd, view)
			}
			if code == http.StatusCreated {
				fmt.Fprintf(cmd.OutOrStdout(), "app %s created on node %s\n", view.GUID, view.Node)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "app %s already exists with this spec on node %s\n", view.GUID, view.Node)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "JSON app spec to send (- reads stdin)")
	f.StringVar(&spec.GUID, "guid", "", "the app's guid (a DNS label)")
	f.StringVar(&spec.Image, "image", "", "container image (must match the agent's api.allowed_images)")
	f.StringVar(&spec.Node, "node", "", "pin the app to this live node (default: the node with the fewest apps)")
	f.StringArrayVar(&env, "env", nil, "environment variable NAME=VALUE (repeatable)")
	f.StringArrayVar(&spec.Args, "arg", nil, "argument for the image's entrypoint (repeatable, in order)")
	f.IntVar(&metricsPort, "metrics-port", 0, "port the app serves Prometheus metrics on")
	f.StringVar(&metricsPath, "metrics-path", "", "path of the metrics (default /metrics)")
	f.StringArrayVar(&labels, "label", nil, "label name=value for the app's metrics (repeatable)")
	return cmd
}

func (c *appsClient) listCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List every app with its node and observed state",
		Example: "  agent apps list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return show(c, cmd, http.MethodGet, "/api/v1/apps", func(list apps.AppList) error {
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "GUID\tNODE\tPINNED\tIMAGE\tSTATUS\tRESTARTS")
				for _, a := range list.Apps {
					status, restarts := "-", "-"
					if a.Status != nil {
						status, restarts = a.Status.Status, fmt.Sprint(a.Status.Restarts)
					}
					fmt.Fprintf(w, "%s\t%s\t%t\t%s\t%s\t%s\n", a.GUID, a.Node, a.Pinned, a.Spec.Image, status, restarts)
				}
				for _, s := range list.Skipped {
					fmt.Fprintf(w, "skipped %s: %s\n", s.Key, s.Reason)
				}
				return w.Flush()
			})
		},
	}
}

func (c *appsClient) getCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "get GUID",
		Short:   "Show one app: its spec, node and observed state",
		Example: "  agent apps get shop-web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(c, cmd, http.MethodGet, "/api/v1/apps/"+args[0], func(a apps.AppView) error {
				printApp(cmd, a)
				return nil
			})
		},
	}
}

func (c *appsClient) deleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete GUID",
		Short:   "Delete an app; its node stops it",
		Example: "  agent apps delete shop-web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := c.do(cmd, http.MethodDelete, "/api/v1/apps/"+args[0], nil, nil); err != nil {
				return err
			}
			if c.output == "json" {
				return printJSON(cmd, map[string]string{"deleted": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "app %s deleted\n", args[0])
			return nil
		},
	}
}

func printApp(cmd *cobra.Command, a apps.AppView) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(w, "%s:\t%s\n", k, v) }
	row("guid", a.GUID)
	row("image", a.Spec.Image)
	row("node", a.Node)
	row("pinned", fmt.Sprint(a.Pinned))
	row("created", a.Created.Format(time.RFC3339))
	if len(a.Spec.Args) > 0 {
		row("args", strings.Join(a.Spec.Args, " "))
	}
	for _, k := range slices.Sorted(maps.Keys(a.Spec.Env)) {
		row("env", fmt.Sprintf("%s=%q", k, a.Spec.Env[k]))
	}
	if m := a.Spec.Metrics; m != nil {
		row("metrics", fmt.Sprintf("port %d, path %s", m.Port, m.Path))
	}
	for _, k := range slices.Sorted(maps.Keys(a.Spec.Labels)) {
		row("label", fmt.Sprintf("%s=%q", k, a.Spec.Labels[k]))
	}
	if s := a.Status; s != nil {
		row("status", s.Status)
		if s.ID != "" {
			row("id", s.ID)
		}
		if !s.Since.IsZero() {
			row("since", s.Since.Format(time.RFC3339))
		}
		row("restarts", fmt.Sprint(s.Restarts))
		if s.LastError != "" {
			row("last error", s.LastError)
		}
	} else {
		row("status", "- (not reported by a node)")
	}
	_ = w.Flush()
}

// show sends a request with no body to the API, decodes the answer into a
// T and prints it: as JSON with -o json, else with table.
func show[T any](c *appsClient, cmd *cobra.Command, method, path string, table func(T) error) error {
	var v T
	if _, err := c.do(cmd, method, path, nil, &v); err != nil {
		return err
	}
	if c.output == "json" {
		return printJSON(cmd, v)
	}
	return table(v)
}

// do sends a request to the apps API and decodes a 2xx answer into v
// (nil: ignore it). An error answer becomes an error with the API's
// message; bad flags exit 2.
func (c *appsClient) do(cmd *cobra.Command, method, path string, body []byte, v any) (int, error) {
	if c.output != "table" && c.output != "json" {
		return 0, exitCode{2, fmt.Errorf("--output: must be table or json, got %q", c.output)}
	}
	timeout := 15 * time.Second
	if c.timeout > 0 {
		timeout = c.timeout
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	req, err := c.api.newRequest(ctx, method, path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.tokenFile != "" {
		tok, err := stackconfig.ReadToken(c.tokenFile)
		if err != nil {
			return 0, exitCode{2, fmt.Errorf("--token-file: %w", err)}
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.api.do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, readAnswer(resp, method+" "+req.URL.String(), v)
}

// readSpecFile reads -f: a file, or stdin for "-".
func readSpecFile(cmd *cobra.Command, file string) ([]byte, error) {
	r := cmd.InOrStdin()
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, exitCode{2, fmt.Errorf("-f: %w", err)}
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, exitCode{2, fmt.Errorf("-f: %w", err)}
	}
	return b, nil
}

// keyValues parses repeated NAME=VALUE flags.
func keyValues(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, exitCode{2, fmt.Errorf("%s: want NAME=VALUE, got %q", flag, kv)}
		}
		out[k] = v
	}
	return out, nil
}
