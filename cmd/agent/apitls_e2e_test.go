package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
	"github.com/agentproj/agent/stackconfig"
)

// An agent whose API serves TLS (api.cert_file, signed by api.ca_file's
// CA) runs the stack as master: its Prometheus scrapes the agent's node
// monitor over https trusting that CA and remote-writes through the relay
// over https to the manager; plain HTTP is refused; agent status reads
// the API with --api-ca-file, and without it says which flag is missing.
func TestAPIOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireBinary(t, "prometheus-node-exporter", "prometheus-node-exporter")
	endpoint := startEtcd(t)
	manager := startPrometheus(t, "manager", "global: {scrape_interval: 1m}\n", "--web.enable-remote-write-receiver")
	ca := testca.New(t)
	cert, key := ca.Issue(t, "agent-a")
	a := startStackAgentAPI(t, endpoint, "a", manager, t.TempDir(),
		fmt.Sprintf("cert_file = %q\nkey_file = %q\nca_file = %q", cert, key, ca.CertFile))

	pool, err := stackconfig.CAPool(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(url string) int {
		resp, err := client.Get(url)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	base := "https://" + a.api
	etcdtest.Eventually(t, 30*time.Second, func() bool { return get(base+"/-/ready") == 200 }, "agent not ready over https")
	if code := httpCode("http://" + a.api + "/-/healthy"); code != http.StatusBadRequest {
		t.Fatalf("plain HTTP to the TLS API: %d, want 400", code)
	}

	prom := "http://" + a.prom
	var targets []promTarget // the last seen, for the failure message
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		targets = activeTargets(t, prom)
		return query(prom, `up{job="agent-monitor",cluster="e2e",node="a"} == 1`) == 1
	}, "the master's Prometheus does not scrape the agent's node monitor over https: %+v", &targets)
	for _, tg := range activeTargets(t, prom) {
		if tg.Labels["job"] == "agent-monitor" && !strings.HasPrefix(tg.ScrapeURL, "https://"+a.api+"/") {
			t.Fatalf("the monitor target is scraped at %s, want https://%s", tg.ScrapeURL, a.api)
		}
	}
	// Prometheus' remote_write reaches the relay over https with the CA.
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		return query(manager, `node_exporter_build_info{cluster="e2e"}`) == 1 &&
			query(manager, `up{job="agent-monitor",cluster="e2e"}`) == 1
	}, "series did not reach the manager through the relay over https")

	status := func(args ...string) (string, error) {
		out, err := exec.Command(agentBinary(t), append([]string{"status", "--api", base}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := status("--api-ca-file", ca.CertFile); err != nil || !strings.Contains(out, "https://"+a.api) {
		t.Fatalf("agent status --api %s --api-ca-file: %v\n%s", base, err, out)
	}
	if out, err := status(); err == nil || !strings.Contains(out, "--api-ca-file") {
		t.Fatalf("agent status without the CA: %v\n%s\nwant an error naming --api-ca-file", err, out)
	}

	// SIGHUP with other certificate files: served from the next handshake.
	next, nextKey := ca.Issue(t, "agent-a-next")
	want, err := tls.LoadX509KeyPair(next, nextKey)
	if err != nil {
		t.Fatal(err)
	}
	toml := strings.Replace(a.toml, fmt.Sprintf("cert_file = %q\nkey_file = %q", cert, key), fmt.Sprintf("cert_file = %q\nkey_file = %q", next, nextKey), 1)
	if toml == a.toml {
		t.Fatal("the test's config has no certificate files to replace")
	}
	if err := os.WriteFile(a.config, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	a.signal(syscall.SIGHUP)
	served := func() []byte {
		conn, err := tls.Dial("tcp", a.api, &tls.Config{RootCAs: pool})
		if err != nil {
			return nil
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	etcdtest.Eventually(t, 30*time.Second, func() bool { return bytes.Equal(served(), want.Certificate[0]) },
		"the certificate of the reloaded files is not served")
}
