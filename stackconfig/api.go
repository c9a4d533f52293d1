package stackconfig

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path"
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
}

// DefaultAPI holds the value of every api key that is not set.
var DefaultAPI = API{MaxBodyBytes: 64 << 10}

// Validate checks every api key against the agent's listen address and
// returns all problems at once, each naming the key and the bad value.
func (a *API) Validate(listen string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("api."+format, args...)) }

	if a.TokenFile == "" {
		if !LoopbackListen(listen) {
			bad("token_file: required when listen is not loopback, got listen %q", listen)
		}
	} else if _, err := ReadToken(a.TokenFile); err != nil {
		bad("token_file: %v", err)
	}
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
