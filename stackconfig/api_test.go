package stackconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-viper/mapstructure/v2"
	"github.com/pelletier/go-toml/v2"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/testca"
)

func TestDefaultAPIIsValidOnLoopback(t *testing.T) {
	a := DefaultAPI
	if errs := a.Validate(DefaultConfig.Listen, DefaultConfig.Listen); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
}

func TestLoopbackListen(t *testing.T) {
	for listen, want := range map[string]bool{
		"127.0.0.1:9464": true, "127.9.8.7:1": true, "[::1]:9464": true, "localhost:9464": true, "LOCALHOST:1": true,
		"0.0.0.0:9464": false, ":9464": false, "[::]:9464": false, "10.0.0.1:9464": false,
		"example.com:9464": false, "127.0.0.1": false, "": false,
	} {
		if got := LoopbackListen(listen); got != want {
			t.Errorf("LoopbackListen(%q) = %v, want %v", listen, got, want)
		}
	}
}

func TestAPIValidateNamesFieldAndValue(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	spaced := filepath.Join(dir, "spaced")
	good := filepath.Join(dir, "token")
	notPEM := filepath.Join(dir, "ca.txt")
	for f, content := range map[string]string{empty: " \n", spaced: "a b\n", good: "s3cret\n", notPEM: "not a certificate\n"} {
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca := testca.New(t)
	cert, key := ca.Issue(t, "agent")
	otherCert, _ := ca.Issue(t, "other")
	tlsPair := func(a *API) { a.CertFile, a.KeyFile, a.CAFile = cert, key, ca.CertFile }
	for _, tc := range []struct {
		name   string
		listen string
		mutate func(*API)
		want   string // "" means valid
	}{
		{"no token on loopback", "127.0.0.1:9464", func(*API) {}, ""},
		{"no token on all interfaces", "0.0.0.0:9464", func(*API) {}, `api.token_file: required when listen is not loopback, got listen "0.0.0.0:9464"`},
		{"no token on empty host", ":9464", func(*API) {}, `api.token_file: required when listen is not loopback, got listen ":9464"`},
		{"token on all interfaces, plain HTTP asked for", "0.0.0.0:9464", func(a *API) { a.TokenFile, a.Insecure = good, true }, ""},
		{"plain HTTP on all interfaces", "0.0.0.0:9464", func(a *API) { a.TokenFile = good }, `api.cert_file: required when listen is not loopback (the token would cross the network in the clear), got listen "0.0.0.0:9464"; set api.insecure = true`},
		{"missing token file", "127.0.0.1:9464", func(a *API) { a.TokenFile = filepath.Join(dir, "nope") }, `api.token_file: cannot read "` + filepath.Join(dir, "nope") + `": no such file or directory`},
		{"empty token file", "0.0.0.0:9464", func(a *API) { a.TokenFile = empty }, `api.token_file: "` + empty + `" is empty`},
		{"token with space", "0.0.0.0:9464", func(a *API) { a.TokenFile = spaced }, "must not contain white space"},
		{"bad pattern", "127.0.0.1:9464", func(a *API) { a.AllowedImages = []string{"registry.local/*", "[x"} }, `api.allowed_images[1]: not a valid glob pattern (syntax error in pattern), got "[x"`},
		{"empty pattern", "127.0.0.1:9464", func(a *API) { a.AllowedImages = []string{" "} }, `api.allowed_images[0]: must not be empty, got " "`},
		{"body limit", "127.0.0.1:9464", func(a *API) { a.MaxBodyBytes = 0 }, "api.max_body_bytes: must be > 0, got 0"},
		{"TLS on all interfaces", "0.0.0.0:9464", func(a *API) { a.TokenFile = good; tlsPair(a) }, ""},
		{"TLS on loopback", "127.0.0.1:9464", tlsPair, ""},
		{"key without certificate", "127.0.0.1:9464", func(a *API) { a.KeyFile = key }, `api.cert_file: required with key_file "` + key + `"`},
		{"certificate without key", "127.0.0.1:9464", func(a *API) { tlsPair(a); a.KeyFile = "" }, `api.key_file: required with cert_file "` + cert + `"`},
		{"key of another certificate", "127.0.0.1:9464", func(a *API) { tlsPair(a); a.CertFile = otherCert }, `api.cert_file: "` + otherCert + `" with key_file "` + key + `": tls: private key does not match public key`},
		{"certificate without CA", "127.0.0.1:9464", func(a *API) { tlsPair(a); a.CAFile = "" }, "api.ca_file: required with cert_file"},
		{"CA without certificate", "127.0.0.1:9464", func(a *API) { a.CAFile = ca.CertFile }, `api.ca_file: set without cert_file, got "` + ca.CertFile + `"`},
		{"relative CA", "127.0.0.1:9464", func(a *API) { tlsPair(a); a.CAFile = "ca.pem" }, `api.ca_file: must be an absolute path (Prometheus reads it), got "ca.pem"`},
		{"CA that is no certificate", "127.0.0.1:9464", func(a *API) { tlsPair(a); a.CAFile = notPEM }, "api.ca_file: " + notPEM + ": no PEM certificate in it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := DefaultAPI
			tc.mutate(&a)
			err := errors.Join(a.Validate(tc.listen, "")...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestReadTokenTrims(t *testing.T) {
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte("\n  s3cret\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := ReadToken(f); err != nil || tok != "s3cret" {
		t.Fatalf("ReadToken = %q, %v", tok, err)
	}
}

// TestAPIDecodesFromTOML decodes an [api] section the way the loader does,
// on top of the defaults, rejecting unknown keys.
func TestAPIDecodesFromTOML(t *testing.T) {
	const doc = `
token_file = "/etc/agent/api-token"
allowed_images = ["registry.example/apps/*", "busybox:1.*"]
`
	var raw map[string]any
	if err := toml.Unmarshal([]byte(doc), &raw); err != nil {
		t.Fatal(err)
	}
	a := DefaultAPI
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{Result: &a, ErrorUnused: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(raw); err != nil {
		t.Fatal(err)
	}
	if a.TokenFile != "/etc/agent/api-token" || len(a.AllowedImages) != 2 || a.MaxBodyBytes != DefaultAPI.MaxBodyBytes {
		t.Fatalf("decoded %+v", a)
	}
	raw["tokenfile"] = "x"
	if err := dec.Decode(raw); err == nil {
		t.Fatal("unknown key accepted")
	}
}
