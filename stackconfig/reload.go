package stackconfig

// Reload is the config a running agent applies on SIGHUP when the file
// now says next: cur with log_level, [[exporters]], [[plugins]] and
// plugins_dir from next, api.allowed_images and api.max_body_bytes (the
// apps API, and every app record checked again where it would run), on a
// host api.cert_file and api.key_file when the API serves TLS before and
// after (the next handshake uses them; whether it serves TLS decides the
// URLs published at start),
// push.max_body_bytes, [relay] from next unless the relay comes or goes
// (whether it runs decides the Prometheus config and the URLs published
// at start), [monitor]'s process groups,
// interval and limits from next when the monitor runs and keeps running
// (what it reads, containers, pods and the mount points, is made at
// start), in Kubernetes mode (stacks unset) [stack.prometheus],
// stack.jaeger.queue_size and [manager] (the Helm releases' values; the
// charts, stack.helm, are made at start), and, when stacks is set (the
// host's stacks), [stack] and [manager] from next except the keys other
// parts took at start:
//
//   - stack.driver and stack.helm (the drivers and releases are made at start);
//   - whether the master runs Prometheus and the Jaeger collector, and
//     where they listen (the master publishes their URLs for its term), and
//     whether manager.traces_otlp_endpoint is set (the Jaeger URLs are
//     published only then); a new endpoint for one that was set applies;
//   - the trace agent's OTLP/HTTP address (given to the applications at start).
//
// Everything else (images, binaries, versions, intervals, retention,
// queues, log files, Vector, node_exporter and its address, the manager's
// URLs, protocol and token files) is rendered again: a changed config file
// is reloaded with SIGHUP, a changed command or image restarts the
// workload. Changed(&applied, next) names the keys that need a restart.
func Reload(cur, next *Config, stacks bool) Config {
	out := *cur
	out.LogLevel, out.Exporters = next.LogLevel, next.Exporters
	out.Plugins, out.PluginsDir = next.Plugins, next.PluginsDir
	out.API.AllowedImages, out.API.MaxBodyBytes = next.API.AllowedImages, next.API.MaxBodyBytes
	if stacks && cur.API.TLS() && next.API.TLS() {
		out.API.CertFile, out.API.KeyFile = next.API.CertFile, next.API.KeyFile
	}
	out.Push = next.Push
	if cur.Relay.Enabled() == next.Relay.Enabled() {
		out.Relay = next.Relay
	}
	if cur.Monitor.Enabled && next.Monitor.Enabled {
		out.Monitor.Processes, out.Monitor.Interval = next.Monitor.Processes, next.Monitor.Interval
		out.Monitor.MaxProcesses, out.Monitor.MaxSeries = next.Monitor.MaxProcesses, next.Monitor.MaxSeries
	}
	if !stacks {
		// Kubernetes mode: what the releases' values are rendered from
		// (releases.Input); the charts themselves are made at start.
		out.Stack.Prometheus, out.Stack.Jaeger.QueueSize = next.Stack.Prometheus, next.Stack.Jaeger.QueueSize
		out.Manager = next.Manager
		return out
	}
	st := next.Stack
	st.Driver, st.Helm = cur.Stack.Driver, cur.Stack.Helm
	st.Prometheus.Enabled, st.Prometheus.Listen = cur.Stack.Prometheus.Enabled, cur.Stack.Prometheus.Listen
	st.Jaeger.Enabled = cur.Stack.Jaeger.Enabled
	st.Jaeger.OTLPGRPCListen, st.Jaeger.OTLPHTTPListen = cur.Stack.Jaeger.OTLPGRPCListen, cur.Stack.Jaeger.OTLPHTTPListen
	st.TraceAgent.OTLPHTTPListen = cur.Stack.TraceAgent.OTLPHTTPListen
	out.Stack = st
	m := next.Manager
	if (m.TracesOTLPEndpoint == "") != (cur.Manager.TracesOTLPEndpoint == "") {
		m.TracesOTLPEndpoint = cur.Manager.TracesOTLPEndpoint
	}
	out.Manager = m
	return out
}
