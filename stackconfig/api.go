package stackconfig

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// API configures the manager API of every agent (POST/GET/DELETE
// /api/v1/apps): who may call it and what it may start.
type API struct {
	// TokenFile holds the bearer token every apps request must carry. It is
	// required when listen is not a loopback address.
	TokenFile string `toml:"token_file" mapstructure:"token_file"`
	// AllowedImages are glob patterns (path.Match: '*' does not cross '/')
	// that an app's image must match. Empty: every image is refused.
	AllowedImages []string `toml:"allowed_images" mapstructure:"allowed_images"`
	// MaxBodyBytes bounds one request body; larger ones get 413.
	MaxBodyBytes int64 `toml:"max_body_bytes" mapstructure:"max_body_bytes"`
	// CertFile and KeyFile, when set, make the API serve HTTPS on listen
	// with this certificate (renewed files are taken at the next
	// handshake). It must name the advertised address (an IP or DNS
	// subject alternative name), the one Prometheus and other agents use.
	CertFile string `toml:"cert_file" mapstructure:"cert_file"`
	KeyFile  string `toml:"key_file" mapstructure:"key_file"`
	// CAFile is the CA that signed the agents' API certificates; required
	// with CertFile. The master's Prometheus trusts it for the relay and
	// the agents' monitor targets.
	CAFile string `toml:"ca_file" mapstructure:"ca_file"`
	// Insecure allows plain HTTP when listen is not loopback, where the
	// token would cross the network in the clear (a private network, or a
	// TLS proxy in front).
	Insecure bool `toml:"insecure" mapstructure:"insecure"`
}

// TLS reports whether the API serves HTTPS.
func (a *API) TLS() bool { return a.CertFile != "" }

// Scheme is the API's URL scheme, "https" or "http".
func (a *API) Scheme() string {
	if a.TLS() {
		return "https"
	}
	return "http"
}

// DefaultAPI holds the value of every api key that is not set.
var DefaultAPI = API{MaxBodyBytes: 64 << 10}

// Validate checks every api key against the agent's listen address and the
// address it advertises ("": not checked against the certificate) and
// returns all problems at once, each naming the key and the bad value.
func (a *API) Validate(listen, advertise string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("api."+format, args...)) }

	if a.TokenFile == "" {
		if !LoopbackListen(listen) {
			bad("token_file: required when listen is not loopback, got listen %q", listen)
		}
	} else if _, err := ReadToken(a.TokenFile); err != nil {
		bad("token_file: %v", err)
	}
	a.validateTLS(listen, advertise, bad)
	for i, p := range a.AllowedImages {
		if strings.TrimSpace(p) == "" {
			bad("allowed_images[%d]: must not be empty, got %q", i, p)
		} else if _, err := path.Match(p, ""); err != nil {
			bad("allowed_images[%d]: not a valid glob pattern (%v), got %q", i, err, p)
		}
	}
	if a.MaxBodyBytes <= 0 {
		bad("max_body_bytes: must be > 0, got %d", a.MaxBodyBytes)
	}
	return errs
}

// ServerTLS is the API's server TLS config and the key pair it serves, nil
// without TLS. The certificate is read again when its files change, and
// the pair can be pointed at other files (KeyPairFiles).
func (a *API) ServerTLS() (*tls.Config, *KeyPairFiles, error) {
	if !a.TLS() {
		return nil, nil, nil
	}
	pair, err := LoadKeyPair(a.CertFile, a.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("api.cert_file: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: pair.GetCertificate}, pair, nil
}

func (a *API) validateTLS(listen, advertise string, bad func(string, ...any)) {
	switch {
	case a.CertFile == "" && a.KeyFile != "":
		bad("cert_file: required with key_file %q", a.KeyFile)
	case a.CertFile != "" && a.KeyFile == "":
		bad("key_file: required with cert_file %q", a.CertFile)
	case a.CertFile != "":
		pair, err := tls.LoadX509KeyPair(a.CertFile, a.KeyFile)
		if err != nil {
			bad("cert_file: %q with key_file %q: %v", a.CertFile, a.KeyFile, err)
			break
		}
		// Prometheus and the other agents dial the advertised address:
		// they would refuse a certificate that does not name it.
		if host, _, err := net.SplitHostPort(advertise); err == nil && pair.Leaf != nil {
			if err := pair.Leaf.VerifyHostname(host); err != nil {
				bad("cert_file: %q is not valid for the advertised address %s (%v), so Prometheus and the other agents would refuse it; set advertise to a name or address it has, or issue one for %s", a.CertFile, host, err, host)
			}
		}
	case !a.Insecure && !LoopbackListen(listen):
		bad("cert_file: required when listen is not loopback (the token would cross the network in the clear), got listen %q; set api.insecure = true to serve plain HTTP anyway", listen)
	}
	switch {
	case a.CertFile != "" && a.CAFile == "":
		bad("ca_file: required with cert_file (the CA that signed the agents' API certificates, for Prometheus)")
	case a.CAFile != "" && a.CertFile == "":
		bad("ca_file: set without cert_file, got %q", a.CAFile)
	case a.CAFile != "":
		if !filepath.IsAbs(a.CAFile) {
			bad("ca_file: must be an absolute path (Prometheus reads it), got %q", a.CAFile)
		} else if _, err := CAPool(a.CAFile); err != nil {
			bad("ca_file: %v", err)
		}
	}
}

// VerifyServerName checks that the API's certificate is valid for
// serverName, the name its clients check it against (in Kubernetes mode
// the Service's, for every pod: see releases.Input.ServerName).
func (a *API) VerifyServerName(serverName string) error {
	pair, err := tls.LoadX509KeyPair(a.CertFile, a.KeyFile)
	if err != nil {
		return fmt.Errorf("api.cert_file: %q with key_file %q: %w", a.CertFile, a.KeyFile, err)
	}
	if err := pair.Leaf.VerifyHostname(serverName); err != nil {
		return fmt.Errorf("api.cert_file: %q is not valid for %s (%w), the name the metrics stack checks every agent's certificate against; issue one with that DNS name", a.CertFile, serverName, err)
	}
	return nil
}

// ReadToken reads a bearer token file: its content without surrounding
// white space, which must not be empty.
func ReadToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("cannot read %q: %w", file, errors.Unwrap(err))
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%q is empty", file)
	}
	if strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", fmt.Errorf("%q: the token must not contain white space or control characters", file)
	}
	return tok, nil
}

// LoopbackListen reports whether a host:port listen address accepts
// connections from this host only: 127.0.0.0/8, ::1 or localhost. An empty
// or unspecified host (":9464", "0.0.0.0:9464") listens everywhere.
func LoopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	return err == nil && LoopbackHost(host)
}

// LoopbackHost reports whether host is localhost or a loopback address.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
