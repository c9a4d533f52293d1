package releases

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/slave/apps"
	"github.com/agentproj/agent/stackconfig"
)

// Input is what the agent's own values for the charts are rendered from:
// checked configuration and validated app records, never a string from the
// network that was not checked.
type Input struct {
	Cluster string
	// Namespace is the agent's namespace: the metrics and log releases
	// and the Service that follows the master live there.
	Namespace string
	// Service and ServicePort name that Service; TokenSecret holds the
	// relay's bearer token (key "token"), empty for none.
	Service     string
	ServicePort int
	TokenSecret string
	// CASecret, set when the agents' API serves TLS, names the Secret
	// (key "ca.crt") in Namespace with the CA that signed their
	// certificates: the metrics stack reaches the Service over https,
	// scrapes the agents' node monitors over https, and checks every
	// certificate against ServerName.
	CASecret string
	// Relay says whether the relay runs (relay.upstream is set): the
	// metrics stack's remote_write points at it only then.
	Relay      bool
	Prometheus stackconfig.PrometheusStack
	Manager    stackconfig.Manager
	// TracesRelease is the trace collector's release name in each guid's
	// namespace; apps send OTLP to its Service.
	TracesRelease string
	// TracesQueueSize bounds the collector's batches waiting for the
	// manager.
	TracesQueueSize int
}

// ServerName is the Service's DNS name, which the metrics stack dials for
// the relay and http_sd and checks every agent's certificate against: one
// certificate with this name serves all the DaemonSet's pods, whatever
// their addresses.
func (in Input) ServerName() string { return in.Service + "." + in.Namespace + ".svc" }

// serviceURL is the URL of path on the Service that follows the master.
func (in Input) serviceURL(path string) string {
	scheme := "http"
	if in.CASecret != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(in.ServerName(), strconv.Itoa(in.ServicePort)) + path
}

// caFile is where the metrics stack's Prometheus finds CASecret's CA: the
// operator mounts each of prometheusSpec.secrets there.
func (in Input) caFile() string { return "/etc/prometheus/secrets/" + in.CASecret + "/ca.crt" }

// scrapeConfigs are the metrics stack's own scrape configs (raw
// Prometheus config, additionalScrapeConfigs) over the agents' http_sd:
// agent-targets and, when the API speaks https, agent-api for the node
// monitors served over it, as on bare metal (stackconfig.JobAgentAPI).
func (in Input) scrapeConfigs() []any {
	sd := map[string]any{
		"url":              in.serviceURL("/sd/http"),
		"refresh_interval": model.Duration(in.Prometheus.FileSDRefreshInterval).String(),
	}
	targets := map[string]any{"job_name": stackconfig.JobTargets, "http_sd_configs": []any{sd}}
	if in.CASecret == "" {
		return []any{targets}
	}
	sd["tls_config"] = map[string]any{"ca_file": in.caFile()}
	rule := func(action string) []any {
		return []any{map[string]any{"source_labels": stackconfig.AgentAPILabels, "regex": stackconfig.AgentAPITLS, "action": action}}
	}
	targets["relabel_configs"] = rule("drop")
	return []any{targets, map[string]any{
		"job_name":        stackconfig.JobAgentAPI,
		"http_sd_configs": []any{sd},
		// Targets are pod addresses; the certificate names the Service.
		"tls_config":      map[string]any{"ca_file": in.caFile(), "server_name": in.ServerName()},
		"relabel_configs": rule("keep"),
	}}
}

// commonLabels are the labels the agent asks every chart to put on its
// objects (charts that know commonLabels do).
func commonLabels(cluster, role string) map[string]any {
	return map[string]any{
		workload.LabelManaged: workload.ManagedValue,
		workload.LabelCluster: cluster,
		workload.LabelRole:    role,
	}
}

// MetricsValues are the agent's values for kube-prometheus-stack: its
// Prometheus scrapes the agents' http_sd (the targets in etcd), writes to
// the relay through the Service that follows the master, and labels every
// series with the cluster; PodMonitors of any release are picked up (the
// apps'). The node monitors' recording rules (pods, namespaces, workloads,
// nodes, guids; the same file the bare-metal Prometheus loads) become a
// PrometheusRule of the release. Grafana and Alertmanager are off: the
// manager has its own.
func MetricsValues(in Input) (map[string]any, error) {
	rulesYAML, err := stackconfig.RenderRules(stackconfig.RulesInput{ScrapeInterval: in.Prometheus.ScrapeInterval})
	if err != nil {
		return nil, fmt.Errorf("metrics values: %w", err)
	}
	var rules map[string]any
	if err := yaml.Unmarshal(rulesYAML, &rules); err != nil {
		return nil, fmt.Errorf("metrics values: read rendered rules: %w", err)
	}
	ext := map[string]any{"cluster": in.Cluster}
	for k, v := range in.Prometheus.ExternalLabels {
		ext[k] = v
	}
	spec := map[string]any{
		"scrapeInterval":     model.Duration(in.Prometheus.ScrapeInterval).String(),
		"scrapeTimeout":      model.Duration(in.Prometheus.ScrapeTimeout).String(),
		"evaluationInterval": model.Duration(in.Prometheus.EvaluationInterval).String(),
		"externalLabels":     ext,
		// Select the apps' PodMonitors, whatever release made them.
		"podMonitorSelectorNilUsesHelmValues":     false,
		"serviceMonitorSelectorNilUsesHelmValues": false,
		"additionalScrapeConfigs":                 in.scrapeConfigs(),
	}
	if in.CASecret != "" {
		spec["secrets"] = []any{in.CASecret}
	}
	if in.Relay {
		rw := map[string]any{"url": in.serviceURL("/api/v1/write")}
		if in.TokenSecret != "" {
			rw["authorization"] = map[string]any{
				"type":        "Bearer",
				"credentials": map[string]any{"name": in.TokenSecret, "key": "token"},
			}
		}
		if in.CASecret != "" {
			rw["tlsConfig"] = map[string]any{"ca": map[string]any{"secret": map[string]any{"name": in.CASecret, "key": "ca.crt"}}}
		}
		spec["remoteWrite"] = []any{rw}
	}
	v := map[string]any{
		"commonLabels": commonLabels(in.Cluster, workload.RolePrometheus),
		"grafana":      map[string]any{"enabled": false},
		"alertmanager": map[string]any{"enabled": false},
		"prometheus":   map[string]any{"prometheusSpec": spec},
		// The chart names it <chart>-agent-monitor and labels it with the
		// release, which its Prometheus' default rule selector picks.
		"additionalPrometheusRulesMap": map[string]any{"agent-monitor": rules},
	}
	if err := noTemplates(v); err != nil {
		return nil, fmt.Errorf("metrics values: %w", err)
	}
	return v, nil
}

// LogsValues are the agent's values for the vector chart in its Agent role
// (a DaemonSet): the logs of pods in the agent's guid namespaces, with
// node, cluster and guid fields as on bare metal, posted as JSON to
// manager.logs_url. ok is false when there is nowhere to send them.
//
// The vector chart runs customConfig through Helm's tpl, and Vector
// expands $VAR in its configuration: no value here holds "{{" (checked),
// and every $ is doubled, so what the configuration says reaches Vector
// as it is.
func LogsValues(in Input) (map[string]any, bool, error) {
	if in.Manager.LogsURL == "" {
		return nil, false, nil
	}
	// The cluster is a DNS label and the guid comes from the namespace's
	// label, which only the agent sets: the program holds no input that
	// could change its meaning.
	remap := `.cluster = "` + in.Cluster + `"` + "\n" +
		".node = .kubernetes.pod_node_name\n" +
		`.guid = .kubernetes.namespace_labels."` + workload.LabelGUID + `"` + "\n"
	sink := map[string]any{
		"type":     "http",
		"inputs":   []any{"enrich"},
		"uri":      vectorLiteral(in.Manager.LogsURL),
		"method":   "post",
		"encoding": map[string]any{"codec": "json"},
	}
	v := map[string]any{
		"role":         "Agent",
		"commonLabels": commonLabels(in.Cluster, workload.RoleVector),
		"customConfig": map[string]any{
			"data_dir": "/vector-data-dir",
			"api":      map[string]any{"enabled": false},
			"sources": map[string]any{"kubernetes": map[string]any{
				"type": "kubernetes_logs",
				// Only the pods of the agent's guid namespaces, as on bare
				// metal only the agent's containers.
				"extra_namespace_label_selector": workload.LabelGUID,
			}},
			"transforms": map[string]any{"enrich": map[string]any{
				"type": "remap", "inputs": []any{"kubernetes"}, "source": remap,
			}},
			"sinks": map[string]any{"manager": sink},
		},
	}
	if err := noTemplates(v); err != nil {
		return nil, false, fmt.Errorf("logs values: %w", err)
	}
	return v, true, nil
}

// vectorLiteral doubles $, Vector's escape for a literal dollar.
func vectorLiteral(s string) string { return strings.ReplaceAll(s, "$", "$$") }

// noTemplates refuses a value holding "{{": a chart that runs its values
// through tpl would execute it.
func noTemplates(v any) error {
	switch v := v.(type) {
	case string:
		if strings.Contains(v, "{{") {
			return fmt.Errorf("a value holds a template opening {{: %q", v)
		}
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if err := noTemplates(k); err != nil {
				return err
			}
			if err := noTemplates(v[k]); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range v {
			if err := noTemplates(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// Ports of the trace collector in each guid's namespace.
const (
	tracesGRPCPort   = 4317
	tracesHTTPPort   = 4318
	tracesHealthPort = 13133
)

// TracesValues are the agent's values for the jaeger chart in guid's
// namespace: a Jaeger v2 collector that stores nothing, tags every span
// with the guid and the cluster (upsert: an app cannot claim another
// guid), and forwards to manager.traces_otlp_endpoint. ok is false when
// there is nowhere to send traces. A bearer token file cannot reach the
// collector's pod: give the token through the chart's values instead.
func TracesValues(in Input, guid string) (map[string]any, bool, error) {
	m := in.Manager
	if m.TracesOTLPEndpoint == "" {
		return nil, false, nil
	}
	yml, err := stackconfig.RenderJaeger(stackconfig.JaegerInput{
		GRPCListen:   "0.0.0.0:" + strconv.Itoa(tracesGRPCPort),
		HTTPListen:   "0.0.0.0:" + strconv.Itoa(tracesHTTPPort),
		HealthListen: "0.0.0.0:" + strconv.Itoa(tracesHealthPort),
		Endpoint:     m.TracesOTLPEndpoint, Protocol: m.TracesOTLPProtocol,
		QueueSize: max(in.TracesQueueSize, 1),
	})
	if err != nil {
		return nil, false, err
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(yml, &cfg); err != nil {
		return nil, false, fmt.Errorf("read rendered jaeger config: %w", err)
	}
	procs, _ := cfg["processors"].(map[string]any)
	pipes, _ := dig(cfg, "service", "pipelines", "traces").(map[string]any)
	if procs == nil || pipes == nil {
		return nil, false, errors.New("rendered jaeger config has no processors or traces pipeline")
	}
	procs["attributes/guid"] = map[string]any{"actions": []any{
		map[string]any{"key": "guid", "value": guid, "action": "upsert"},
		map[string]any{"key": "cluster", "value": in.Cluster, "action": "upsert"},
	}}
	pipes["processors"] = append([]any{"attributes/guid"}, asList(pipes["processors"])...)
	labels := commonLabels(in.Cluster, workload.RoleJaeger)
	labels[workload.LabelGUID] = guid
	return map[string]any{
		// The Service's name is the release's, so apps know it.
		"fullnameOverride": in.TracesRelease,
		"commonLabels":     labels,
		"userconfig":       cfg,
	}, true, nil
}

func dig(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// otlpEndpoint is where the apps of guid send OTLP (HTTP): the trace
// collector's Service in the guid's namespace.
func (in Input) otlpEndpoint(guid string) string {
	return "http://" + net.JoinHostPort(in.TracesRelease+"."+guid+".svc", strconv.Itoa(tracesHTTPPort))
}

// appEnv is an app's environment as a Kubernetes env list, sorted: the
// node's name from the downward API, the OTEL_* variables the agent sets,
// then the app's own. Kubernetes expands $(VAR) in values; the app's
// values are escaped ($$) so they reach it as sent, as with Docker.
func appEnv(in Input, rec apps.Record, traces bool) []any {
	guid := rec.Spec.GUID
	env := []any{
		map[string]any{"name": "K8S_NODE_NAME", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "spec.nodeName"}}},
	}
	own := map[string]string{
		"OTEL_RESOURCE_ATTRIBUTES": "guid=" + guid + ",node=$(K8S_NODE_NAME),cluster=" + in.Cluster,
		"OTEL_SERVICE_NAME":        guid,
	}
	if traces {
		own["OTEL_EXPORTER_OTLP_ENDPOINT"] = in.otlpEndpoint(guid)
	}
	for _, k := range slices.Sorted(maps.Keys(own)) {
		env = append(env, map[string]any{"name": k, "value": own[k]})
	}
	for _, k := range slices.Sorted(maps.Keys(rec.Spec.Env)) {
		env = append(env, map[string]any{"name": k, "value": strings.ReplaceAll(rec.Spec.Env[k], "$", "$$")})
	}
	return env
}

// appLabels are the Kubernetes labels of an app's objects. The app's own
// labels are Prometheus target labels (any UTF-8 value, up to 1 KiB) and
// cannot all be Kubernetes labels: they go to the scrape target only.
func appLabels(in Input, guid string) map[string]any {
	l := commonLabels(in.Cluster, workload.RoleApp)
	l[workload.LabelGUID] = guid
	return l
}

// targetLabels are the labels the metrics stack puts on an app's series:
// guid, cluster and the app's own, as the bare-metal target has them.
func targetLabels(in Input, rec apps.Record) map[string]any {
	t := map[string]any{"guid": rec.Spec.GUID, "cluster": in.Cluster}
	for k, v := range rec.Spec.Labels {
		t[k] = v
	}
	return t
}

// AppValues are the values of the agent's built-in app chart for an app
// given by image: a Deployment named by the guid, container name and host
// name the guid, the guid labels and the OTEL_* environment.
func AppValues(in Input, rec apps.Record, traces bool) map[string]any {
	v := map[string]any{
		"guid":         rec.Spec.GUID,
		"image":        rec.Spec.Image,
		"args":         toAnyList(rec.Spec.Args),
		"env":          appEnv(in, rec, traces),
		"labels":       appLabels(in, rec.Spec.GUID),
		"targetLabels": targetLabels(in, rec),
		"metrics":      map[string]any{},
	}
	if m := rec.Spec.Metrics; m != nil {
		v["metrics"] = map[string]any{"port": m.Port, "path": m.Path}
	}
	return v
}

// ChartAppValues are the agent's values for an app that names a chart:
// the guid at the top, and under "agent" what the built-in chart gets, for
// the chart to use as it sees fit. They go over the configured chart
// values: they say which app this is.
func ChartAppValues(in Input, rec apps.Record, traces bool) map[string]any {
	agent := map[string]any{
		"guid":         rec.Spec.GUID,
		"cluster":      in.Cluster,
		"env":          appEnv(in, rec, traces),
		"labels":       appLabels(in, rec.Spec.GUID),
		"targetLabels": targetLabels(in, rec),
	}
	if rec.Spec.Image != "" {
		agent["image"] = rec.Spec.Image
	}
	if len(rec.Spec.Args) > 0 {
		agent["args"] = toAnyList(rec.Spec.Args)
	}
	if traces {
		agent["otlpEndpoint"] = in.otlpEndpoint(rec.Spec.GUID)
	}
	if m := rec.Spec.Metrics; m != nil {
		agent["metrics"] = map[string]any{"port": m.Port, "path": m.Path}
	}
	return map[string]any{"guid": rec.Spec.GUID, "agent": agent}
}

func toAnyList(s []string) []any {
	out := make([]any, 0, len(s))
	for _, e := range s {
		out = append(out, e)
	}
	return out
}

// Values puts the agent's values and the user's together: the user's over
// the agent's (stack releases), or the agent's over the user's (overAgent:
// an app's identity is not the user's to change).
func Values(agent map[string]any, ch stackconfig.HelmChart, agentWins bool) (map[string]any, error) {
	user, err := ch.UserValues()
	if err != nil {
		return nil, err
	}
	if agentWins {
		return stackconfig.MergeValues(user, agent), nil
	}
	return stackconfig.MergeValues(agent, user), nil
}

// roundTrip gives values JSON types (float64 numbers, []any lists), as
// Helm's own values have, so hashes and comparisons see what Helm stores.
func roundTrip(v map[string]any) (map[string]any, error) {
	b, err := yaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := yaml.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}
