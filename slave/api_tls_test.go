package slave

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
	"github.com/agentproj/agent/stackconfig"
)

// TestAPIServesHTTPS: with api.cert_file the API answers over TLS to a
// client that trusts the CA, refuses plain HTTP with 400, and shows a
// certificate renewed in place from the next connection on.
func TestAPIServesHTTPS(t *testing.T) {
	ca := testca.New(t)
	cert, key := ca.Issue(t, "agent-1")
	conf := stackconfig.API{CertFile: cert, KeyFile: key, CAFile: ca.CertFile}
	tlsConf, _, err := conf.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	var logs logbuf.Buffer
	reg := prometheus.NewRegistry()
	api, err := NewAPI("127.0.0.1:0", tlsConf, nil, reg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := api.Run(ctx); err != nil {
			t.Errorf("api.Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })

	pool, err := stackconfig.CAPool(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	// A new transport per call: each call is a new TLS handshake.
	served := func() (code int, body string, cert *x509.Certificate, err error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := c.Get("https://" + api.Addr() + "/-/healthy")
		if err != nil {
			return 0, "", nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.TLS.PeerCertificates[0], nil
	}
	code, body, shown, err := served()
	if err != nil || code != 200 || body != "Healthy.\n" || shown.Subject.CommonName != "agent-1" {
		t.Fatalf("GET https /-/healthy = %d %q from %v, %v", code, body, shown, err)
	}
	expiry := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "agent_api_tls_certificate_expiry_timestamp_seconds" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return 0
	}
	if got := expiry(); got != float64(shown.NotAfter.Unix()) {
		t.Fatalf("agent_api_tls_certificate_expiry_timestamp_seconds = %v, want the served certificate's %d", got, shown.NotAfter.Unix())
	}

	// Without the CA the client does not trust it.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("https://" + api.Addr() + "/-/healthy")
	if err == nil {
		resp.Body.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("GET without the CA: %v, want an unknown authority", err)
	}
	// Plain HTTP gets Go's 400, never the API.
	if code, body := get(t, "http://"+api.Addr()+"/-/healthy"); code != http.StatusBadRequest || !strings.Contains(body, "HTTPS server") {
		t.Fatalf("plain GET = %d %q, want 400", code, body)
	}

	// Failed handshakes are counted, and only the first is logged.
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		return testutil.ToFloat64(api.handshakes) >= 2
	}, "failed handshakes not counted")
	if n := strings.Count(logs.String(), "TLS handshake error"); n != 1 {
		t.Fatalf("%d failed handshakes logged, want the first only:\n%s", n, logs.String())
	}

	ca.IssueTo(t, "agent-1-renewed", cert, key)
	_, _, renewed, err := served()
	if err != nil || renewed.Subject.CommonName != "agent-1-renewed" {
		t.Fatalf("after renewal the API shows %v, %v; want the renewed certificate", renewed, err)
	}
	if got := expiry(); got != float64(renewed.NotAfter.Unix()) {
		t.Fatalf("after renewal agent_api_tls_certificate_expiry_timestamp_seconds = %v, want %d", got, renewed.NotAfter.Unix())
	}
}
