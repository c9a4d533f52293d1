package stackconfig_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
	"github.com/agentproj/agent/stackconfig"
)

func TestAPITLSValidateNamesFieldAndValue(t *testing.T) {
	ca := testca.New(t)
	cert, key := ca.Issue(t, "agent")
	otherCert, _ := ca.Issue(t, "other")
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		listen string
		api    stackconfig.API
		want   string // "" means valid
	}{
		{"TLS on all interfaces", "0.0.0.0:9464", stackconfig.API{CertFile: cert, KeyFile: key, CAFile: ca.CertFile}, ""},
		{"TLS on loopback", "127.0.0.1:9464", stackconfig.API{CertFile: cert, KeyFile: key, CAFile: ca.CertFile}, ""},
		{"key without certificate", "127.0.0.1:9464", stackconfig.API{KeyFile: key}, `api.cert_file: required with key_file "` + key + `"`},
		{"certificate without key", "127.0.0.1:9464", stackconfig.API{CertFile: cert, CAFile: ca.CertFile}, `api.key_file: required with cert_file "` + cert + `"`},
		{"key of another certificate", "127.0.0.1:9464", stackconfig.API{CertFile: otherCert, KeyFile: key, CAFile: ca.CertFile}, `api.cert_file: "` + otherCert + `" with key_file "` + key + `": tls: private key does not match public key`},
		{"certificate without CA", "127.0.0.1:9464", stackconfig.API{CertFile: cert, KeyFile: key}, "api.ca_file: required with cert_file"},
		{"CA without certificate", "127.0.0.1:9464", stackconfig.API{CAFile: ca.CertFile}, `api.ca_file: set without cert_file, got "` + ca.CertFile + `"`},
		{"relative CA", "127.0.0.1:9464", stackconfig.API{CertFile: cert, KeyFile: key, CAFile: "ca.pem"}, `api.ca_file: must be an absolute path (Prometheus reads it), got "ca.pem"`},
		{"CA that is no certificate", "127.0.0.1:9464", stackconfig.API{CertFile: cert, KeyFile: key, CAFile: notPEM}, "api.ca_file: " + notPEM + ": no PEM certificate in it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.api
			a.MaxBodyBytes, a.TokenFile = stackconfig.DefaultAPI.MaxBodyBytes, token
			err := errors.Join(a.Validate(tc.listen)...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

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

	newCert, newKey := ca.Issue(t, "agent-renewed")
	copyFile(t, newCert, cert)
	// The certificate is renewed but not yet its key: it does not load.
	if got := pair.Get().Certificate[0]; !bytes.Equal(got, first) {
		t.Fatal("a certificate whose key is not yet written replaced the last good pair")
	}
	copyFile(t, newKey, key)
	renewed := pair.Get().Certificate[0]
	if bytes.Equal(renewed, first) {
		t.Fatal("the renewed certificate is not taken")
	}
	if want, _ := stackconfig.LoadKeyPair(newCert, newKey); !bytes.Equal(renewed, want.Get().Certificate[0]) {
		t.Fatal("Get gives neither the old nor the renewed certificate")
	}

	if _, err := stackconfig.LoadKeyPair(cert, filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("LoadKeyPair of a missing key: no error")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The API's certificate must be valid for the advertised address, the one
// Prometheus and the other agents dial.
func TestAPICertificateMustNameTheAdvertisedAddress(t *testing.T) {
	ca := testca.New(t) // certificates for 127.0.0.1, ::1 and localhost
	cert, key := ca.Issue(t, "agent")
	for _, tc := range []struct{ advertise, want string }{
		{"", ""},
		{"localhost:9464", ""},
		{"[::1]:9464", ""},
		{"10.0.0.9:9464", `api.cert_file: "` + cert + `" is not valid for the advertised address 10.0.0.9 (x509: certificate is valid for 127.0.0.1, ::1, not 10.0.0.9)`},
		{"host-9.internal:9464", "is not valid for the advertised address host-9.internal (x509: certificate is valid for localhost, not host-9.internal)"},
	} {
		c := stackconfig.DefaultConfig
		c.Node, c.DataDir, c.Advertise = "n1", t.TempDir(), tc.advertise
		c.API.CertFile, c.API.KeyFile, c.API.CAFile = cert, key, ca.CertFile
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("advertise %q: %v, want no error", tc.advertise, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("advertise %q: %v, want it to contain %q", tc.advertise, err, tc.want)
		}
	}
}
