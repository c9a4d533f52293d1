package stackconfig

import (
	"fmt"
	"net"
	"path/filepath"
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
	// RuleFiles are rule files to load (RenderRules), absolute paths.
	RuleFiles []string
}

// Job names of the rendered scrape configs. Targets from the file_sd files
// keep their own job label; JobTargets is only what a group without one gets.
const (
	JobTargets    = "agent-targets"
	JobPrometheus = "prometheus"
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
// config over the file_sd files, one for Prometheus itself and, when
// RemoteWriteURL is set, remote_write to the relay.
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
		ScrapeConfigs: []promScrapeConfig{
			{
				JobName: JobTargets,
				FileSDConfigs: []promFileSDConfig{{
					Files:           []string{filepath.Join(in.SDDir, "*.json")},
					RefreshInterval: model.Duration(in.SDRefreshInterval),
				}},
			},
			{
				JobName:       JobPrometheus,
				StaticConfigs: []promStaticConfig{{Targets: []string{selfTarget(in.Listen)}}},
			},
		},
	}
	if len(cfg.Global.ExternalLabels) == 0 {
		cfg.Global.ExternalLabels = nil
	}
	if in.RemoteWriteURL != "" {
		cfg.RemoteWrite = []promRemoteWrite{{
			URL:            in.RemoteWriteURL,
			Name:           "relay",
			RemoteTimeout:  model.Duration(30 * time.Second),
			QueueConfig:    relayQueue,
			Authorization:  promAuthorization(in.RemoteWriteTokenFile),
			MetadataConfig: promMetadataConfig{Send: true, SendInterval: model.Duration(time.Minute)},
		}}
	}
	b, err := encodeYAML(cfg)
	if err != nil {
		return nil, fmt.Errorf("render prometheus: %w", err)
	}
	return b, nil
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
	ScrapeInterval     model.Duration `yaml:"scrape_interval"`
	ScrapeTimeout      model.Duration `yaml:"scrape_timeout"`
	EvaluationInterval model.Duration `yaml:"evaluation_interval"`
	ExternalLabels     model.LabelSet `yaml:"external_labels,omitempty"`
}

type promScrapeConfig struct {
	JobName       string             `yaml:"job_name"`
	StaticConfigs []promStaticConfig `yaml:"static_configs,omitempty"`
	FileSDConfigs []promFileSDConfig `yaml:"file_sd_configs,omitempty"`
}

type promStaticConfig struct {
	Targets []string `yaml:"targets"`
}

type promFileSDConfig struct {
	Files           []string       `yaml:"files"`
	RefreshInterval model.Duration `yaml:"refresh_interval"`
}

type promRemoteWrite struct {
	URL            string             `yaml:"url"`
	Name           string             `yaml:"name"`
	RemoteTimeout  model.Duration     `yaml:"remote_timeout"`
	Authorization  *promAuthz         `yaml:"authorization,omitempty"`
	QueueConfig    promQueueConfig    `yaml:"queue_config"`
	MetadataConfig promMetadataConfig `yaml:"metadata_config"`
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
