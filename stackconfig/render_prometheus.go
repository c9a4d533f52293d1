package stackconfig

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// PrometheusInput is what the master's Prometheus configuration is made of.
type PrometheusInput struct {
	// ScrapeInterval, ScrapeTimeout (<= ScrapeInterval) and
	// EvaluationInterval are the global settings.
	ScrapeInterval     time.Duration
	ScrapeTimeout      time.Duration
	EvaluationInterval time.Duration
	// ExternalLabels are attached to every series sent by remote_write,
	// typically cluster=<cluster>.
	ExternalLabels model.LabelSet
	// SDDir is the absolute directory of the file_sd files; Prometheus
	// reads <SDDir>/*.json, every group with its own job label.
	SDDir string
	// SDRefreshInterval is how often the files are re-read besides being
	// watched.
	SDRefreshInterval time.Duration
	// Listen is Prometheus's own web address; it scrapes itself there (an
	// unspecified host becomes 127.0.0.1).
	Listen string
	// RemoteWriteURL is the relay (http://<master api>/api/v1/write);
	// empty: no remote_write.
	RemoteWriteURL string
	// RemoteWriteTokenFile, when set, holds the bearer token the relay
	// requires (the agent's api.token_file): Prometheus reads it itself.
	RemoteWriteTokenFile string
	// AgentCAFile is the absolute path of the CA that signed the agents'
	// API certificates (api.ca_file); empty: the API speaks plain http.
	// When set, Prometheus trusts it for an https relay and scrapes the
	// node monitors served over https (MonitorJob targets with __scheme__
	// https) in their own scrape config, JobAgentAPI, since a tls_config
	// holds for a whole scrape config. Every other target keeps the system
	// roots.
	AgentCAFile string
	// Major is the major version of the Prometheus the config is for
	// (PrometheusMajor): from 3 on, remote_write sends remote-write 2.0;
	// 0 means 2. A config for 2 is valid for 3 as well.
	Major int
	// NativeHistograms scrapes native histograms (Prometheus 3 and later;
	// Prometheus 2 needs a feature flag instead). Whatever native
	// histograms Prometheus has are always sent on to the relay.
	NativeHistograms bool
	// RuleFiles are rule files to load (RenderRules), absolute paths.
	RuleFiles []string
}

// Job names of the rendered scrape configs. Targets from the file_sd files
// keep their own job label; JobTargets is only what a group without one gets.
const (
	JobTargets    = "agent-targets"
	JobPrometheus = "prometheus"
	// JobAgentAPI scrapes, when PrometheusInput.AgentCAFile is set, the
	// node monitors that agents serve over https on their API; the targets
	// keep their job label, MonitorJob.
	JobAgentAPI = "agent-api"
)

// AgentAPITLS matches, over source_labels AgentAPILabels (job and
// __scheme__), the node monitor targets of agents whose API speaks
// https: JobTargets drops them and JobAgentAPI keeps only them, so each
// target is scraped by exactly one of the two (here and in Kubernetes
// mode's metrics stack). A target without __scheme__ has its scrape
// config's scheme, http, by the time relabelling runs.
var (
	AgentAPILabels = []string{string(model.JobLabel), model.SchemeLabel}
	AgentAPITLS    = regexp.QuoteMeta(MonitorJob) + ";https"
)

// The remote_write queue is tuned for the relay on the same host: it
// answers once the data is on disk and never with 429, so a few shards
// fill its requests (2000 samples, the relay's own batch), and a failed
// send is retried quickly and often rather than backed off for long.
var relayQueue = promQueueConfig{
	Capacity:          10000,
	MinShards:         1,
	MaxShards:         8,
	MaxSamplesPerSend: 2000,
	BatchSendDeadline: model.Duration(5 * time.Second),
	MinBackoff:        model.Duration(30 * time.Millisecond),
	MaxBackoff:        model.Duration(5 * time.Second),
}

// RenderPrometheus renders prometheus.yml: the global settings, one scrape
// config over the file_sd files (two when AgentCAFile is set), one for
// Prometheus itself and, when RemoteWriteURL is set, remote_write to the
// relay.
func RenderPrometheus(in PrometheusInput) ([]byte, error) {
	if err := in.validate(); err != nil {
		return nil, err
	}
	cfg := promConfig{
		Global: promGlobal{
			ScrapeInterval:     model.Duration(in.ScrapeInterval),
			ScrapeTimeout:      model.Duration(in.ScrapeTimeout),
			EvaluationInterval: model.Duration(in.EvaluationInterval),
			ExternalLabels:     in.ExternalLabels,
		},
		RuleFiles: in.RuleFiles,
		ScrapeConfigs: append(fileSDScrapeConfigs(in), promScrapeConfig{
			JobName:       JobPrometheus,
			StaticConfigs: []promStaticConfig{{Targets: []string{selfTarget(in.Listen)}}},
		}),
	}
	if len(cfg.Global.ExternalLabels) == 0 {
		cfg.Global.ExternalLabels = nil
	}
	if in.NativeHistograms {
		cfg.Global.ScrapeNativeHistograms = true
	}
	if in.RemoteWriteURL != "" {
		rw := promRemoteWrite{
			URL:                  in.RemoteWriteURL,
			Name:                 "relay",
			RemoteTimeout:        model.Duration(30 * time.Second),
			QueueConfig:          relayQueue,
			Authorization:        promAuthorization(in.RemoteWriteTokenFile),
			SendNativeHistograms: true,
			MetadataConfig:       promMetadataConfig{Send: true, SendInterval: model.Duration(time.Minute)},
		}
		if u, err := url.Parse(in.RemoteWriteURL); err == nil && u.Scheme == "https" && in.AgentCAFile != "" {
			// The relay is the master's own API, with its certificate.
			rw.TLSConfig = &promTLSConfig{CAFile: in.AgentCAFile}
		}
		if in.Major >= 3 {
			// The relay takes 2.0: smaller requests, metadata and start
			// timestamps with every series, UTF-8 names.
			rw.ProtobufMessage = protoV2
		}
		cfg.RemoteWrite = []promRemoteWrite{rw}
	}
	b, err := encodeYAML(cfg)
	if err != nil {
		return nil, fmt.Errorf("render prometheus: %w", err)
	}
	return b, nil
}

// fileSDScrapeConfigs are the scrape configs over the file_sd files:
// JobTargets and, when the agents' API speaks https, JobAgentAPI for the
// node monitors served over it.
func fileSDScrapeConfigs(in PrometheusInput) []promScrapeConfig {
	fileSD := []promFileSDConfig{{
		Files:           []string{filepath.Join(in.SDDir, "*.json")},
		RefreshInterval: model.Duration(in.SDRefreshInterval),
	}}
	targets := promScrapeConfig{JobName: JobTargets, FileSDConfigs: fileSD}
	if in.AgentCAFile == "" {
		return []promScrapeConfig{targets}
	}
	rule := func(action string) []promRelabelConfig {
		return []promRelabelConfig{{SourceLabels: AgentAPILabels, Regex: AgentAPITLS, Action: action}}
	}
	targets.RelabelConfigs = rule("drop")
	return []promScrapeConfig{targets, {
		JobName:        JobAgentAPI,
		TLSConfig:      &promTLSConfig{CAFile: in.AgentCAFile},
		FileSDConfigs:  fileSD,
		RelabelConfigs: rule("keep"),
	}}
}

func (in PrometheusInput) validate() error {
	var c checker
	c.positive("scrape_interval", in.ScrapeInterval)
	c.positive("scrape_timeout", in.ScrapeTimeout)
	if in.ScrapeTimeout > in.ScrapeInterval {
		c.bad("scrape_timeout", "must be <= scrape_interval (%s), got %s", in.ScrapeInterval, in.ScrapeTimeout)
	}
	c.positive("evaluation_interval", in.EvaluationInterval)
	c.positive("sd_refresh_interval", in.SDRefreshInterval)
	labels := make(map[string]string, len(in.ExternalLabels))
	for k, v := range in.ExternalLabels {
		labels[string(k)] = string(v)
	}
	c.labels("external_labels", labels)
	c.check("sd_dir", in.SDDir, checkPath(in.SDDir, false))
	c.check("listen", in.Listen, checkAddr(in.Listen, false))
	if in.RemoteWriteURL != "" {
		c.check("remote_write_url", in.RemoteWriteURL, checkEndpointURL(in.RemoteWriteURL))
	}
	for _, f := range in.RuleFiles {
		c.check("rule_files", f, checkPath(f, false))
	}
	if in.RemoteWriteTokenFile != "" {
		c.check("remote_write_token_file", in.RemoteWriteTokenFile, checkPath(in.RemoteWriteTokenFile, false))
	}
	if in.AgentCAFile != "" {
		c.check("agent_ca_file", in.AgentCAFile, checkPath(in.AgentCAFile, false))
	}
	if in.NativeHistograms && in.Major < 3 {
		c.bad("native_histograms", "needs Prometheus 3 or later (2.x takes --enable-feature=native-histograms), got version %d", max(in.Major, 2))
	}
	return c.err("render prometheus")
}

// selfTarget is where Prometheus reaches its own listen address.
func selfTarget(listen string) string {
	host, port, _ := net.SplitHostPort(listen)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// The prom* types are the subset of Prometheus's configuration the agent
// renders, with Prometheus's own key names and value types.
type promConfig struct {
	Global        promGlobal         `yaml:"global"`
	RuleFiles     []string           `yaml:"rule_files,omitempty"`
	ScrapeConfigs []promScrapeConfig `yaml:"scrape_configs"`
	RemoteWrite   []promRemoteWrite  `yaml:"remote_write,omitempty"`
}

type promGlobal struct {
	ScrapeInterval         model.Duration `yaml:"scrape_interval"`
	ScrapeTimeout          model.Duration `yaml:"scrape_timeout"`
	EvaluationInterval     model.Duration `yaml:"evaluation_interval"`
	ExternalLabels         model.LabelSet `yaml:"external_labels,omitempty"`
	ScrapeNativeHistograms bool           `yaml:"scrape_native_histograms,omitempty"` // 3.x only
}

type promScrapeConfig struct {
	JobName        string              `yaml:"job_name"`
	TLSConfig      *promTLSConfig      `yaml:"tls_config,omitempty"`
	StaticConfigs  []promStaticConfig  `yaml:"static_configs,omitempty"`
	FileSDConfigs  []promFileSDConfig  `yaml:"file_sd_configs,omitempty"`
	RelabelConfigs []promRelabelConfig `yaml:"relabel_configs,omitempty"`
}

type promTLSConfig struct {
	CAFile string `yaml:"ca_file"`
}

type promRelabelConfig struct {
	SourceLabels []string `yaml:"source_labels"`
	Regex        string   `yaml:"regex"`
	Action       string   `yaml:"action"`
}

type promStaticConfig struct {
	Targets []string `yaml:"targets"`
}

type promFileSDConfig struct {
	Files           []string       `yaml:"files"`
	RefreshInterval model.Duration `yaml:"refresh_interval"`
}

type promRemoteWrite struct {
	URL                  string             `yaml:"url"`
	Name                 string             `yaml:"name"`
	RemoteTimeout        model.Duration     `yaml:"remote_timeout"`
	Authorization        *promAuthz         `yaml:"authorization,omitempty"`
	TLSConfig            *promTLSConfig     `yaml:"tls_config,omitempty"`
	ProtobufMessage      string             `yaml:"protobuf_message,omitempty"` // 3.x only
	SendNativeHistograms bool               `yaml:"send_native_histograms"`
	QueueConfig          promQueueConfig    `yaml:"queue_config"`
	MetadataConfig       promMetadataConfig `yaml:"metadata_config"`
}

// protoV2 asks Prometheus 3 for remote-write 2.0.
const protoV2 = "io.prometheus.write.v2.Request"

// PrometheusMajor is the major version of the Prometheus that p runs with
// driver, and how it was found: p.Version when set; else what the binary
// says (prometheus --version, for the process and none drivers); else the
// image's tag (prom/prometheus:v3.16.0); else 2, whose config Prometheus 3
// reads too (and the relay takes its remote-write 1.0).
func PrometheusMajor(ctx context.Context, p PrometheusStack, driver string) (int, string) {
	if p.Version != "" {
		if m, err := parseMajor(p.Version); err == nil {
			return m, "stack.prometheus.version " + p.Version
		}
	}
	if driver != "docker" && p.Binary != "" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, p.Binary, "--version").CombinedOutput()
		if err == nil {
			if m := versionOutput.FindSubmatch(out); m != nil {
				if major, err := parseMajor(string(m[1])); err == nil {
					return major, p.Binary + " --version: " + string(m[1])
				}
			}
		}
	}
	if driver != "process" && p.Image != "" {
		if i := strings.LastIndex(p.Image, ":"); i >= 0 && !strings.Contains(p.Image[i:], "/") {
			if major, err := parseMajor(strings.TrimPrefix(p.Image[i+1:], "v")); err == nil {
				return major, "image tag " + p.Image[i+1:]
			}
		}
	}
	return 2, "not known: assumed 2"
}

var versionOutput = regexp.MustCompile(`(?m)^prometheus, version ([0-9][0-9.]*)`)

// parseMajor reads the major version of "3", "3.16" or "3.16.0" (a
// suffix after '-' or '+' is ignored).
func parseMajor(v string) (int, error) {
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) > 3 {
		return 0, errors.New("must be a version like 3.16.0")
	}
	var major int
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return 0, errors.New("must be a version like 3.16.0")
		}
		if i == 0 {
			major = n
		}
	}
	if major < 2 {
		return 0, errors.New("must be 2 or later")
	}
	return major, nil
}

type promAuthz struct {
	Type            string `yaml:"type"`
	CredentialsFile string `yaml:"credentials_file"`
}

func promAuthorization(tokenFile string) *promAuthz {
	if tokenFile == "" {
		return nil
	}
	return &promAuthz{Type: "Bearer", CredentialsFile: tokenFile}
}

type promQueueConfig struct {
	Capacity          int            `yaml:"capacity"`
	MinShards         int            `yaml:"min_shards"`
	MaxShards         int            `yaml:"max_shards"`
	MaxSamplesPerSend int            `yaml:"max_samples_per_send"`
	BatchSendDeadline model.Duration `yaml:"batch_send_deadline"`
	MinBackoff        model.Duration `yaml:"min_backoff"`
	MaxBackoff        model.Duration `yaml:"max_backoff"`
}

type promMetadataConfig struct {
	Send         bool           `yaml:"send"`
	SendInterval model.Duration `yaml:"send_interval"`
}
