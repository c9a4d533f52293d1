package stackconfig

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Config is the agent's configuration. Every field is a TOML key (the
// mapstructure tag), an AGENT_* environment variable and, for the common ones,
// a flag; see Options for the mapping.
type Config struct {
	// Node is this agent's name in the cluster; unique among live agents.
	Node string `mapstructure:"node"`
	// Cluster names the cluster; agents of one cluster share an etcd prefix.
	Cluster string `mapstructure:"cluster"`
	// Listen is the HTTP API address (host:port).
	Listen string `mapstructure:"listen"`
	// Advertise is the API address other agents and tools use to reach this
	// one (host:port); derived from Listen when empty.
	Advertise string `mapstructure:"advertise"`
	// DataDir holds the embedded etcd, the relay queue and rendered files.
	DataDir string `mapstructure:"data_dir"`
	// TTL is the lease TTL of this agent's etcd session: a dead agent's keys
	// vanish, and a dead master is replaced, about this long after it dies.
	TTL time.Duration `mapstructure:"ttl"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `mapstructure:"log_level"`
	// LogFormat is text or json.
	LogFormat string `mapstructure:"log_format"`
	// Labels are attached to this agent's member record.
	Labels map[string]string `mapstructure:"labels"`

	// SDDir is where the master writes Prometheus file_sd files; default
	// <data_dir>/sd.
	SDDir string `mapstructure:"sd_dir"`

	Etcd Etcd `mapstructure:"etcd"`

	// Exporters are the scrape targets of this host, published in etcd.
	Exporters []Exporter `mapstructure:"exporters"`

	// Stack says what the agent runs and how (driver, images, binaries).
	Stack Stack `mapstructure:"stack"`
	// API guards the manager API (token, allowed images, body limit).
	API API `mapstructure:"api"`
	// Manager is where logs and traces go; metrics go through the relay.
	Manager Manager `mapstructure:"manager"`
	// Relay forwards the master Prometheus' remote-write to the manager.
	Relay Relay `mapstructure:"relay"`

	// Push configures POST /api/v1/push (docs/push.md).
	Push Push `mapstructure:"push"`
	// Plugins are executables run on a schedule or on demand (docs/plugins.md).
	Plugins []Plugin `mapstructure:"plugins"`
	// PluginsDir is where git plugins are cloned; default <data_dir>/plugins.
	PluginsDir string `mapstructure:"plugins_dir"`
	// Monitor measures this host's processes and containers.
	Monitor Monitor `mapstructure:"monitor"`
}

// Etcd says how to reach etcd, or how to run the embedded one.
type Etcd struct {
	// Endpoints of an existing etcd cluster. Empty: start an embedded etcd.
	Endpoints []string `mapstructure:"endpoints"`
	// Prefix is the root of every key the agent writes.
	Prefix string `mapstructure:"prefix"`
	// EmbeddedListen is the client URL of the embedded etcd.
	EmbeddedListen string `mapstructure:"embedded_listen"`
	// EmbeddedPeerListen is the peer URL of the embedded etcd; derived from
	// EmbeddedListen (port + 1) when empty.
	EmbeddedPeerListen string `mapstructure:"embedded_peer_listen"`
	// EmbeddedCertFile and EmbeddedKeyFile are the certificate of this
	// agent's etcd member: set, its client and peer URLs are https://, and
	// every client and member must show a certificate signed by CAFile (the
	// member's own certificate, so it needs both the server and the client
	// use). The agent's own client uses it too unless CertFile is set.
	EmbeddedCertFile string `mapstructure:"embedded_cert_file"`
	EmbeddedKeyFile  string `mapstructure:"embedded_key_file"`
	// EmbeddedInsecure lets the embedded etcd listen beyond loopback
	// without TLS: whoever reaches its ports can read and write every key,
	// and so run applications on every node. For private networks only.
	EmbeddedInsecure bool `mapstructure:"embedded_insecure"`
	// Members is how many etcd members a cluster this agent founds (on
	// its embedded etcd) grows to: agents that join it add themselves as
	// members until it has that many (1, 3 or 5; 1: it stays one member).
	// Read from the founding agent only.
	Members int `mapstructure:"members"`
	// ReplaceDeadAfter is how long a member of that etcd may be dead (its
	// client URL does not answer and no agent of its name is registered)
	// before a client agent removes it and becomes a member in its place
	// (0: never). Read from the founding agent only.
	ReplaceDeadAfter time.Duration `mapstructure:"replace_dead_after"`
	// DialTimeout bounds each connection attempt.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
	// Username and PasswordFile authenticate against etcd.
	Username     string `mapstructure:"username"`
	PasswordFile string `mapstructure:"password_file"`
	// TLS for the etcd client connection.
	CAFile             string `mapstructure:"ca_file"`
	CertFile           string `mapstructure:"cert_file"`
	KeyFile            string `mapstructure:"key_file"`
	InsecureSkipVerify bool   `mapstructure:"insecure_skip_verify"`
}

// DefaultConfig holds the value of every key that is not set anywhere.
var DefaultConfig = Config{
	Cluster:   "default",
	Listen:    "127.0.0.1:9464",
	DataDir:   "/var/lib/agent",
	TTL:       5 * time.Second,
	LogLevel:  "info",
	LogFormat: "text",
	Etcd: Etcd{
		Prefix:           "/agent",
		EmbeddedListen:   "http://127.0.0.1:2379",
		Members:          1,
		ReplaceDeadAfter: 10 * time.Minute,
		DialTimeout:      5 * time.Second,
	},
	Stack:   DefaultStack,
	API:     DefaultAPI,
	Manager: DefaultManager,
	Relay:   DefaultRelay,
	Push:    DefaultPush,
	Monitor: DefaultMonitor,
}

// SDPath is the file_sd directory: SDDir or <data_dir>/sd.
func (c *Config) SDPath() string {
	if c.SDDir != "" {
		return c.SDDir
	}
	return filepath.Join(c.DataDir, "sd")
}

// EmbeddedTLS reports whether the embedded etcd serves TLS.
func (e *Etcd) EmbeddedTLS() bool { return e.EmbeddedCertFile != "" }

// ClientCert is the certificate and key the agent's etcd client shows:
// CertFile, else the embedded member's own.
func (e *Etcd) ClientCert() (cert, key string) {
	if e.CertFile == "" {
		return e.EmbeddedCertFile, e.EmbeddedKeyFile
	}
	return e.CertFile, e.KeyFile
}

// Embedded reports whether the agent runs its own etcd.
func (c *Config) Embedded() bool { return len(c.Etcd.Endpoints) == 0 }

// AdvertiseAddr is the API address others use: Advertise, or Listen with an
// unspecified host replaced by this host's name.
func (c *Config) AdvertiseAddr() string {
	if c.Advertise != "" {
		return c.Advertise
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return c.Listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// dnsLabel is what node and cluster names must be: they become etcd key
// segments, container labels and hostnames.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// DNSLabelRule says in words what dnsLabel accepts, for error messages.
const DNSLabelRule = "lower-case letters, digits and '-', 1 to 63 characters, starting and ending with a letter or digit"

// ValidDNSLabel reports whether s may be used as a node, cluster or guid.
func ValidDNSLabel(s string) bool { return dnsLabel.MatchString(s) }

// labelName is the legacy Prometheus label-name charset.
var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// Validate checks every field and returns all problems at once, each naming
// the key, the bad value and what is allowed.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if !ValidDNSLabel(c.Node) {
		bad("node: must be %s, got %q", DNSLabelRule, c.Node)
	}
	if !ValidDNSLabel(c.Cluster) {
		bad("cluster: must be %s, got %q", DNSLabelRule, c.Cluster)
	}
	listenErr := checkHostPort(c.Listen)
	if listenErr != nil {
		bad("listen: %v, got %q", listenErr, c.Listen)
	}
	if c.Advertise != "" {
		if err := checkHostPort(c.Advertise); err != nil {
			bad("advertise: %v, got %q", err, c.Advertise)
		}
	}
	if c.DataDir == "" {
		bad("data_dir: must not be empty")
	} else if !filepath.IsAbs(c.DataDir) {
		bad("data_dir: must be an absolute path, got %q", c.DataDir)
	}
	if c.TTL < time.Second || c.TTL%time.Second != 0 {
		bad("ttl: must be a whole number of seconds, at least 1s (etcd leases count in seconds), got %s", c.TTL)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level: must be one of debug, info, warn, error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format: must be text or json, got %q", c.LogFormat)
	}
	for k := range c.Labels {
		if !ValidLabelName(k) {
			bad("labels: label name must match %s, got %q", labelName, k)
		}
	}
	if c.SDDir != "" && !filepath.IsAbs(c.SDDir) {
		bad("sd_dir: must be an absolute path, got %q", c.SDDir)
	}
	errs = append(errs, c.Etcd.validate()...)
	errs = append(errs, ValidateExporters(c.Exporters)...)
	errs = append(errs, c.Stack.Validate()...)
	if listenErr == nil {
		advertise := c.AdvertiseAddr()
		if c.Stack.Driver == "helm" {
			// Kubernetes mode: clients check the certificate against
			// the Service's name, not the pod's address (see
			// API.VerifyServerName).
			advertise = ""
		}
		errs = append(errs, c.API.Validate(c.Listen, advertise)...)
	} else {
		// A bad listen is reported once, above; the token rule, which
		// depends on it, would only repeat it.
		errs = append(errs, c.API.Validate("127.0.0.1:0", "")...)
	}
	errs = append(errs, c.Manager.Validate()...)
	errs = append(errs, c.Relay.Validate())
	errs = append(errs, c.Push.Validate()...)
	errs = append(errs, ValidatePlugins(c.Plugins, c.Relay.Enabled())...)
	if c.PluginsDir != "" && !filepath.IsAbs(c.PluginsDir) {
		bad("plugins_dir: must be an absolute path, got %q", c.PluginsDir)
	}
	errs = append(errs, c.Monitor.Validate()...)
	return errors.Join(errs...)
}

func (e *Etcd) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for i, ep := range e.Endpoints {
		if err := checkURL(ep); err != nil {
			bad("etcd.endpoints[%d]: %v, got %q", i, err, ep)
		}
	}
	if !strings.HasPrefix(e.Prefix, "/") || strings.HasSuffix(e.Prefix, "/") || strings.Contains(e.Prefix, "//") {
		bad("etcd.prefix: must start with '/' and not end with '/', got %q", e.Prefix)
	}
	if err := checkURL(e.EmbeddedListen); err != nil {
		bad("etcd.embedded_listen: %v, got %q", err, e.EmbeddedListen)
	}
	if e.EmbeddedPeerListen != "" {
		if err := checkURL(e.EmbeddedPeerListen); err != nil {
			bad("etcd.embedded_peer_listen: %v, got %q", err, e.EmbeddedPeerListen)
		}
	}
	if e.Members != 1 && e.Members != 3 && e.Members != 5 {
		bad("etcd.members: must be 1, 3 or 5, got %d", e.Members)
	}
	for _, l := range []struct{ key, url string }{{"embedded_listen", e.EmbeddedListen}, {"embedded_peer_listen", e.EmbeddedPeerListen}} {
		u, err := url.Parse(l.url)
		if l.url == "" || err != nil {
			continue
		}
		if e.Members > 1 && UnspecifiedHost(u.Hostname()) {
			bad("etcd.%s: with etcd.members = %d the members advertise it to each other: give an address the other hosts reach, not an unspecified one, got %q", l.key, e.Members, l.url)
		}
		switch {
		case e.EmbeddedTLS() && u.Scheme != "https":
			bad("etcd.%s: with etcd.embedded_cert_file set the embedded etcd serves TLS: make it https://, got %q", l.key, l.url)
		case !e.EmbeddedTLS() && u.Scheme == "https":
			bad("etcd.%s: https:// needs etcd.embedded_cert_file and etcd.embedded_key_file (the member's certificate), got %q", l.key, l.url)
		case !e.EmbeddedTLS() && !e.EmbeddedInsecure && !LoopbackHost(u.Hostname()):
			bad("etcd.%s: beyond loopback the embedded etcd needs TLS (whoever reaches it could write every key, and so run applications on every node): set etcd.embedded_cert_file, embedded_key_file and ca_file with https:// URLs, or etcd.embedded_insecure = true on a private network; got %q", l.key, l.url)
		}
	}
	if (e.EmbeddedCertFile == "") != (e.EmbeddedKeyFile == "") {
		bad("etcd.embedded_cert_file and etcd.embedded_key_file: set both or neither, got embedded_cert_file %q and embedded_key_file %q", e.EmbeddedCertFile, e.EmbeddedKeyFile)
	}
	if e.EmbeddedTLS() && e.CAFile == "" {
		bad("etcd.ca_file: the embedded etcd with TLS (etcd.embedded_cert_file %q) accepts only clients and members with a certificate signed by this CA: set it", e.EmbeddedCertFile)
	}
	if e.ReplaceDeadAfter != 0 && e.ReplaceDeadAfter < time.Minute {
		bad("etcd.replace_dead_after: 0 (never) or at least 1m (a member restarting must not be replaced), got %s", e.ReplaceDeadAfter)
	}
	if e.DialTimeout <= 0 {
		bad("etcd.dial_timeout: must be > 0, got %s", e.DialTimeout)
	}
	if (e.Username == "") != (e.PasswordFile == "") {
		bad("etcd.username and etcd.password_file: set both or neither, got username %q and password_file %q", e.Username, e.PasswordFile)
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		bad("etcd.cert_file and etcd.key_file: set both or neither, got cert_file %q and key_file %q", e.CertFile, e.KeyFile)
	}
	for _, f := range []struct{ key, path string }{
		{"etcd.password_file", e.PasswordFile}, {"etcd.ca_file", e.CAFile},
		{"etcd.cert_file", e.CertFile}, {"etcd.key_file", e.KeyFile},
		{"etcd.embedded_cert_file", e.EmbeddedCertFile}, {"etcd.embedded_key_file", e.EmbeddedKeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			bad("%s: cannot read %q: %v", f.key, f.path, errors.Unwrap(err))
		}
	}
	return errs
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		return errors.New("must be host:port")
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an http:// or https:// URL with a host")
	}
	return nil
}

// UnspecifiedHost reports whether host is 0.0.0.0 or :: (every address,
// not one to dial or advertise).
func UnspecifiedHost(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
