package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
)

// agentAPIStandIn serves what status, targets, apps list, plugins list
// and top read from an agent's API: over TLS with a certificate of ca
// when ca is not nil, else plain. It stands in for slave.API.
func agentAPIStandIn(t *testing.T, ca *testca.CA) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	answer := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) }
	}
	mux.Handle("GET /api/v1/status", answer(`{"cluster": "tls-test", "members": []}`))
	mux.Handle("GET /api/v1/targets", answer(`{"targets": []}`))
	mux.Handle("GET /api/v1/apps", answer(`{"apps": []}`))
	mux.Handle("GET /api/v1/plugins", answer(`{"plugins": []}`))
	mux.Handle("GET /metrics/monitor", answer("agent_monitor_refresh_timestamp_seconds 1.7e+09\n"))
	srv := httptest.NewUnstartedServer(mux)
	// The refused handshakes are what the tests are about, not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if ca == nil {
		srv.Start()
	} else {
		certFile, keyFile := ca.Issue(t, "agent-api", "agent.agents.svc")
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.StartTLS()
	}
	t.Cleanup(srv.Close)
	return srv
}

// Every command that asks an agent's API reaches it over https with
// --api-ca-file, and says what to change when --api or --api-ca-file
// does not fit the agent.
func TestAPIClientTLS(t *testing.T) {
	t.Setenv("AGENT_API", "")
	t.Setenv("AGENT_API_CA_FILE", "")
	t.Setenv("AGENT_ETCD", "") // status and targets would read etcd
	ca, otherCA := testca.New(t), testca.New(t)
	tlsAPI, plainAPI := agentAPIStandIn(t, ca).URL, agentAPIStandIn(t, nil).URL
	tlsHost, plainHost := strings.TrimPrefix(tlsAPI, "https://"), strings.TrimPrefix(plainAPI, "http://")

	commands := [][]string{
		{"status"},
		{"targets"},
		{"apps", "list"},
		{"plugins", "list"},
		{"top", "--count", "1"},
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // "": no error
	}{
		{"https with the CA", []string{"--api", tlsAPI, "--api-ca-file", ca.CertFile}, ""},
		{"plain http", []string{"--api", plainAPI}, ""},
		{"https without the CA", []string{"--api", tlsAPI},
			"ask agent at " + tlsAPI + ": its certificate is not signed by a CA this system trusts; give the CA that signed it with --api-ca-file (x509: certificate signed by unknown authority"},
		{"https with another CA", []string{"--api", tlsAPI, "--api-ca-file", otherCA.CertFile},
			"ask agent at " + tlsAPI + ": its certificate is not signed by the CA in --api-ca-file " + otherCA.CertFile + " (x509: certificate signed by unknown authority"},
		{"http to a TLS agent", []string{"--api", "http://" + tlsHost + "/", "--api-ca-file", ca.CertFile},
			"ask agent at http://" + tlsHost + "/: the agent speaks https: use --api https://" + tlsHost},
		// The certificate checked against another name than --api's host
		// (in Kubernetes, the Service's): one it has, one it has not.
		{"https with --api-server-name", []string{"--api", tlsAPI, "--api-ca-file", ca.CertFile, "--api-server-name", "agent.agents.svc"}, ""},
		{"https with a wrong --api-server-name", []string{"--api", tlsAPI, "--api-ca-file", ca.CertFile, "--api-server-name", "agent.other.svc"},
			"ask agent at " + tlsAPI + ": its certificate is not for --api-server-name agent.other.svc (x509: certificate is valid for"},
		{"https to a plain agent", []string{"--api", "https://" + plainHost, "--api-ca-file", ca.CertFile},
			"ask agent at https://" + plainHost + ": the agent answers plain http, not https: use --api http://" + plainHost + ", or give the agent a certificate (api.cert_file, api.key_file)"},
	} {
		for _, command := range commands {
			t.Run(tc.name+"/"+command[0], func(t *testing.T) {
				out, err := runCLI(t, append(append([]string{}, command...), tc.args...)...)
				switch {
				case tc.want == "" && err != nil:
					t.Fatalf("agent %s: %v\n%s", strings.Join(command, " "), err, out)
				case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
					t.Fatalf("agent %s: %v\nwant %s", strings.Join(command, " "), err, tc.want)
				}
				if tc.want == "" && command[0] == "status" && !strings.Contains(out, "tls-test") {
					t.Fatalf("agent status: %q", out)
				}
				var ec exitCode
				if errors.As(err, &ec) {
					t.Fatalf("%v: exit code %d, want 1", err, ec.code)
				}
			})
		}
	}
}

// A CA file that cannot be used, or an --api that is not an http(s) URL,
// is a usage error (exit code 2) naming the flag and what was given; the
// commands give up before asking anything.
func TestAPIClientFlagErrors(t *testing.T) {
	t.Setenv("AGENT_API", "")
	t.Setenv("AGENT_API_CA_FILE", "")
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no PEM", []string{"--api", "https://127.0.0.1:9", "--api-ca-file", notPEM}, "--api-ca-file: " + notPEM + ": no PEM certificate in it"},
		{"missing file", []string{"--api", "https://127.0.0.1:9", "--api-ca-file", missing}, "--api-ca-file: open " + missing + ": no such file or directory"},
		{"a directory", []string{"--api", "https://127.0.0.1:9", "--api-ca-file", dir}, "--api-ca-file: read " + dir + ": is a directory"},
		{"host:port", []string{"--api", "127.0.0.1:9464"}, `--api: must be an http:// or https:// URL with a host, got "127.0.0.1:9464"`},
		{"other scheme", []string{"--api", "ftp://127.0.0.1:9464"}, `--api: must be an http:// or https:// URL with a host, got "ftp://127.0.0.1:9464"`},
		{"no host", []string{"--api", "https:///api"}, `--api: must be an http:// or https:// URL with a host, got "https:///api"`},
		{"server name over http", []string{"--api", "http://127.0.0.1:9", "--api-server-name", "agent.agents.svc"}, `--api-server-name: only for an https:// --api, got --api "http://127.0.0.1:9"`},
	} {
		for _, command := range [][]string{{"status"}, {"apps", "list"}, {"top", "--count", "1"}} {
			t.Run(tc.name+"/"+command[0], func(t *testing.T) {
				_, err := runCLI(t, append(append([]string{}, command...), tc.args...)...)
				var ec exitCode
				if err == nil || err.Error() != tc.want || !errors.As(err, &ec) || ec.code != 2 {
					t.Fatalf("agent %s: %v (%#v)\nwant exit code 2 with %s", strings.Join(command, " "), err, err, tc.want)
				}
			})
		}
	}
}

// explain says what to change for each TLS failure; the ones that need a
// second address (a certificate for another name) are built here.
func TestAPIClientExplain(t *testing.T) {
	base, _ := url.Parse("https://node2.example:9464")
	a := &apiClient{url: "https://node2.example:9464", base: base}
	cert := &x509.Certificate{DNSNames: []string{"node1.example"}}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&url.Error{Op: "Get", URL: "https://node2.example:9464/api/v1/status", Err: &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: cert, Host: "node2.example"}}},
			"ask agent at https://node2.example:9464: its certificate is not for this address; if it has another name (in Kubernetes, the Service's), give it with --api-server-name (x509: certificate is valid for node1.example, not node2.example)"},
		// Not TLS, and not an HTTP answer either (Go's client turns one of
		// those into http.ErrSchemeMismatch, which the commands test above).
		{&url.Error{Op: "Get", URL: "https://node2.example:9464/api/v1/status", Err: tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}},
			"ask agent at https://node2.example:9464: the agent answers plain http, not https: use --api http://node2.example:9464, or give the agent a certificate (api.cert_file, api.key_file)"},
		{fmt.Errorf("dial tcp 10.0.0.2:9464: connect: connection refused"), "ask agent: dial tcp 10.0.0.2:9464: connect: connection refused"},
	} {
		if got := a.explain(tc.err); got.Error() != tc.want {
			t.Errorf("explain(%v) = %v\nwant %s", tc.err, got, tc.want)
		}
	}
}
