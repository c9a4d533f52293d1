package stackconfig

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

// A reload applies what is rendered and keeps what others took at start;
// the keys kept are the ones Changed names against the file.
func TestReloadKeepsWhatOthersTookAtStart(t *testing.T) {
	cur, next := DefaultConfig, DefaultConfig
	cur.Manager.TracesOTLPEndpoint = "http://127.0.0.1:4317"
	next.LogLevel = "debug"
	next.LogFormat = "json"
	next.Stack.Prometheus.ScrapeInterval = 7 * time.Second
	next.Stack.Prometheus.Listen = "127.0.0.1:19090"
	next.Stack.NodeExporter.Listen = "127.0.0.1:19100"
	next.Stack.Jaeger.Enabled = !cur.Stack.Jaeger.Enabled
	next.Stack.TraceAgent.QueueSize = 77
	next.Stack.TraceAgent.OTLPHTTPListen = "127.0.0.1:24318"
	next.Stack.Driver = "process"
	next.Manager.LogsURL = "http://127.0.0.1:9428/insert/opentelemetry/v1/logs"
	next.Manager.TracesOTLPEndpoint = "http://127.0.0.1:14317"
	cur.Relay.Upstream = Upstreams("http://127.0.0.1:9009/api/v1/write")
	next.Relay.Upstream = Upstreams("http://127.0.0.1:9010/api/v1/write")
	next.Relay.Concurrency = 7
	next.Plugins = []Plugin{{Name: "p1", Command: []string{"/bin/true"}}}
	next.Monitor.Processes = []MonitorProcess{{Name: "sshd", Comm: "sshd"}}
	next.Monitor.Interval, next.Monitor.MaxProcesses, next.Monitor.MaxSeries = 3*time.Second, 77, 777
	next.Monitor.Containers = !cur.Monitor.Containers
	next.API.AllowedImages, next.API.MaxBodyBytes = []string{"quay.example/*"}, 1234
	next.API.TokenFile = "/etc/agent/other-token"
	next.Push.MaxBodyBytes = 4321

	applied := Reload(&cur, &next, true)
	if applied.LogLevel != "debug" || applied.Stack.Prometheus.ScrapeInterval != 7*time.Second || applied.Stack.NodeExporter.Listen != "127.0.0.1:19100" ||
		applied.Stack.TraceAgent.QueueSize != 77 || applied.Manager != next.Manager || !reflect.DeepEqual(applied.Relay, next.Relay) || len(applied.Plugins) != 1 {
		t.Errorf("rendered keys not applied: %+v", applied)
	}
	if m := applied.Monitor; !reflect.DeepEqual(m.Processes, next.Monitor.Processes) || m.Interval != 3*time.Second || m.MaxProcesses != 77 || m.MaxSeries != 777 {
		t.Errorf("monitor groups, interval or limits not applied: %+v", m)
	}
	if !slices.Equal(applied.API.AllowedImages, next.API.AllowedImages) || applied.API.MaxBodyBytes != 1234 || applied.Push.MaxBodyBytes != 4321 {
		t.Errorf("api.allowed_images, api.max_body_bytes or push.max_body_bytes not applied: %+v %+v", applied.API, applied.Push)
	}
	want := []string{"log_format", "stack.driver", "stack.prometheus.listen", "stack.jaeger.enabled", "stack.trace_agent.otlp_http_listen", "api.token_file", "monitor.containers"}
	if got := Changed(&applied, &next); !slices.Equal(got, want) {
		t.Errorf("keys left for a restart %v, want %v", got, want)
	}

	// The Jaeger URLs are published only with a traces endpoint: one that
	// comes or goes waits for a restart.
	next.Manager.TracesOTLPEndpoint = ""
	applied = Reload(&cur, &next, true)
	if got := Changed(&applied, &next); !slices.Contains(got, "manager.traces_otlp_endpoint") {
		t.Errorf("a traces endpoint that went was applied: restart keys %v", got)
	}

	// A relay that comes or goes waits for a restart.
	next.Relay.Upstream = nil
	applied = Reload(&cur, &next, true)
	if got := Changed(&applied, &next); !slices.Contains(got, "relay.upstream") {
		t.Errorf("a relay that went was applied: restart keys %v", got)
	}

	// A monitor that comes or goes waits for a restart.
	next.Monitor.Enabled = !cur.Monitor.Enabled
	applied = Reload(&cur, &next, true)
	if got := Changed(&applied, &next); !slices.Contains(got, "monitor.enabled") || !slices.Contains(got, "monitor.processes") {
		t.Errorf("a monitor that came or went was applied: restart keys %v", got)
	}
	next.Monitor.Enabled = cur.Monitor.Enabled

	// Kubernetes mode: the releases' values follow, the charts and the
	// rest of [stack] are made at start.
	next.Stack.Helm.Timeout = 7 * time.Minute
	applied = Reload(&cur, &next, false)
	got := Changed(&applied, &next)
	if slices.Contains(got, "stack.prometheus.scrape_interval") || slices.Contains(got, "manager.logs_url") || applied.LogLevel != "debug" {
		t.Errorf("Kubernetes mode did not apply [stack.prometheus], [manager] or log_level: restart keys %v", got)
	}
	if !slices.Contains(got, "stack.helm.timeout") || !slices.Contains(got, "stack.trace_agent.queue_size") {
		t.Errorf("Kubernetes mode applied stack.helm or the host's node stack: restart keys %v", got)
	}
}

// The API's certificate files follow a reload while the API serves TLS
// before and after, on a host; TLS that comes or goes (the URLs published
// at start say http or https), and a new CA, wait for a restart.
func TestReloadAPICertificateFiles(t *testing.T) {
	cur := DefaultConfig
	cur.API.CertFile, cur.API.KeyFile, cur.API.CAFile = "/etc/agent/a.pem", "/etc/agent/a-key.pem", "/etc/agent/ca.pem"
	next := cur
	next.API.CertFile, next.API.KeyFile, next.API.CAFile = "/etc/agent/b.pem", "/etc/agent/b-key.pem", "/etc/agent/ca2.pem"
	applied := Reload(&cur, &next, true)
	if applied.API.CertFile != next.API.CertFile || applied.API.KeyFile != next.API.KeyFile {
		t.Errorf("new certificate files not applied: %+v", applied.API)
	}
	if got := Changed(&applied, &next); !slices.Equal(got, []string{"api.ca_file"}) {
		t.Errorf("keys left for a restart %v, want [api.ca_file]", got)
	}
	if applied = Reload(&cur, &next, false); applied.API.CertFile != cur.API.CertFile {
		t.Errorf("Kubernetes mode applied new certificate files (the chart's are fixed): %+v", applied.API)
	}

	plain := cur
	plain.API.CertFile, plain.API.KeyFile, plain.API.CAFile = "", "", ""
	for _, tc := range []struct{ from, to Config }{{cur, plain}, {plain, cur}} {
		applied := Reload(&tc.from, &tc.to, true)
		if got := Changed(&applied, &tc.to); !slices.Contains(got, "api.cert_file") {
			t.Errorf("TLS that came or went was applied: restart keys %v", got)
		}
	}
}
