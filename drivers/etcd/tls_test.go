package etcd_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
)

// tlsMember is an agent's member on free loopback ports, serving TLS with
// a certificate of ca.
func tlsMember(t *testing.T, ca *testca.CA, name string) etcd.EmbedConfig {
	cfg := memberConfig(t, name)
	cfg.ClientURL = strings.Replace(cfg.ClientURL, "http://", "https://", 1)
	cfg.PeerURL = strings.Replace(cfg.PeerURL, "http://", "https://", 1)
	cfg.CertFile, cfg.KeyFile = ca.Issue(t, name)
	cfg.TrustedCAFile = ca.CertFile
	return cfg
}

// tlsClient is a client that trusts trust and shows cert/key (none when
// empty), as an agent configured with etcd.ca_file, cert_file and key_file.
func tlsClient(t *testing.T, endpoint, trust, cert, key string) *clientv3.Client {
	cli, err := etcd.NewClient(etcd.ClientConfig{Endpoints: []string{endpoint}, DialTimeout: time.Second,
		CAFile: trust, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func put(cli *clientv3.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := cli.Put(ctx, "/agent/probe", "x")
	return err
}

func TestEmbeddedTLSServesOnlyClientsWithACertificateOfTheCA(t *testing.T) {
	ca, other := testca.New(t), testca.New(t)
	cfg := tlsMember(t, ca, "m")
	srv := startMember(t, cfg)
	if eps := srv.Endpoints(); len(eps) != 1 || !strings.HasPrefix(eps[0], "https://") {
		t.Fatalf("endpoints = %v, want one https:// URL", eps)
	}

	cert, key := ca.Issue(t, "agent")
	if err := put(tlsClient(t, cfg.ClientURL, ca.CertFile, cert, key)); err != nil {
		t.Fatalf("a client with a certificate of the CA: %v", err)
	}
	otherCert, otherKey := other.Issue(t, "intruder")
	for name, cli := range map[string]*clientv3.Client{
		"no certificate":                  tlsClient(t, cfg.ClientURL, ca.CertFile, "", ""),
		"a certificate of another CA":     tlsClient(t, cfg.ClientURL, ca.CertFile, otherCert, otherKey),
		"plain http to the TLS port":      tlsClient(t, strings.Replace(cfg.ClientURL, "https://", "http://", 1), "", "", ""),
		"a server the client won't trust": tlsClient(t, cfg.ClientURL, other.CertFile, otherCert, otherKey),
	} {
		if err := put(cli); err == nil {
			t.Errorf("%s: the put was taken", name)
		}
	}
	// The member's peer port asks for a certificate too: it answers
	// /members to another member, not to anyone else.
	if code, err := getPeer(t, cfg.PeerURL+"/members", ca.CertFile, cert, key); err != nil || code != http.StatusOK {
		t.Fatalf("the peer port to a holder of a certificate of the CA: status %d, %v", code, err)
	}
	if code, err := getPeer(t, cfg.PeerURL+"/members", ca.CertFile, "", ""); err == nil {
		t.Errorf("the peer port answered %d to a client without a certificate", code)
	}
}

// getPeer GETs url with a TLS client that trusts caFile and shows
// cert/key (none when empty).
func getPeer(t *testing.T, url, caFile, cert, key string) (int, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig(t, caFile, cert, key)}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// tlsConfig is the TLS config of an etcd client that trusts caFile and
// shows cert/key (none when empty).
func tlsConfig(t *testing.T, caFile, cert, key string) *tls.Config {
	conf, err := etcd.ClientConfig{CAFile: caFile, CertFile: cert, KeyFile: key}.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

func TestClusterGrowsOverTLS(t *testing.T) {
	ca := testca.New(t)
	founder := tlsMember(t, ca, "founder")
	startMember(t, founder)
	cert, key := ca.Issue(t, "admin")
	cli := tlsClient(t, founder.ClientURL, ca.CertFile, cert, key)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := etcd.SetGrowth(ctx, cli, growPrefix, etcd.Growth{Members: 3}); err != nil {
		t.Fatal(err)
	}

	// An agent whose member would serve plain http stays a client: its
	// peer URL could not talk to the members'.
	plain := newJoiner(t, "plain", founder.ClientURL)
	pcert, pkey := ca.Issue(t, "plain")
	plain.Client = tlsClient(t, founder.ClientURL, ca.CertFile, pcert, pkey)
	if plain.join(t) != nil {
		t.Fatal("a member without TLS joined members with TLS")
	}
	if !strings.Contains(plain.log.String(), "differ in TLS") {
		t.Errorf("the plain joiner's log does not say why it stays a client:\n%s", plain.log)
	}

	var srvs []*etcd.Embedded
	for _, name := range []string{"a", "b"} {
		j := newJoiner(t, name, founder.ClientURL)
		j.Member = tlsMember(t, ca, name)
		j.Client = tlsClient(t, founder.ClientURL, ca.CertFile, j.Member.CertFile, j.Member.KeyFile)
		srv := j.join(t)
		if srv == nil {
			t.Fatalf("%s did not become a member; log:\n%s", name, j.log)
		}
		srvs = append(srvs, srv)
	}
	if v := members(t, cli); !slices.Equal(v.names, []string{"a", "b", "founder"}) || v.total != 3 {
		t.Fatalf("members = %+v, want a, b and founder voting, nothing else", v)
	}
	// Writes commit through a new member's own client URL, with TLS.
	if err := put(tlsClient(t, srvs[0].Endpoints()[0], ca.CertFile, cert, key)); err != nil {
		t.Fatalf("a put through a's member: %v", err)
	}
}

// A request that a TLS etcd refuses fails with "context deadline exceeded"
// only; Explain names what the TLS session lacked, and the setting.
func TestExplainNamesTheTLSRefusal(t *testing.T) {
	ca, other := testca.New(t), testca.New(t)
	cfg := tlsMember(t, ca, "m")
	startMember(t, cfg)
	plain := etcdtest.Start(t)
	cert, key := ca.Issue(t, "agent")
	otherCert, otherKey := other.Issue(t, "intruder")
	for _, tc := range []struct {
		name string
		cc   etcd.ClientConfig
		want string
	}{
		{"no client certificate", etcd.ClientConfig{Endpoints: []string{cfg.ClientURL}, CAFile: ca.CertFile},
			"etcd at " + cfg.ClientURL + " is unreachable: TLS: it asks for a client certificate (etcd.cert_file and etcd.key_file)"},
		{"a certificate of another CA", etcd.ClientConfig{Endpoints: []string{cfg.ClientURL}, CAFile: ca.CertFile, CertFile: otherCert, KeyFile: otherKey},
			"etcd at " + cfg.ClientURL + " is unreachable: TLS: it refused this client's certificate (not signed by a CA it trusts?)"},
		{"a server of another CA", etcd.ClientConfig{Endpoints: []string{cfg.ClientURL}, CAFile: other.CertFile, CertFile: cert, KeyFile: key},
			"etcd at " + cfg.ClientURL + " is unreachable: TLS: its certificate is not signed by a CA this client trusts (etcd.ca_file)"},
		{"https:// to a plain etcd", etcd.ClientConfig{Endpoints: []string{strings.Replace(plain.Endpoint(), "http://", "https://", 1)}, CAFile: ca.CertFile, CertFile: cert, KeyFile: key},
			"is unreachable: TLS: it does not answer a TLS handshake (an http:// endpoint?)"},
	} {
		tc.cc.DialTimeout = time.Second
		cli, err := etcd.NewClient(tc.cc)
		if err != nil {
			t.Fatal(err)
		}
		putErr := put(cli)
		cli.Close()
		if putErr == nil {
			t.Fatalf("%s: the put was taken", tc.name)
		}
		tlsConf, err := tc.cc.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		if err := etcd.Explain(context.Background(), tc.cc.Endpoints, tlsConf, time.Second, putErr); err == nil || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant …%s", tc.name, err, tc.want)
		}
	}
}

// Certificates renewed in place (as cert-manager or a cron job does) are
// taken from the next connection on, with no restart: the agent's client
// shows its renewed certificate, and the member serves its renewed one.
func TestRenewedCertificatesAreTakenWithoutARestart(t *testing.T) {
	ca, other := testca.New(t), testca.New(t)
	cfg := tlsMember(t, ca, "m")
	startMember(t, cfg)

	// The client's certificate on disk is one etcd refuses (say, expired)
	// until it is renewed.
	dir := t.TempDir()
	cert, key := dir+"/client.pem", dir+"/client-key.pem"
	other.IssueTo(t, "client", cert, key)
	cli := tlsClient(t, cfg.ClientURL, ca.CertFile, cert, key)
	if err := put(cli); err == nil {
		t.Fatal("a certificate of another CA was taken")
	}
	ca.IssueTo(t, "client-renewed", cert, key)
	etcdtest.Eventually(t, 30*time.Second, func() bool { return put(cli) == nil },
		"a put with the renewed client certificate, by the same client")

	served := func() string {
		c, err := tls.Dial("tcp", strings.TrimPrefix(cfg.ClientURL, "https://"), tlsConfig(t, ca.CertFile, "", ""))
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "m" {
		t.Fatalf("the member serves %q, want its certificate m", got)
	}
	ca.IssueTo(t, "m-renewed", cfg.CertFile, cfg.KeyFile)
	etcdtest.Eventually(t, 10*time.Second, func() bool { return served() == "m-renewed" },
		"the member to serve its renewed certificate")
}
