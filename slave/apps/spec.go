package apps

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/agentproj/agent/stackconfig"
)

// AppSpec is what the manager asks for: the body of POST /api/v1/apps and
// the spec part of an apps/<guid> record. It has no field for privileged
// mode, host mounts, capabilities or resources on purpose: an app can ask
// for nothing but an image, its arguments and environment, and a metrics
// port.
type AppSpec struct {
	// GUID is the manager's name of the app, a DNS label; it becomes the
	// container name, host name and a label.
	GUID string `json:"guid"`
	// Image must match one of api.allowed_images.
	Image string `json:"image"`
	// Node pins the app to a live member; empty lets the agent choose.
	Node string `json:"node,omitempty"`
	// Env is added to the environment the agent sets (OTEL_*).
	Env map[string]string `json:"env,omitempty"`
	// Args are passed to the image's entrypoint.
	Args []string `json:"args,omitempty"`
	// Metrics, when set, is scraped by the cluster's Prometheus.
	Metrics *Metrics `json:"metrics,omitempty"`
	// Labels are added to the app's scrape target (and its workload, under
	// LabelAppPrefix).
	Labels map[string]string `json:"labels,omitempty"`
	// Chart names one of the agent's stack.helm.app_charts: in Kubernetes
	// mode the app is that chart, installed in the guid's namespace, and
	// Image is optional. Only the helm driver runs such an app.
	Chart string `json:"chart,omitempty"`
}

// Metrics says where the app serves Prometheus metrics on its host.
type Metrics struct {
	Port int `json:"port"`
	// Path defaults to /metrics.
	Path string `json:"path,omitempty"`
}

// DefaultMetricsPath is Prometheus' default scrape path.
const DefaultMetricsPath = "/metrics"

// Limits on the size of a spec, besides the body limit.
const (
	maxArgs      = 256
	maxEnv       = 256
	maxLabels    = 64
	maxImageLen  = 255
	maxValueLen  = 4096
	maxLabelLen  = 1024
	maxPathLen   = 256
	maxEnvKeyLen = 128
)

// ReservedEnv are the variables the agent sets for every app, so that its
// traces reach the node's trace agent tagged with the guid; an app may not
// override them (nor send its traces around the node's trace agent).
var ReservedEnv = []string{
	"OTEL_EXPORTER_OTLP_ENDPOINT",
	"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_RESOURCE_ATTRIBUTES",
	"OTEL_SERVICE_NAME",
}

// ReservedLabels are the target labels the agent sets itself.
var ReservedLabels = []string{"guid", "node", "cluster", "job", "instance"}

const (
	domainComp = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	domain     = domainComp + `(?:\.` + domainComp + `)*(?::[0-9]+)?`
	pathComp   = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
)

var (
	envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// imageRef is the Docker reference grammar: [domain[:port]/]path
	// components in lower case, an optional tag, an optional sha256 digest.
	imageRef  = regexp.MustCompile(`^(?:` + domain + `/)?` + pathComp + `(?:/` + pathComp + `)*(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$`)
	urlPathRE = regexp.MustCompile(`^/[A-Za-z0-9/._~%+,;=:@-]*$`)
)

// FieldError is a request that cannot be accepted, naming the field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// ReservedGUIDPrefix starts the names of the stack's own workloads
// (agent-prometheus-<node>, ...); a guid is a container name too.
const ReservedGUIDPrefix = "agent-"

// Validate checks every field as the agent will use it: as a container
// name, host name, environment, Prometheus label and scrape path. It does
// not check the image allow-list (ImagePolicy does, at the API). Errors are
// *FieldError naming the field and the bad value.
func (s *AppSpec) Validate() error {
	if !stackconfig.ValidDNSLabel(s.GUID) {
		return fieldErr("guid", "must be a DNS label (%s), got %q", stackconfig.DNSLabelRule, s.GUID)
	}
	if strings.HasPrefix(s.GUID, ReservedGUIDPrefix) {
		return fieldErr("guid", "must not start with %q, which names the agent's own workloads, got %q", ReservedGUIDPrefix, s.GUID)
	}
	if s.Chart != "" && !stackconfig.ValidDNSLabel(s.Chart) {
		return fieldErr("chart", "must be the name of one of the agent's stack.helm.app_charts (a DNS label), got %q", s.Chart)
	}
	if (s.Chart == "" || s.Image != "") && (len(s.Image) > maxImageLen || !imageRef.MatchString(s.Image)) {
		return fieldErr("image", "must be an image reference ([registry[:port]/]name[:tag][@sha256:digest], name in lower case, at most %d characters), got %q", maxImageLen, s.Image)
	}
	if s.Node != "" && !stackconfig.ValidDNSLabel(s.Node) {
		return fieldErr("node", "must be a DNS label (%s) naming a live member, got %q", stackconfig.DNSLabelRule, s.Node)
	}
	if len(s.Env) > maxEnv {
		return fieldErr("env", "at most %d variables, got %d", maxEnv, len(s.Env))
	}
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		v := s.Env[k]
		if len(k) > maxEnvKeyLen || !envName.MatchString(k) {
			return fieldErr("env", "variable name must match %s (at most %d characters), got %q", envName, maxEnvKeyLen, k)
		}
		if slices.Contains(ReservedEnv, k) {
			return fieldErr("env."+k, "is set by the agent and cannot be overridden (reserved: %s)", strings.Join(ReservedEnv, ", "))
		}
		if strings.ContainsRune(v, 0) {
			return fieldErr("env."+k, "must not contain NUL, got %q", v)
		}
		if len(v) > maxValueLen {
			return fieldErr("env."+k, "at most %d bytes, got %d", maxValueLen, len(v))
		}
	}
	if len(s.Args) > maxArgs {
		return fieldErr("args", "at most %d arguments, got %d", maxArgs, len(s.Args))
	}
	for i, a := range s.Args {
		if strings.ContainsRune(a, 0) {
			return fieldErr(fmt.Sprintf("args[%d]", i), "must not contain NUL, got %q", a)
		}
		if len(a) > maxValueLen {
			return fieldErr(fmt.Sprintf("args[%d]", i), "at most %d bytes, got %d", maxValueLen, len(a))
		}
	}
	if m := s.Metrics; m != nil {
		if m.Port < 1 || m.Port > 65535 {
			return fieldErr("metrics.port", "must be between 1 and 65535, got %d", m.Port)
		}
		if m.Path != "" && (len(m.Path) > maxPathLen || !urlPathRE.MatchString(m.Path) || hasDotSegment(m.Path)) {
			return fieldErr("metrics.path", "must be an absolute URL path of letters, digits and / . _ ~ %% + , ; = : @ - without '..' segments (no spaces, '?' or '#'), got %q", m.Path)
		}
	}
	if len(s.Labels) > maxLabels {
		return fieldErr("labels", "at most %d labels, got %d", maxLabels, len(s.Labels))
	}
	for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
		v := s.Labels[k]
		if !stackconfig.ValidLabelName(k) || len(k) > maxEnvKeyLen {
			return fieldErr("labels", "label name must match [a-zA-Z_][a-zA-Z0-9_]* (at most %d characters), got %q", maxEnvKeyLen, k)
		}
		if strings.HasPrefix(k, "__") {
			return fieldErr("labels", "label names starting with '__' are reserved for Prometheus, got %q", k)
		}
		if slices.Contains(ReservedLabels, k) {
			return fieldErr("labels", "%q is set by the agent (reserved: %s)", k, strings.Join(ReservedLabels, ", "))
		}
		if len(v) > maxLabelLen || strings.ContainsFunc(v, unicode.IsControl) {
			return fieldErr("labels."+k, "must be at most %d bytes without control characters, got %q", maxLabelLen, v)
		}
	}
	return nil
}

func hasDotSegment(p string) bool {
	return slices.Contains(strings.Split(p, "/"), "..")
}

// Normalize returns the spec with defaults applied and empty collections
// as nil, so that two requests that mean the same compare equal.
func (s AppSpec) Normalize() AppSpec {
	if len(s.Env) == 0 {
		s.Env = nil
	} else {
		s.Env = maps.Clone(s.Env)
	}
	if len(s.Labels) == 0 {
		s.Labels = nil
	} else {
		s.Labels = maps.Clone(s.Labels)
	}
	if len(s.Args) == 0 {
		s.Args = nil
	} else {
		s.Args = slices.Clone(s.Args)
	}
	if s.Metrics != nil {
		m := *s.Metrics
		if m.Path == "" {
			m.Path = DefaultMetricsPath
		}
		s.Metrics = &m
	}
	return s
}

// Equal reports whether two specs mean the same app.
func (s AppSpec) Equal(o AppSpec) bool {
	a, _ := json.Marshal(s.Normalize())
	b, _ := json.Marshal(o.Normalize())
	return bytes.Equal(a, b)
}

// ImagePolicy is the api.allowed_images allow-list.
type ImagePolicy []string

// Check refuses an image that matches no pattern; with no pattern at all,
// every image is refused.
func (p ImagePolicy) Check(image string) error {
	if len(p) == 0 {
		return fieldErr("image", "no image is allowed: api.allowed_images must be configured on the agent, got %q", image)
	}
	for _, pat := range p {
		if ok, err := path.Match(pat, image); err == nil && ok {
			return nil
		}
	}
	return fieldErr("image", "must match one of api.allowed_images (%s), got %q", strings.Join(p, ", "), image)
}

// CheckChart refuses a chart that is not one of charts (the names of
// stack.helm.app_charts); an app without a chart passes.
func CheckChart(chart string, charts []string) error {
	switch {
	case chart == "" || slices.Contains(charts, chart):
		return nil
	case len(charts) == 0:
		return fieldErr("chart", "no chart is allowed: stack.helm.app_charts must be configured on the agent, got %q", chart)
	}
	return fieldErr("chart", "must be one of stack.helm.app_charts (%s), got %q", strings.Join(charts, ", "), chart)
}

// DecodeApp reads one JSON app spec from r, rejecting unknown fields,
// duplicate keys, case variants of field names and trailing data,
// validates it and applies policy. The spec is returned normalized. Errors
// are *FieldError for a bad field, or a decoding error (which may wrap
// *http.MaxBytesError when r is size-limited).
func DecodeApp(r io.Reader, policy ImagePolicy) (AppSpec, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return AppSpec{}, fmt.Errorf("body: %w", err)
	}
	if err := checkKeys(data, reflect.TypeFor[AppSpec]()); err != nil {
		return AppSpec{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s AppSpec
	if err := dec.Decode(&s); err != nil {
		return AppSpec{}, decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return AppSpec{}, decodeError(err)
		}
		return AppSpec{}, errors.New("body: must hold a single JSON object, found data after it")
	}
	if err := s.Validate(); err != nil {
		return AppSpec{}, err
	}
	if s.Chart == "" || s.Image != "" {
		if err := policy.Check(s.Image); err != nil {
			return AppSpec{}, err
		}
	}
	return s.Normalize(), nil
}

// decodeError names the field of a JSON type error.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fieldErr(te.Field, "must be a JSON %s, got %s", jsonKind(te.Type.Kind().String()), te.Value)
	}
	if errors.Is(err, io.EOF) {
		return errors.New("body: must be a JSON object, got nothing")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fieldErr(strings.Trim(name, `"`), "unknown field (allowed: guid, image, node, env, args, metrics, labels, chart; metrics: port, path)")
	}
	return fmt.Errorf("body: %w", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "int", "int64":
		return "integer"
	case "map", "struct", "ptr":
		return "object"
	case "slice":
		return "array"
	default:
		return goKind
	}
}
