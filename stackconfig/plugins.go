package stackconfig

import (
	"fmt"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Push configures POST /api/v1/push.
type Push struct {
	// MaxBodyBytes bounds one push request body; larger ones get 413.
	MaxBodyBytes int64 `toml:"max_body_bytes" mapstructure:"max_body_bytes"`
}

// DefaultPush holds the value of every push key that is not set.
var DefaultPush = Push{MaxBodyBytes: 8 << 20}

// Validate checks the push keys.
func (p Push) Validate() []error {
	if p.MaxBodyBytes <= 0 {
		return []error{fmt.Errorf("push.max_body_bytes: must be > 0, got %d", p.MaxBodyBytes)}
	}
	return nil
}

// Plugin is one [[plugins]] entry: an executable the agent runs on a
// schedule or on demand, whose output (the push API's JSON list or the
// Prometheus text format) goes to the relay.
type Plugin struct {
	// Name names the plugin in the API and in its metric names
	// (plugin_<name>_<metric>); a git plugin is cloned into
	// <plugins_dir>/<name>.
	Name string `toml:"name" mapstructure:"name"`
	// Command is the executable (an absolute path) and its arguments. Never
	// run through a shell.
	Command []string `toml:"command" mapstructure:"command"`
	// Git is a repository whose root holds an executable named "plugin";
	// cloned with the system's git, updated only on request.
	Git string `toml:"git" mapstructure:"git"`
	// Interval between scheduled runs; 0 runs only on demand.
	Interval time.Duration `toml:"interval" mapstructure:"interval"`
	// Timeout of one run, after which the plugin and its process group are
	// killed; 0 or unset: DefaultPlugin.Timeout.
	Timeout time.Duration `toml:"timeout" mapstructure:"timeout"`
	// User runs the plugin as that user (the agent must be root); empty:
	// the agent's own user.
	User string `toml:"user" mapstructure:"user"`
	// Env adds NAME=value variables to the plugin's environment.
	Env []string `toml:"env" mapstructure:"env"`
	// NS is the ns label of the plugin's samples; empty: DefaultPlugin.NS.
	NS string `toml:"ns" mapstructure:"ns"`
	// DisableMax is how long a plugin disabled over the API stays disabled
	// before it is enabled again; 0 or unset: DefaultPlugin.DisableMax.
	DisableMax time.Duration `toml:"disable_max" mapstructure:"disable_max"`
}

// DefaultPlugin holds what an unset plugin key means.
var DefaultPlugin = Plugin{Timeout: 10 * time.Second, NS: "plugins", DisableMax: 24 * time.Hour}

// WithDefaults returns p with its unset keys (zero values) filled from
// DefaultPlugin. An array of tables cannot be decoded on top of defaults
// as sections are, so every reader of a Plugin calls this.
func (p Plugin) WithDefaults() Plugin {
	if p.Timeout == 0 {
		p.Timeout = DefaultPlugin.Timeout
	}
	if p.NS == "" {
		p.NS = DefaultPlugin.NS
	}
	if p.DisableMax == 0 {
		p.DisableMax = DefaultPlugin.DisableMax
	}
	return p
}

// PluginsPath is where git plugins are cloned: PluginsDir or
// <data_dir>/plugins.
func (c *Config) PluginsPath() string {
	if c.PluginsDir != "" {
		return c.PluginsDir
	}
	return filepath.Join(c.DataDir, "plugins")
}

var (
	pluginName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	namespace  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	envName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// PluginNameRule says in words what a plugin name may be.
const PluginNameRule = "lower-case letters, digits and '_', 1 to 63 characters, starting with a letter"

// ValidPluginName reports whether s may name a plugin: it becomes part of
// metric names, a URL path segment and a directory name.
func ValidPluginName(s string) bool { return pluginName.MatchString(s) }

// NamespaceRule says in words what an ns label value may be.
const NamespaceRule = "letters, digits, '_', '.' and '-', 1 to 63 characters, starting with a letter or digit"

// ValidNamespace reports whether s may be the ns label of pushed or
// plugin samples. Any UTF-8 string is a valid label value; ns is kept to a
// charset that is safe in URLs, file names and the manager's queries.
func ValidNamespace(s string) bool { return namespace.MatchString(s) }

// PluginEnvPrefix starts the variables the agent sets for a plugin
// (PLUGIN_NAME, PLUGIN_PARAM, ...); env may not set them.
const PluginEnvPrefix = "PLUGIN_"

// ValidatePlugins checks every [[plugins]] entry; errors name the entry by
// index (plugins[1].command). Scheduled plugins need the relay, which is
// where their samples go.
func ValidatePlugins(plugins []Plugin, relayEnabled bool) []error {
	var errs []error
	bad := func(i int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("plugins[%d].%s", i, fmt.Sprintf(format, args...)))
	}
	seen := map[string]int{}
	for i, p := range plugins {
		p = p.WithDefaults()
		if !ValidPluginName(p.Name) {
			bad(i, "name: must be %s, got %q", PluginNameRule, p.Name)
		} else if j, dup := seen[p.Name]; dup {
			bad(i, "name: %q is already the name of plugins[%d]", p.Name, j)
		} else {
			seen[p.Name] = i
		}
		switch {
		case len(p.Command) == 0 && p.Git == "":
			bad(i, "command: set command (the executable and its arguments) or git")
		case len(p.Command) > 0 && p.Git != "":
			bad(i, "git: set command or git, not both")
		case len(p.Command) > 0:
			if !filepath.IsAbs(p.Command[0]) {
				bad(i, "command: the executable must be an absolute path (no PATH lookup, no shell), got %q", p.Command[0])
			}
			for j, a := range p.Command {
				if strings.ContainsRune(a, 0) {
					bad(i, "command[%d]: must not contain a NUL byte, got %q", j, a)
				}
			}
		default:
			if strings.HasPrefix(p.Git, "-") || strings.ContainsFunc(p.Git, isControl) {
				bad(i, "git: must be a repository URL or path, not starting with '-' and without control characters, got %q", p.Git)
			}
		}
		if p.Interval < 0 || (p.Interval > 0 && p.Interval < time.Second) {
			bad(i, "interval: must be 0 (on demand only) or at least 1s, got %s", p.Interval)
		}
		if p.Interval > 0 && !relayEnabled {
			bad(i, "interval: a scheduled plugin needs the relay, where its samples go; set relay.upstream or interval = \"0s\" (on demand only), got %s", p.Interval)
		}
		if p.Timeout < 0 {
			bad(i, "timeout: must be > 0, got %s", p.Timeout)
		}
		if p.DisableMax < 0 {
			bad(i, "disable_max: must be > 0, got %s", p.DisableMax)
		}
		if !ValidNamespace(p.NS) {
			bad(i, "ns: must be %s, got %q", NamespaceRule, p.NS)
		}
		if p.User != "" {
			if _, err := user.Lookup(p.User); err != nil {
				bad(i, "user: no such user on this host, got %q", p.User)
			}
		}
		for j, kv := range p.Env {
			name, _, ok := strings.Cut(kv, "=")
			switch {
			case !ok || !envName.MatchString(name):
				bad(i, "env[%d]: must be NAME=value with NAME of letters, digits and '_', got %q", j, kv)
			case strings.HasPrefix(name, PluginEnvPrefix):
				bad(i, "env[%d]: %s* variables are set by the agent, got %q", j, PluginEnvPrefix, kv)
			case strings.ContainsRune(kv, 0):
				bad(i, "env[%d]: must not contain a NUL byte, got %q", j, kv)
			}
		}
	}
	return errs
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }
