package stackconfig

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// VectorInput is what a node's Vector configuration is made of.
type VectorInput struct {
	// Node and Cluster are set as fields node and cluster of every event.
	Node    string
	Cluster string
	// DataDir is Vector's own state (file checkpoints, the disk buffer).
	DataDir string
	// Docker reads the logs of the containers labelled ManagedLabel=true;
	// GUIDLabel is the container label whose value becomes the guid field.
	Docker       bool
	ManagedLabel string
	GUIDLabel    string
	// Files are absolute paths or globs of host log files to ship.
	Files []string
	// LogsURL and BearerTokenFile are the manager's (Manager.LogsURL and
	// Manager.LogsBearerTokenFile).
	LogsURL         string
	BearerTokenFile string
	// APIListen, when set, turns on Vector's API there (a loopback
	// host:port, VectorStack.APIListen): its GET /health answers once
	// Vector runs its pipelines, which tells the agent that a SIGHUP no
	// longer kills it.
	APIListen string
}

// Component names in the rendered Vector configuration.
const (
	vectorDockerSource = "docker"
	vectorFileSource   = "files"
	vectorTransform    = "enrich"
	vectorSink         = "manager"
	vectorSecretStore  = "agent_manager"
)

// vectorDiskBufferMin is the smallest disk buffer Vector accepts.
const vectorDiskBufferMin = 268435488

// dockerLabelKey is what the agent accepts as a container label key: a
// reverse-DNS-like name, so it is inert in TOML and in a VRL path.
var dockerLabelKey = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,126}[a-zA-Z0-9])?$`)

// RenderVector renders vector.toml: a docker_logs source for the agent's
// containers and a file source for Files, a remap transform that adds
// node, cluster and (from the container label) guid, and an http sink that
// posts JSON to LogsURL with a bearer token, buffered on disk; with
// APIListen, Vector's API on that address, for its GET /health (only
// enabled and address are set: Vector 0.55 replaced the GraphQL API, and
// its keys, by gRPC, and kept GET /health on the same port).
//
// Vector replaces $NAME, ${NAME} and SECRET[a.b] anywhere in the file
// before it reads it: every $ the input brings is doubled ($$ is Vector's
// escape), and SECRET[ is refused in input.
func RenderVector(in VectorInput) ([]byte, error) {
	if err := in.validate(); err != nil {
		return nil, err
	}
	cfg := vectorConfig{
		DataDir:    in.DataDir,
		Sources:    map[string]vectorSource{},
		Transforms: map[string]vectorTransformConfig{},
		Sinks:      map[string]vectorSinkConfig{},
	}
	if in.APIListen != "" {
		cfg.API = &vectorAPI{Enabled: true, Address: in.APIListen}
	}
	var inputs []string
	if in.Docker {
		cfg.Sources[vectorDockerSource] = vectorSource{Type: "docker_logs", IncludeLabels: []string{in.ManagedLabel + "=true"}}
		inputs = append(inputs, vectorDockerSource)
	}
	if len(in.Files) > 0 {
		cfg.Sources[vectorFileSource] = vectorSource{Type: "file", Include: in.Files}
		inputs = append(inputs, vectorFileSource)
	}
	remap, err := vectorRemap(in)
	if err != nil {
		return nil, fmt.Errorf("render vector: %w", err)
	}
	cfg.Transforms[vectorTransform] = vectorTransformConfig{Type: "remap", Inputs: inputs, Source: remap}
	sink := vectorSinkConfig{
		Type:     "http",
		Inputs:   []string{vectorTransform},
		URI:      in.LogsURL,
		Method:   "post",
		Encoding: vectorEncoding{Codec: "json"},
		Buffer:   vectorBuffer{Type: "disk", MaxSize: vectorDiskBufferMin, WhenFull: "block"},
	}
	if in.BearerTokenFile != "" {
		cfg.Secret = map[string]vectorSecret{vectorSecretStore: {
			Type:                     "directory",
			Path:                     filepath.Dir(in.BearerTokenFile),
			RemoveTrailingWhitespace: true,
		}}
		sink.Auth = &vectorAuth{
			Strategy: "bearer",
			Token:    "SECRET[" + vectorSecretStore + "." + filepath.Base(in.BearerTokenFile) + "]",
		}
	}
	cfg.Sinks[vectorSink] = sink

	b, err := toml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("render vector: %w", err)
	}
	return bytes.ReplaceAll(b, []byte("$"), []byte("$$")), nil
}

func (in VectorInput) validate() error {
	var c checker
	c.dnsLabel("node", in.Node)
	c.dnsLabel("cluster", in.Cluster)
	c.check("data_dir", in.DataDir, checkPath(in.DataDir, false))
	if in.Docker {
		for _, l := range []struct{ key, value string }{{"managed_label", in.ManagedLabel}, {"guid_label", in.GUIDLabel}} {
			if !dockerLabelKey.MatchString(l.value) {
				c.bad(l.key, "must match %s, got %q", dockerLabelKey, l.value)
			}
		}
	}
	for i, f := range in.Files {
		c.check(fmt.Sprintf("files[%d]", i), f, checkPath(f, true))
	}
	if !in.Docker && len(in.Files) == 0 {
		c.bad("docker", "no source: enable docker or give files")
	}
	c.check("logs_url", in.LogsURL, checkLogsURL(in.LogsURL))
	if in.BearerTokenFile != "" {
		c.check("bearer_token_file", in.BearerTokenFile, checkLogsTokenFile(in.BearerTokenFile))
	}
	if in.APIListen != "" {
		c.check("api_listen", in.APIListen, checkLoopbackAddr(in.APIListen))
	}
	return c.err("render vector")
}

// vectorRemap is the VRL program of the enrich transform.
func vectorRemap(in VectorInput) (string, error) {
	node, err1 := vrlString(in.Node)
	cluster, err2 := vrlString(in.Cluster)
	label, err3 := vrlString(in.GUIDLabel)
	if err := errors.Join(err1, err2, err3); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, ".node = %s\n.cluster = %s\n", node, cluster)
	if in.Docker {
		// docker_logs puts the container's labels under .label.
		guid := ".label." + label
		fmt.Fprintf(&b, "if exists(%s) {\n  .guid = %s\n}\n", guid, guid)
	}
	return b.String(), nil
}

// vrlEscaper escapes what VRL (0.20) reads specially inside "...": the
// quote, the backslash, the escapes it knows, and { (as {{ opens a template).
var vrlEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`, "\x00", `\0`, "{", `\{`)

// vrlString is s as a VRL string literal. VRL reads \}} inside a literal as
// an escaped }} and then fails on the \} left over, so s must not hold a
// backslash followed by }}: no literal can spell that.
func vrlString(s string) (string, error) {
	if strings.Contains(s, `\}}`) {
		return "", fmt.Errorf("a VRL string cannot hold a backslash followed by }}, got %q", s)
	}
	return `"` + vrlEscaper.Replace(s) + `"`, nil
}

// The vector* types are the subset of Vector's configuration the agent
// renders, with Vector's key names.
type vectorConfig struct {
	DataDir    string                           `toml:"data_dir"`
	API        *vectorAPI                       `toml:"api,omitempty"`
	Secret     map[string]vectorSecret          `toml:"secret,omitempty"`
	Sources    map[string]vectorSource          `toml:"sources"`
	Transforms map[string]vectorTransformConfig `toml:"transforms"`
	Sinks      map[string]vectorSinkConfig      `toml:"sinks"`
}

type vectorAPI struct {
	Enabled bool   `toml:"enabled"`
	Address string `toml:"address"`
}

type vectorSecret struct {
	Type                     string `toml:"type"`
	Path                     string `toml:"path"`
	RemoveTrailingWhitespace bool   `toml:"remove_trailing_whitespace"`
}

type vectorSource struct {
	Type          string   `toml:"type"`
	IncludeLabels []string `toml:"include_labels,omitempty"`
	Include       []string `toml:"include,omitempty"`
}

type vectorTransformConfig struct {
	Type   string   `toml:"type"`
	Inputs []string `toml:"inputs"`
	Source string   `toml:"source,multiline"`
}

type vectorSinkConfig struct {
	Type     string         `toml:"type"`
	Inputs   []string       `toml:"inputs"`
	URI      string         `toml:"uri"`
	Method   string         `toml:"method"`
	Encoding vectorEncoding `toml:"encoding"`
	Auth     *vectorAuth    `toml:"auth,omitempty"`
	Buffer   vectorBuffer   `toml:"buffer"`
}

type vectorEncoding struct {
	Codec string `toml:"codec"`
}

type vectorAuth struct {
	Strategy string `toml:"strategy"`
	Token    string `toml:"token"`
}

type vectorBuffer struct {
	Type     string `toml:"type"`
	MaxSize  int64  `toml:"max_size"`
	WhenFull string `toml:"when_full"`
}
