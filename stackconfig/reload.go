package stackconfig

// ReloadStack is the [stack] a running agent applies on SIGHUP when the
// file now says next: next, but with the keys that others took at start
// kept as in cur. Those are the driver and Kubernetes mode (the drivers
// and Helm releases are made at start), whether the master runs
// Prometheus and the Jaeger collector and where they listen (the master
// publishes their URLs for its term), and the trace agent's OTLP/HTTP
// address (given to the applications at start). Everything else (images,
// binaries, versions, intervals, retention, queues, log files, Vector,
// node_exporter and its address) is re-rendered: a changed config file
// is reloaded with SIGHUP, a changed command or image restarts the
// workload. Compare the result with next (Changed) to name the keys that
// need a restart.
func ReloadStack(cur, next Stack) Stack {
	out := next
	out.Driver, out.Helm = cur.Driver, cur.Helm
	out.Prometheus.Enabled, out.Prometheus.Listen = cur.Prometheus.Enabled, cur.Prometheus.Listen
	out.Jaeger.Enabled = cur.Jaeger.Enabled
	out.Jaeger.OTLPGRPCListen, out.Jaeger.OTLPHTTPListen = cur.Jaeger.OTLPGRPCListen, cur.Jaeger.OTLPHTTPListen
	out.TraceAgent.OTLPHTTPListen = cur.TraceAgent.OTLPHTTPListen
	return out
}
