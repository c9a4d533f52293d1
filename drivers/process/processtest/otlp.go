package processtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// OTLP/HTTP takes JSON bodies (the protobuf messages in their JSON
// mapping, ids in hex), so tests speak it without an OTLP library.

// Span is one span a test sends: ids in hex, as Jaeger's API shows them.
type Span struct {
	TraceID, SpanID, Name string
}

// NewSpan returns a span with fresh random ids. The first byte of the
// trace id is never zero, so Jaeger's API writes it in full.
func NewSpan(name string) Span {
	var b [24]byte
	_, _ = rand.Read(b[:])
	b[0] |= 0x10
	return Span{TraceID: hex.EncodeToString(b[:16]), SpanID: hex.EncodeToString(b[16:]), Name: name}
}

type otlpKV struct {
	Key   string `json:"key"`
	Value struct {
		StringValue string `json:"stringValue"`
	} `json:"value"`
}

func otlpResource(attrs map[string]string) map[string]any {
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	kvs := make([]otlpKV, len(keys))
	for i, k := range keys {
		kvs[i].Key = k
		kvs[i].Value.StringValue = attrs[k]
	}
	return map[string]any{"attributes": kvs}
}

// TracesJSON is an ExportTraceServiceRequest: spans under one resource.
func TracesJSON(resource map[string]string, spans ...Span) []byte {
	now := time.Now().UnixNano()
	list := make([]map[string]any, len(spans))
	for i, s := range spans {
		list[i] = map[string]any{
			"traceId": s.TraceID, "spanId": s.SpanID, "name": s.Name, "kind": 1,
			"startTimeUnixNano": strconv.FormatInt(now-int64(time.Millisecond), 10),
			"endTimeUnixNano":   strconv.FormatInt(now, 10),
		}
	}
	b, _ := json.Marshal(map[string]any{"resourceSpans": []any{map[string]any{
		"resource":   otlpResource(resource),
		"scopeSpans": []any{map[string]any{"scope": map[string]string{"name": "agent-test"}, "spans": list}},
	}}})
	return b
}

// LogsJSON is an ExportLogsServiceRequest: one record per line under one
// resource.
func LogsJSON(resource map[string]string, lines ...string) []byte {
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	recs := make([]map[string]any, len(lines))
	for i, l := range lines {
		recs[i] = map[string]any{"timeUnixNano": now, "body": map[string]string{"stringValue": l}}
	}
	b, _ := json.Marshal(map[string]any{"resourceLogs": []any{map[string]any{
		"resource":  otlpResource(resource),
		"scopeLogs": []any{map[string]any{"scope": map[string]string{"name": "agent-test"}, "logRecords": recs}},
	}}})
	return b
}

// PostOTLP posts an OTLP/HTTP JSON body to base + path ("/v1/traces",
// "/v1/logs") and returns the status code; it gives up after timeout.
func PostOTLP(base, path string, body []byte, timeout time.Duration) (int, error) {
	c := http.Client{Timeout: timeout}
	resp, err := c.Post(base+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
