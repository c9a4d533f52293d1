package stackconfig

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Option ties a configuration key to its flag and environment variable.
type Option struct {
	Key   string // TOML key, dotted for sections: "etcd.endpoints"
	Flag  string // command-line flag without dashes: "etcd"
	Usage string
}

// Env is the option's environment variable: AGENT_ and the flag name in upper
// case with '-' as '_' (--data-dir is AGENT_DATA_DIR).
func (o Option) Env() string {
	return "AGENT_" + strings.ToUpper(strings.ReplaceAll(o.Flag, "-", "_"))
}

// JoinOptions are the keys that `agent join` takes as flags. Every other key
// is still settable in the file and as AGENT_<KEY> with '.' as '_'.
var JoinOptions = []Option{
	{"etcd.endpoints", "etcd", "etcd client URLs, comma-separated; empty starts an embedded etcd"},
	{"node", "node", "this agent's node name (default: the host name)"},
	{"cluster", "cluster", "cluster name; agents of one cluster share an etcd prefix"},
	{"listen", "listen", "HTTP API listen address (host:port)"},
	{"advertise", "advertise", "API address other agents use to reach this one (default: derived from --listen)"},
	{"data_dir", "data-dir", "directory for the embedded etcd, the relay queue and rendered files"},
	{"ttl", "ttl", "etcd session lease TTL; a dead agent is noticed after about this long"},
	{"sd_dir", "sd-dir", "directory for the master's Prometheus file_sd files (default: <data-dir>/sd)"},
	{"etcd.embedded_listen", "embedded-etcd-listen", "client URL of the embedded etcd (also of the member this agent becomes in a growing cluster)"},
	{"etcd.embedded_peer_listen", "embedded-etcd-peer-listen", "peer URL of the embedded etcd (default: client port + 1)"},
	{"etcd.embedded_cert_file", "embedded-etcd-cert-file", "certificate of the embedded etcd member (server and client use, signed by --etcd-ca-file); set, its URLs are https:// and every client and member needs a certificate"},
	{"etcd.embedded_key_file", "embedded-etcd-key-file", "key of --embedded-etcd-cert-file"},
	{"etcd.embedded_insecure", "embedded-etcd-insecure", "let the embedded etcd listen beyond loopback without TLS (private networks only)"},
	{"etcd.members", "etcd-members", "etcd members a cluster founded on this agent's embedded etcd grows to as agents join (1, 3 or 5)"},
	{"etcd.replace_dead_after", "etcd-replace-dead-after", "how long a member of that etcd may be dead (no answer, no agent of its name) before a client agent takes its place (0: never)"},
	{"etcd.prefix", "etcd-prefix", "root of every etcd key the agent writes"},
	{"etcd.dial_timeout", "etcd-dial-timeout", "timeout of one etcd connection attempt"},
	{"etcd.username", "etcd-username", "etcd user name"},
	{"etcd.password_file", "etcd-password-file", "file holding the etcd password"},
	{"etcd.ca_file", "etcd-ca-file", "CA bundle that signs the etcd server certificates (and, with --embedded-etcd-cert-file, every client and member certificate)"},
	{"etcd.cert_file", "etcd-cert-file", "client certificate for etcd"},
	{"etcd.key_file", "etcd-key-file", "client key for etcd"},
	{"etcd.insecure_skip_verify", "etcd-insecure-skip-verify", "do not verify the etcd server certificate (testing only)"},
	{"api.cert_file", "api-cert-file", "certificate of this agent's API (it must name the --advertise address); set, the API serves HTTPS only"},
	{"api.key_file", "api-key-file", "key of --api-cert-file"},
	{"api.ca_file", "api-ca-file", "CA that signs every agent's API certificate; the master's Prometheus trusts it for the relay and the node monitors"},
	{"api.insecure", "api-insecure", "let the API listen beyond loopback without TLS (private networks only)"},
	{"stack.driver", "driver", "how to run the stack: docker, process, helm (Kubernetes) or none (default: helm in a pod, else docker when its socket answers, else process)"},
	{"relay.upstream", "relay-upstream", "remote-write URLs of the manager, comma-separated; empty disables the relay"},
	{"manager.logs_url", "manager-logs-url", "the manager's log endpoint (an OTLP/HTTP logs URL; with stack.logs.shipper=vector, where Vector posts JSON)"},
	{"manager.traces_otlp_endpoint", "manager-traces-endpoint", "the manager's OTLP endpoint for traces (Jaeger collector exporter)"},
	{"monitor.enabled", "monitor", "measure this host's processes and containers and serve them at /metrics/monitor (job agent-monitor)"},
	{"monitor.containers", "monitor-containers", "measure every container of the host's Docker engine"},
	{"monitor.interval", "monitor-interval", "how often the monitor reads /proc and the cgroups"},
	{"log_level", "log-level", "debug, info, warn or error"},
	{"log_format", "log-format", "text or json"},
}

// ClientOptions are the etcd connection keys that read-only commands
// (`agent status --etcd`) take. They never start an etcd: without
// endpoints, those commands ask an agent's API instead.
var ClientOptions = clientOptions()

func clientOptions() []Option {
	opts := filterOptions(JoinOptions, "etcd.endpoints", "cluster", "etcd.prefix", "etcd.dial_timeout",
		"etcd.username", "etcd.password_file", "etcd.ca_file", "etcd.cert_file", "etcd.key_file", "etcd.insecure_skip_verify")
	for i := range opts {
		switch opts[i].Key {
		case "etcd.endpoints":
			opts[i].Usage = "etcd client URLs to read from directly, comma-separated; without them, the agent at --api is asked"
		case "etcd.ca_file":
			opts[i].Usage = "CA bundle that signs the etcd server certificates"
		}
	}
	return opts
}

func filterOptions(opts []Option, keys ...string) []Option {
	var out []Option
	for _, o := range opts {
		for _, k := range keys {
			if o.Key == k {
				out = append(out, o)
			}
		}
	}
	return out
}

// AddFlags registers opts on fs with their defaults from DefaultConfig.
func AddFlags(fs *pflag.FlagSet, opts []Option) {
	v := viper.New()
	setDefaults(v)
	for _, o := range opts {
		usage := o.Usage + " (env " + o.Env() + ")"
		switch def := v.Get(o.Key).(type) {
		case []string:
			fs.StringSlice(o.Flag, def, usage)
		case []RelayUpstream: // URLs on the command line
			fs.StringSlice(o.Flag, nil, usage)
		case bool:
			fs.Bool(o.Flag, def, usage)
		case fmt.Stringer: // durations
			fs.String(o.Flag, def.String(), usage)
		default:
			fs.String(o.Flag, fmt.Sprint(def), usage)
		}
	}
}

// Load builds the configuration: DefaultConfig, then the TOML file (if
// path is not empty), then AGENT_* variables from environ, then the flags in
// fs that were set. It rejects unknown keys and validates the result.
func Load(path string, fs *pflag.FlagSet, opts []Option) (*Config, error) {
	v := viper.New()
	setDefaults(v)
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
		defer f.Close()
		v.SetConfigType("toml")
		if err := v.ReadConfig(f); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	for _, k := range v.AllKeys() {
		if err := v.BindEnv(k, "AGENT_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_"))); err != nil {
			return nil, err
		}
	}
	for _, o := range opts {
		if err := v.BindEnv(o.Key, o.Env(), "AGENT_"+strings.ToUpper(strings.ReplaceAll(o.Key, ".", "_"))); err != nil {
			return nil, err
		}
		if fs == nil {
			continue
		}
		if fl := fs.Lookup(o.Flag); fl != nil && fl.Changed {
			v.Set(o.Key, flagValue(fl))
		}
	}
	cfg := DefaultConfig
	err := v.Unmarshal(&cfg, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		durationHook,
		mapstructure.StringToSliceHookFunc(","),
		mapstructure.TextUnmarshallerHookFunc(),
	)))
	// Only the file can hold unknown keys: the environment and the flags
	// are read for known keys only.
	var errs []error
	if unknown := unknownKeys("", v.AllSettings(), reflect.TypeFor[Config]()); len(unknown) > 0 {
		errs = append(errs, unknownKeysError(path, unknown))
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("%s", cleanDecodeError(err)))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration:\n%w", errors.Join(errs...))
	}
	if !hasKey(opts, "node") {
		// A client command: only the etcd connection matters.
		if err := errors.Join(cfg.Etcd.validate()...); err != nil {
			return nil, fmt.Errorf("invalid configuration:\n%w", err)
		}
		return &cfg, nil
	}
	if cfg.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node: not set and the host name is unknown: %w", err)
		}
		cfg.Node = strings.ToLower(strings.SplitN(h, ".", 2)[0])
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return &cfg, nil
}

func hasKey(opts []Option, key string) bool {
	for _, o := range opts {
		if o.Key == key {
			return true
		}
	}
	return false
}

// durationHook decodes "5s"-style strings, with an error that repeats the
// bad value and shows the accepted form. A bare number (`ttl = 5` in TOML)
// is refused rather than read as nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() || from == to {
		return data, nil
	}
	switch from.Kind() {
	case reflect.String:
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return nil, fmt.Errorf("must be a duration string with a unit, like \"%vs\" or \"500ms\", got the number %v", data, data)
	default:
		return data, nil
	}
	d, err := time.ParseDuration(data.(string))
	if err != nil {
		return nil, fmt.Errorf("invalid duration %q: want a number with a unit, like 500ms, 5s or 1m", data)
	}
	return d, nil
}

func flagValue(fl *pflag.Flag) any {
	if sv, ok := fl.Value.(pflag.SliceValue); ok {
		return sv.GetSlice()
	}
	return fl.Value.String()
}

// setDefaults teaches v every key of DefaultConfig, so that environment
// variables of keys absent from the file are seen and unknown keys stand out.
func setDefaults(v *viper.Viper) {
	var m map[string]any
	if err := mapstructure.Decode(DefaultConfig, &m); err != nil {
		panic(err) // DefaultConfig is static: a failure is a programming error
	}
	flatten("", m, func(k string, val any) { v.SetDefault(k, val) })
}

func flatten(prefix string, m map[string]any, set func(string, any)) {
	for k, val := range m {
		if sub, ok := val.(map[string]any); ok && len(sub) > 0 {
			flatten(prefix+k+".", sub, set)
			continue
		}
		set(prefix+k, val)
	}
}

var quotedKey = regexp.MustCompile(`'([a-z0-9_.\[\]]+)'`)

// cleanDecodeError turns mapstructure's multi-line report into one line a
// person can act on.
func cleanDecodeError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "decoding failed due to the following error(s):")
	msg = strings.ReplaceAll(msg, "'' has invalid keys:", "unknown keys:")
	msg = strings.ReplaceAll(msg, "has invalid keys:", "unknown keys:")
	msg = quotedKey.ReplaceAllString(msg, "$1:")
	return strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", " ")), " ")
}
