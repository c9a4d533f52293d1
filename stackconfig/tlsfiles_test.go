package stackconfig_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
	"github.com/agentproj/agent/stackconfig"
)

// TestKeyPairFilesFollowsRenewal renews a certificate in place: the next Get
// gives the new one; a half-written renewal leaves the last good one in use.
func TestKeyPairFilesFollowsRenewal(t *testing.T) {
	ca := testca.New(t)
	cert, key := ca.Issue(t, "agent")
	pair, err := stackconfig.LoadKeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	first := pair.Get().Certificate[0]

	// Half written: the key does not load (nor match the certificate).
	if err := os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := pair.Get().Certificate[0]; !bytes.Equal(got, first) {
		t.Fatal("a pair that does not load replaced the last good one")
	}
	ca.IssueTo(t, "agent-renewed", cert, key)
	renewed := pair.Get().Certificate[0]
	if bytes.Equal(renewed, first) {
		t.Fatal("the renewed certificate is not taken")
	}
	if want, _ := stackconfig.LoadKeyPair(cert, key); !bytes.Equal(renewed, want.Get().Certificate[0]) {
		t.Fatal("Get gives neither the old nor the renewed certificate")
	}

	if _, err := stackconfig.LoadKeyPair(cert, filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("LoadKeyPair of a missing key: no error")
	}
}

// SetFiles points the pair at other files (a reload that named them),
// and keeps the one it has when they do not load.
func TestKeyPairFilesSetFiles(t *testing.T) {
	ca := testca.New(t)
	cert, key := ca.Issue(t, "agent")
	other, otherKey := ca.Issue(t, "agent-other")
	pair, err := stackconfig.LoadKeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	first := pair.Get().Certificate[0]
	if err := pair.SetFiles(other, filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("SetFiles with a missing key: no error")
	}
	if c, k := pair.Files(); c != cert || k != key || !bytes.Equal(pair.Get().Certificate[0], first) {
		t.Fatalf("a pair that does not load replaced the one served: files %s %s", c, k)
	}
	if err := pair.SetFiles(other, otherKey); err != nil {
		t.Fatal(err)
	}
	want, _ := stackconfig.LoadKeyPair(other, otherKey)
	served := pair.Get().Certificate[0]
	if c, k := pair.Files(); c != other || k != otherKey || !bytes.Equal(served, want.Get().Certificate[0]) {
		t.Fatalf("the new files are not served: files %s %s", c, k)
	}
	// Renewed in place at the new path: followed as before.
	ca.IssueTo(t, "agent-other-renewed", other, otherKey)
	if bytes.Equal(pair.Get().Certificate[0], served) {
		t.Fatal("a renewal at the new path is not taken")
	}
}

// The API's certificate must be valid for the advertised address, the one
// Prometheus and the other agents dial.
func TestAPICertificateMustNameTheAdvertisedAddress(t *testing.T) {
	ca := testca.New(t) // certificates for 127.0.0.1, ::1 and localhost
	cert, key := ca.Issue(t, "agent")
	for _, tc := range []struct{ advertise, driver, want string }{
		{"", "", ""},
		{"localhost:9464", "", ""},
		{"[::1]:9464", "", ""},
		{"10.0.0.9:9464", "", `api.cert_file: "` + cert + `" is not valid for the advertised address 10.0.0.9 (x509: certificate is valid for 127.0.0.1, ::1, not 10.0.0.9)`},
		{"host-9.internal:9464", "", "is not valid for the advertised address host-9.internal (x509: certificate is valid for localhost, not host-9.internal)"},
		// Kubernetes mode: the pod's address is not what clients check
		// (API.VerifyServerName, at start, checks the Service's name).
		{"10.0.0.9:9464", "helm", ""},
	} {
		c := stackconfig.DefaultConfig
		c.Node, c.DataDir, c.Advertise, c.Stack.Driver = "n1", t.TempDir(), tc.advertise, tc.driver
		c.API.CertFile, c.API.KeyFile, c.API.CAFile = cert, key, ca.CertFile
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("advertise %q, driver %q: %v, want no error", tc.advertise, tc.driver, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("advertise %q, driver %q: %v, want it to contain %q", tc.advertise, tc.driver, err, tc.want)
		}
	}
}

// In Kubernetes mode one certificate serves every pod: it must name the
// Service, whatever the pods' addresses.
func TestAPIVerifyServerName(t *testing.T) {
	ca := testca.New(t)
	cert, key := ca.Issue(t, "agent", "agent.agents.svc")
	api := stackconfig.API{CertFile: cert, KeyFile: key, CAFile: ca.CertFile}
	if err := api.VerifyServerName("agent.agents.svc"); err != nil {
		t.Fatalf("the Service's name: %v", err)
	}
	err := api.VerifyServerName("agent.other.svc")
	if want := `api.cert_file: "` + cert + `" is not valid for agent.other.svc (x509: certificate is valid for localhost, agent.agents.svc, not agent.other.svc)`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("another Service's name: %v, want it to contain %q", err, want)
	}
}
