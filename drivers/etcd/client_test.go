package etcd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// writeCert writes a PEM certificate and key signed by parent (self-signed
// when parent is nil) and returns them with the paths.
func writeCert(t *testing.T, dir, name string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		IsCA:        isCA, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	certPath, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, certPath, keyPath
}

// An external etcd with client-certificate TLS and user/password auth: the
// agent's client reaches it with --etcd-ca-file/--etcd-cert-file/
// --etcd-key-file and --etcd-username/--etcd-password-file, and is refused
// without them.
func TestClientTLSAndAuth(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caPath, _ := writeCert(t, dir, "ca", true, nil, nil)
	_, _, srvCert, srvKey := writeCert(t, dir, "server", false, ca, caKey)
	_, _, cliCert, cliKey := writeCert(t, dir, "client", false, ca, caKey)

	curl, _ := url.Parse("https://" + etcdtest.FreeAddr(t))
	purl, _ := url.Parse("http://" + etcdtest.FreeAddr(t))
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir, cfg.LogLevel = "tls", filepath.Join(dir, "data"), "error"
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*curl}, []url.URL{*curl}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*purl}, []url.URL{*purl}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: srvCert, KeyFile: srvKey, TrustedCAFile: caPath, ClientCertAuth: true}
	// Every password etcd stores or checks costs a bcrypt: at the default
	// cost (10) that is 1-5 s of CPU under -race on a loaded machine, and
	// this test makes three (two users, one login; more when the client
	// logs in again). The least cost etcd accepts (bcrypt.MinCost) tests
	// the same auth path at a 64th of the price.
	cfg.BcryptCost = 4
	srv, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	select {
	case <-srv.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("TLS etcd not ready")
	}

	ctx := context.Background()
	// A generous dial timeout: TLS handshakes and the login are slow
	// under -race on a loaded machine.
	tlsOnly := etcd.ClientConfig{Endpoints: []string{curl.String()}, DialTimeout: 20 * time.Second, CAFile: caPath, CertFile: cliCert, KeyFile: cliKey}
	root, err := etcd.NewClient(tlsOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, step := range []func() error{
		func() error { _, err := root.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := root.UserAdd(ctx, "agent", "s3cret"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "agent", "root"); return err },
		func() error { _, err := root.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("set up auth: %v", err)
		}
	}

	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withAuth := tlsOnly
	withAuth.Username, withAuth.PasswordFile = "agent", pw
	cli, err := etcd.NewClient(withAuth)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cli.Put(rctx, "/agent/tls-test", "ok"); err != nil {
		t.Fatalf("client with TLS and a password: %v", err)
	}

	// Without a client certificate the TLS handshake is refused.
	noCert := etcd.ClientConfig{Endpoints: []string{curl.String()}, DialTimeout: time.Second, CAFile: caPath, Username: "agent", PasswordFile: pw}
	bad, err := etcd.NewClient(noCert)
	if err == nil {
		defer bad.Close()
		qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
		defer qcancel()
		if _, err := bad.Get(qctx, "/agent/tls-test"); err == nil {
			t.Fatal("a client without a certificate was served")
		}
	}
	// With auth on, a client without the password is refused.
	anon, err := etcd.NewClient(tlsOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
	defer qcancel()
	if _, err := anon.Get(qctx, "/agent/tls-test"); err == nil {
		t.Fatal("a client without user and password was served with auth enabled")
	}
}

// A request etcd does not answer fails with "context deadline exceeded"
// only; Explain names the endpoint and the cause a person can act on.
func TestExplainUnreachable(t *testing.T) {
	closed := "http://" + etcdtest.FreeAddr(t) // nothing listens
	closed2 := "http://" + etcdtest.FreeAddr(t)
	silentLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silentLn.Close()
	go func() { // accepts and never speaks: not an etcd
		for {
			c, err := silentLn.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	silent := "http://" + silentLn.Addr().String()

	request := func(endpoints ...string) error {
		cli, err := etcd.NewClient(etcd.ClientConfig{Endpoints: endpoints, DialTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = cli.Get(ctx, "/x")
		if err == nil {
			t.Fatalf("%v answered", endpoints)
		}
		return etcd.Explain(context.Background(), endpoints, nil, time.Second, err)
	}
	for _, tc := range []struct {
		endpoints []string
		want      string
	}{
		{[]string{closed}, "etcd at " + closed + " is unreachable: connection refused (nothing listens there)"},
		{[]string{silent}, "etcd at " + silent + " accepts connections but did not answer: context deadline exceeded"},
		{[]string{closed, closed2}, "etcd is unreachable: " + closed + ": connection refused (nothing listens there); " + closed2 + ": connection refused (nothing listens there)"},
	} {
		if err := request(tc.endpoints...); err == nil || err.Error() != tc.want {
			t.Errorf("%v:\n got %v\nwant %s", tc.endpoints, err, tc.want)
		}
	}
	// A dial that runs out of time is called a timeout.
	if err := etcd.Explain(context.Background(), []string{closed}, nil, time.Nanosecond, context.DeadlineExceeded); err == nil ||
		err.Error() != "etcd at "+closed+" is unreachable: no answer within 1ns (timeout)" {
		t.Errorf("timeout: got %v", err)
	}
	// What etcd itself answered, and a shutdown, are left as they are.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := etcd.Explain(ctx, []string{closed}, nil, time.Second, context.Canceled); err == nil || err.Error() != context.Canceled.Error() {
		t.Errorf("cancelled: got %v", err)
	}
	other := errors.New("etcdserver: permission denied")
	if err := etcd.Explain(context.Background(), []string{closed}, nil, time.Second, other); err == nil || err.Error() != other.Error() {
		t.Errorf("an answer of etcd: got %v", err)
	}
}

// While etcd is away the client keeps dialling it, never waiting longer
// than RejoinMax between attempts (gRPC's default backoff grows to two
// minutes): after a long outage an agent is back within RejoinMax of etcd,
// the time RemovalHold keeps its targets for it. The "etcd" here accepts
// and hangs up at once, as a restarting server does, and counts the dials.
func TestClientRedialsWithinRejoinMax(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dials := make(chan time.Time, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dials <- time.Now()
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	cli, err := etcd.NewClient(etcd.ClientConfig{Endpoints: []string{"http://" + ln.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	const watch = 20 * time.Second // gRPC's default reaches a 6.5 s ±20% delay within 19 s
	ctx, cancel := context.WithTimeout(context.Background(), watch)
	defer cancel()
	go func() { _, _ = cli.Get(ctx, "/x") }() // a caller waiting for etcd, as the agent's are
	var last time.Time
	longest := time.Duration(0)
loop:
	for {
		select {
		case at := <-dials:
			if !last.IsZero() {
				longest = max(longest, at.Sub(last))
			}
			last = at
		case <-ctx.Done():
			break loop
		}
	}
	if last.IsZero() {
		t.Fatal("the client never dialled")
	}
	if longest > etcd.RejoinMax+500*time.Millisecond {
		t.Fatalf("the client waited %s between two dials of an etcd that is away, want at most RejoinMax %s", longest, etcd.RejoinMax)
	}
	t.Logf("longest wait between dials: %s", longest)
}
