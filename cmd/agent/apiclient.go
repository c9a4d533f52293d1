package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/agentproj/agent/stackconfig"
)

// apiClient is how a command reaches an agent's API (status, targets,
// apps, plugins, top): the --api, --api-ca-file and --api-server-name
// flags, and the HTTP client they make. The commands keep their own
// timeouts, as contexts.
type apiClient struct {
	url        string // --api
	caFile     string // --api-ca-file
	serverName string // --api-server-name
	hc         *http.Client
	base       *url.URL // url, parsed by check
}

// addFlags adds --api, --api-ca-file and --api-server-name to f. apiHelp
// is the command's own description of --api; note, when not empty, ends
// each flag's help (as "; ignored when --etcd is given" does for status
// and targets).
func (a *apiClient) addFlags(f *pflag.FlagSet, apiHelp, note string) {
	f.StringVar(&a.url, "api", envOr("AGENT_API", "http://127.0.0.1:9464"),
		apiHelp+", http:// or https:// (env AGENT_API)"+note)
	f.StringVar(&a.caFile, "api-ca-file", os.Getenv("AGENT_API_CA_FILE"),
		"PEM file of the CA that signed the agent's API certificate, trusted instead of the system's CAs for an https:// --api (env AGENT_API_CA_FILE)"+note)
	f.StringVar(&a.serverName, "api-server-name", os.Getenv("AGENT_API_SERVER_NAME"),
		"name to check the agent's certificate against instead of --api's host, for an agent reached by another address (in Kubernetes its certificate names the Service: <service>.<namespace>.svc) (env AGENT_API_SERVER_NAME)"+note)
}

// check validates the flags and builds the client, once. A bad flag is a
// usage error (exit code 2) that names it and its value.
func (a *apiClient) check() error {
	if a.hc != nil {
		return nil
	}
	u, err := url.Parse(a.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return exitCode{2, fmt.Errorf("--api: must be an http:// or https:// URL with a host, got %q", a.url)}
	}
	if a.serverName != "" && u.Scheme != "https" {
		return exitCode{2, fmt.Errorf("--api-server-name: only for an https:// --api, got --api %q", a.url)}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if a.caFile != "" || a.serverName != "" {
		tr.TLSClientConfig = &tls.Config{ServerName: a.serverName, MinVersion: tls.VersionTLS12}
	}
	if a.caFile != "" {
		pool, err := stackconfig.CAPool(a.caFile)
		if err != nil {
			return exitCode{2, fmt.Errorf("--api-ca-file: %w", err)}
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	a.base, a.hc = u, &http.Client{Transport: tr}
	return nil
}

// newRequest checks the flags and makes a request for path under --api.
func (a *apiClient) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(a.url, "/")+path, body)
	if err != nil {
		return nil, exitCode{2, fmt.Errorf("--api: %w", err)}
	}
	return req, nil
}

// httpsRefusal is what Go's HTTP server answers, with status 400, to a
// plain request on a TLS port.
const httpsRefusal = "Client sent an HTTP request to an HTTPS server"

// do sends a request made by newRequest. It is where every command's
// failures to reach the agent get explained: the ones a person fixes with
// --api or --api-ca-file say how (see explain), and an http:// --api that
// reaches a TLS port is an error instead of an answer of HTTP 400.
func (a *apiClient) do(req *http.Request) (*http.Response, error) {
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, a.explain(err)
	}
	if resp.StatusCode == http.StatusBadRequest && req.URL.Scheme == "http" {
		head, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if bytes.Contains(head, []byte(httpsRefusal)) {
			resp.Body.Close()
			return nil, fmt.Errorf("ask agent at %s: the agent speaks https: use --api %s", a.url, a.withScheme("https"))
		}
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	}
	return resp, nil
}

// explain turns an error of sending a request into one that says what to
// change when it is about --api or --api-ca-file.
func (a *apiClient) explain(err error) error {
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	switch {
	case errors.As(err, &unknownCA) && a.caFile == "":
		return fmt.Errorf("ask agent at %s: its certificate is not signed by a CA this system trusts; give the CA that signed it with --api-ca-file (%w)", a.url, unknownCA)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("ask agent at %s: its certificate is not signed by the CA in --api-ca-file %s (%w)", a.url, a.caFile, unknownCA)
	case errors.As(err, &hostErr) && a.serverName != "":
		return fmt.Errorf("ask agent at %s: its certificate is not for --api-server-name %s (%w)", a.url, a.serverName, hostErr)
	case errors.As(err, &hostErr):
		return fmt.Errorf("ask agent at %s: its certificate is not for this address; if it has another name (in Kubernetes, the Service's), give it with --api-server-name (%w)", a.url, hostErr)
	case errors.Is(err, http.ErrSchemeMismatch), errors.As(err, &recErr):
		return fmt.Errorf("ask agent at %s: the agent answers plain http, not https: use --api %s, or give the agent a certificate (api.cert_file, api.key_file)", a.url, a.withScheme("http"))
	}
	return fmt.Errorf("ask agent: %w", err)
}

// withScheme is --api with another scheme.
func (a *apiClient) withScheme(scheme string) string {
	u := *a.base
	u.Scheme = scheme
	return strings.TrimSuffix(u.String(), "/")
}
