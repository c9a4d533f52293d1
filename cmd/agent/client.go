package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/stackconfig"
)

// source is where a read-only command gets its data: an agent's API, or
// etcd directly.
type source struct {
	api     apiClient
	cfgFile string
	output  string
	cmd     *cobra.Command
}

func addSourceFlags(cmd *cobra.Command) *source {
	s := &source{cmd: cmd}
	s.api.addFlags(cmd.Flags(), "URL of an agent's API to ask", "; ignored when --etcd is given")
	cmd.Flags().StringVarP(&s.output, "output", "o", "table", "output format: table or json")
	cmd.Flags().StringVar(&s.cfgFile, "config", os.Getenv("AGENT_CONFIG"), "TOML config file for the etcd connection (env AGENT_CONFIG)")
	stackconfig.AddFlags(cmd.Flags(), stackconfig.ClientOptions)
	return s
}

func (s *source) check() error {
	if s.output != "table" && s.output != "json" {
		return exitCode{2, fmt.Errorf("--output: must be table or json, got %q", s.output)}
	}
	return nil
}

// direct reports whether to read etcd instead of asking an agent.
func (s *source) direct() bool {
	f := s.cmd.Flags().Lookup("etcd")
	return (f != nil && f.Changed) || os.Getenv("AGENT_ETCD") != ""
}

// withEtcd connects to etcd with the client flags and calls fn.
func (s *source) withEtcd(fn func(ctx context.Context, cli *clientv3.Client, keys etcd.Keys, cfg *stackconfig.Config) error) error {
	cfg, err := stackconfig.Load(s.cfgFile, s.cmd.Flags(), stackconfig.ClientOptions)
	if err != nil {
		return exitCode{2, err}
	}
	cc := clientConfig(cfg, cfg.Etcd.Endpoints)
	cli, err := etcd.NewClient(cc)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(s.cmd.Context(), cfg.Etcd.DialTimeout+5*time.Second)
	defer cancel()
	err = fn(ctx, cli, etcd.NewKeys(cfg.Etcd.Prefix, cfg.Cluster), cfg)
	tlsConf, _ := cc.TLSConfig() // NewClient took it
	return etcd.Explain(s.cmd.Context(), cfg.Etcd.Endpoints, tlsConf, min(cfg.Etcd.DialTimeout, 2*time.Second), err)
}

// getJSON asks the agent API for path and decodes the answer into v; an
// error answer becomes an error carrying the API's message.
func (s *source) getJSON(path string, v any) error {
	ctx, cancel := context.WithTimeout(s.cmd.Context(), 10*time.Second)
	defer cancel()
	req, err := s.api.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	resp, err := s.api.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readAnswer(resp, req.URL.String(), v)
}

// readAnswer reads an answer of the agent API to the request that what
// names in errors (its URL, or method and URL). An answer other than 2xx
// becomes an error carrying the API's message ({"error": "..."}) when it
// sent one; a 2xx answer with a body is decoded into v unless v is nil.
func readAnswer(resp *http.Response, what string, v any) error {
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s: %w", what, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %s (HTTP %d)", what, e.Error, resp.StatusCode)
		}
		return fmt.Errorf("%s: HTTP %d", what, resp.StatusCode)
	}
	if v == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode answer of %s: %w", what, err)
	}
	return nil
}

func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
