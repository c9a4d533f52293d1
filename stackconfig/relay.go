package stackconfig

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Relay configures the metric relay: the master's Prometheus remote-writes
// to it, and it forwards, through a disk queue, to every upstream.
type Relay struct {
	// Upstream lists the remote-write endpoints (the manager); each gets its
	// own cursors and forwarders (fan-out). Empty: the relay is disabled. An
	// entry is a URL or a table { url, protocol, name_escaping }.
	Upstream []RelayUpstream `toml:"upstream" mapstructure:"upstream"`
	// NameValidation is how metric and label names are checked on the way
	// in: "utf8" (any UTF-8, as Prometheus 3) or "legacy"
	// ([a-zA-Z_][a-zA-Z0-9_]*, as Prometheus 2).
	NameValidation string `toml:"name_validation" mapstructure:"name_validation"`
	// Headers are added to every upstream request.
	Headers map[string]string `toml:"headers" mapstructure:"headers"`
	// BearerTokenFile is read before each request (so rotation works).
	BearerTokenFile string         `toml:"bearer_token_file" mapstructure:"bearer_token_file"`
	BasicAuth       RelayBasicAuth `toml:"basic_auth" mapstructure:"basic_auth"`
	TLS             RelayTLS       `toml:"tls" mapstructure:"tls"`
	// ExternalLabels are added to every series that lacks them; the agent
	// defaults them to cluster=<cluster> (see WithAgentDefaults).
	ExternalLabels map[string]string `toml:"external_labels" mapstructure:"external_labels"`
	// QueueDir holds the queue; empty: <data_dir>/relay.
	QueueDir string `toml:"queue_dir" mapstructure:"queue_dir"`
	// QueueMaxBytes bounds the queue on disk; when full, the oldest data is
	// dropped (and counted).
	QueueMaxBytes int64 `toml:"queue_max_bytes" mapstructure:"queue_max_bytes"`
	// QueueMinFreeBytes is what the queue leaves free on its filesystem:
	// when the disk fills up, by the queue or anything else, the oldest
	// data is dropped (and counted) as at queue_max_bytes. 0: no such limit.
	QueueMinFreeBytes int64 `toml:"queue_min_free_bytes" mapstructure:"queue_min_free_bytes"`
	// MaxRequestBytes bounds one incoming request, compressed and decoded;
	// larger ones get 413.
	MaxRequestBytes int64 `toml:"max_request_bytes" mapstructure:"max_request_bytes"`
	// MaxSamplesPerSend bounds one upstream request.
	MaxSamplesPerSend int `toml:"max_samples_per_send" mapstructure:"max_samples_per_send"`
	// FlushDeadline is how long a forwarder waits for more data to fill a
	// request before sending what it has.
	FlushDeadline time.Duration `toml:"flush_deadline" mapstructure:"flush_deadline"`
	// Concurrency is the number of shards: series are split by label hash,
	// each shard sends in order, one request at a time, per upstream.
	Concurrency int `toml:"concurrency" mapstructure:"concurrency"`
	// MinBackoff and MaxBackoff bound the retry delay (doubled per failure,
	// with jitter).
	MinBackoff time.Duration `toml:"min_backoff" mapstructure:"min_backoff"`
	MaxBackoff time.Duration `toml:"max_backoff" mapstructure:"max_backoff"`
	// RemoteTimeout bounds one upstream request.
	RemoteTimeout time.Duration `toml:"remote_timeout" mapstructure:"remote_timeout"`
}

// RelayUpstream is one remote-write endpoint the relay forwards to.
type RelayUpstream struct {
	URL string `toml:"url" mapstructure:"url"`
	// Protocol is the remote-write version sent: "auto" (the version the
	// data came in, 2.0 falling back to 1.0 for an upstream that does not
	// take it, and back), "1.0" or "2.0" (converting what came in as the
	// other). Empty: auto.
	Protocol string `toml:"protocol" mapstructure:"protocol"`
	// NameEscaping rewrites names outside the legacy charset for an
	// upstream that takes only those: "none" (default), "underscores" or
	// "values" (Prometheus' escaping schemes).
	NameEscaping string `toml:"name_escaping" mapstructure:"name_escaping"`
}

// The values of RelayUpstream.Protocol, NameEscaping and
// Relay.NameValidation.
const (
	ProtocolAuto = "auto"
	ProtocolV1   = "1.0"
	ProtocolV2   = "2.0"

	EscapingNone        = "none"
	EscapingUnderscores = "underscores"
	EscapingValues      = "values"

	NamesUTF8   = "utf8"
	NamesLegacy = "legacy"
)

// UnmarshalText makes a plain URL (in the file, the flag or the
// environment) an upstream with the default protocol and escaping.
func (u *RelayUpstream) UnmarshalText(b []byte) error {
	*u = RelayUpstream{URL: strings.TrimSpace(string(b))}
	return nil
}

// Upstreams returns upstreams of urls with the defaults.
func Upstreams(urls ...string) []RelayUpstream {
	out := make([]RelayUpstream, len(urls))
	for i, u := range urls {
		out[i] = RelayUpstream{URL: u}
	}
	return out
}

// RelayBasicAuth authenticates the relay against its upstreams.
type RelayBasicAuth struct {
	Username     string `toml:"username" mapstructure:"username"`
	PasswordFile string `toml:"password_file" mapstructure:"password_file"`
}

// RelayTLS configures the client side of upstream TLS.
type RelayTLS struct {
	CAFile             string `toml:"ca_file" mapstructure:"ca_file"`
	CertFile           string `toml:"cert_file" mapstructure:"cert_file"`
	KeyFile            string `toml:"key_file" mapstructure:"key_file"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify" mapstructure:"insecure_skip_verify"`
}

// DefaultRelay holds the value of every relay key that is not set.
var DefaultRelay = Relay{
	NameValidation:    NamesUTF8,
	QueueMaxBytes:     1 << 30,
	QueueMinFreeBytes: 128 << 20,
	MaxRequestBytes:   32 << 20,
	MaxSamplesPerSend: 2000,
	FlushDeadline:     time.Second,
	Concurrency:       4,
	MinBackoff:        100 * time.Millisecond,
	MaxBackoff:        30 * time.Second,
	RemoteTimeout:     30 * time.Second,
}

// Enabled reports whether any upstream is configured.
func (r Relay) Enabled() bool { return len(r.Upstream) > 0 }

// WithAgentDefaults fills what the agent derives: external label
// cluster=<cluster> unless one named cluster is set, and QueueDir
// <dataDir>/relay when empty. The receiver is not modified.
func (r Relay) WithAgentDefaults(cluster, dataDir string) Relay {
	labels := make(map[string]string, len(r.ExternalLabels)+1)
	for k, v := range r.ExternalLabels {
		labels[k] = v
	}
	if _, ok := labels["cluster"]; !ok && cluster != "" {
		labels["cluster"] = cluster
	}
	r.ExternalLabels = labels
	if r.QueueDir == "" && dataDir != "" {
		r.QueueDir = filepath.Join(dataDir, "relay")
	}
	return r
}

// relayReservedHeaders are set by the relay itself.
var relayReservedHeaders = []string{"Content-Encoding", "Content-Type", "Content-Length", "User-Agent", "X-Prometheus-Remote-Write-Version", "Host"}

// Validate checks every relay key and returns all problems at once, each
// naming the key and the bad value.
func (r Relay) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("relay."+format, args...)) }

	seen := map[string]bool{}
	for i, up := range r.Upstream {
		u := up.URL
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad("upstream[%d]: must be an http or https URL, got %q", i, u)
		} else if seen[u] {
			bad("upstream[%d]: listed twice, got %q", i, u)
		}
		seen[u] = true
		switch up.Protocol {
		case "", ProtocolAuto, ProtocolV1, ProtocolV2:
		default:
			bad("upstream[%d].protocol: must be auto, 1.0 or 2.0, got %q", i, up.Protocol)
		}
		switch up.NameEscaping {
		case "", EscapingNone, EscapingUnderscores, EscapingValues:
		default:
			bad("upstream[%d].name_escaping: must be none, underscores or values, got %q", i, up.NameEscaping)
		}
	}
	if r.NameValidation != NamesUTF8 && r.NameValidation != NamesLegacy {
		bad("name_validation: must be utf8 or legacy, got %q", r.NameValidation)
	}
	for name := range r.Headers {
		if !relayHeaderName(name) {
			bad("headers: invalid header name %q", name)
		} else if slices.Contains(relayReservedHeaders, http.CanonicalHeaderKey(name)) {
			bad("headers: %q is set by the relay and cannot be overridden", name)
		} else if http.CanonicalHeaderKey(name) == "Authorization" && (r.BearerTokenFile != "" || r.BasicAuth.Username != "") {
			bad("headers: Authorization conflicts with bearer_token_file or basic_auth")
		}
	}
	if r.BearerTokenFile != "" && r.BasicAuth.Username != "" {
		bad("bearer_token_file: cannot be combined with basic_auth, got %q", r.BearerTokenFile)
	}
	if r.BasicAuth.PasswordFile != "" && r.BasicAuth.Username == "" {
		bad("basic_auth.username: must be set when password_file is, got \"\"")
	}
	if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
		bad("tls: cert_file and key_file must be set together, got cert_file=%q key_file=%q", r.TLS.CertFile, r.TLS.KeyFile)
	}
	for name, value := range r.ExternalLabels {
		if !ValidLabelName(name) {
			bad("external_labels: label name must match [a-zA-Z_][a-zA-Z0-9_]*, got %q", name)
		} else if value == "" {
			bad("external_labels.%s: must not be empty", name)
		}
	}
	if r.QueueDir != "" && !filepath.IsAbs(r.QueueDir) {
		bad("queue_dir: must be an absolute path, got %q", r.QueueDir)
	}
	if r.MaxRequestBytes <= 0 {
		bad("max_request_bytes: must be > 0, got %d", r.MaxRequestBytes)
	}
	switch {
	case r.QueueMaxBytes <= 0:
		bad("queue_max_bytes: must be > 0, got %d", r.QueueMaxBytes)
	case r.QueueMaxBytes < 2*r.MaxRequestBytes:
		bad("queue_max_bytes: must be at least twice max_request_bytes (%d), got %d", r.MaxRequestBytes, r.QueueMaxBytes)
	}
	if r.QueueMinFreeBytes < 0 {
		bad("queue_min_free_bytes: must be >= 0, got %d", r.QueueMinFreeBytes)
	}
	if r.MaxSamplesPerSend <= 0 {
		bad("max_samples_per_send: must be > 0, got %d", r.MaxSamplesPerSend)
	}
	if r.FlushDeadline < 0 {
		bad("flush_deadline: must be >= 0, got %s", r.FlushDeadline)
	}
	if r.Concurrency < 1 || r.Concurrency > 256 {
		bad("concurrency: must be between 1 and 256, got %d", r.Concurrency)
	}
	if r.MinBackoff <= 0 {
		bad("min_backoff: must be > 0, got %s", r.MinBackoff)
	}
	if r.MaxBackoff < r.MinBackoff {
		bad("max_backoff: must be >= min_backoff (%s), got %s", r.MinBackoff, r.MaxBackoff)
	}
	if r.RemoteTimeout <= 0 {
		bad("remote_timeout: must be > 0, got %s", r.RemoteTimeout)
	}
	return errors.Join(errs...)
}

func relayHeaderName(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(c rune) bool {
		return c <= ' ' || c >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c)
	})
}
