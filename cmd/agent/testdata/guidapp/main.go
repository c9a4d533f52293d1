// Command guidapp is a guid application for the end-to-end tests, as the
// manager would place one: every INTERVAL it sends one span, in a trace of
// its own, to the node's trace agent (OTLP/HTTP in JSON, so no OTLP
// library is needed), tagged with the resource the agent gives it in
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; it writes one log line
// per span to stdout, saying whether the trace agent took it; and it
// serves its counters on /metrics at 127.0.0.1:PORT.
//
// Like an OpenTelemetry SDK it tries a span again (for up to 5 s) when the
// trace agent refuses the connection, which happens for a moment while the
// agent reloads its config. It is built static (CGO_ENABLED=0) and wrapped
// into an image by the tests.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

func main() {
	endpoint := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	interval, err := time.ParseDuration(os.Getenv("INTERVAL"))
	if err != nil {
		interval = time.Second
	}
	resource := attributes(os.Getenv("OTEL_RESOURCE_ATTRIBUTES"))
	if s := os.Getenv("OTEL_SERVICE_NAME"); s != "" {
		resource["service.name"] = s
	}
	var accepted, refused atomic.Int64
	if port := os.Getenv("PORT"); port != "" {
		http.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "# TYPE guidapp_spans_total counter\nguidapp_spans_total{result=\"accepted\"} %d\nguidapp_spans_total{result=\"refused\"} %d\n",
				accepted.Load(), refused.Load())
		})
		go func() { fmt.Fprintln(os.Stderr, http.ListenAndServe("127.0.0.1:"+port, nil)) }()
	}
	fmt.Printf("guidapp %s started, sending a span every %s to %s\n", resource["guid"], interval, endpoint)
	client := http.Client{Timeout: 2 * time.Second}
	for seq := 1; ; seq++ {
		start := time.Now()
		trace, body := span(resource, seq)
		ok, tries := false, 0
		for deadline := start.Add(5 * time.Second); !ok && time.Now().Before(deadline); tries++ {
			if tries > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			resp, err := client.Post(endpoint+"/v1/traces", "application/json", bytes.NewReader(body))
			if err != nil {
				continue
			}
			resp.Body.Close()
			ok = resp.StatusCode == http.StatusOK
			if !ok && resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusTooManyRequests {
				break // not worth trying again
			}
		}
		if ok {
			accepted.Add(1)
		} else {
			refused.Add(1)
		}
		fmt.Printf("guidapp span seq=%d trace=%s accepted=%t tries=%d at=%d\n", seq, trace, ok, tries, start.UnixNano())
		time.Sleep(time.Until(start.Add(interval)))
	}
}

// attributes parses k=v,k=v.
func attributes(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

// span is an OTLP/HTTP JSON ExportTraceServiceRequest of one span with a
// fresh trace id (whose first byte is never zero, so Jaeger's API writes
// it in full).
func span(resource map[string]string, seq int) (string, []byte) {
	var id [24]byte
	_, _ = rand.Read(id[:])
	id[0] |= 0x10
	trace := hex.EncodeToString(id[:16])
	var attrs []map[string]any
	for k, v := range resource {
		attrs = append(attrs, map[string]any{"key": k, "value": map[string]string{"stringValue": v}})
	}
	now := time.Now().UnixNano()
	b, _ := json.Marshal(map[string]any{"resourceSpans": []any{map[string]any{
		"resource": map[string]any{"attributes": attrs},
		"scopeSpans": []any{map[string]any{
			"scope": map[string]string{"name": "guidapp"},
			"spans": []any{map[string]any{
				"traceId": trace, "spanId": hex.EncodeToString(id[16:]), "name": "order", "kind": 2,
				"startTimeUnixNano": strconv.FormatInt(now-int64(time.Millisecond), 10),
				"endTimeUnixNano":   strconv.FormatInt(now, 10),
				"attributes":        []any{map[string]any{"key": "seq", "value": map[string]string{"intValue": strconv.Itoa(seq)}}},
			}},
		}},
	}}})
	return trace, b
}
