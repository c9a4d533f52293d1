package etcd

import (
	"strings"
	"testing"
)

// ParseTargetKV is the one rule every target value is held to, on the way
// to file_sd and http_sd alike.
func TestParseTargetKV(t *testing.T) {
	k := NewKeys("/agent", "test")
	big := `{"targets":["127.0.0.1:9100"],"labels":{"pad":"` + strings.Repeat("x", 16<<10) + `"}}`
	for _, c := range []struct {
		name, job, value string
		want             string // "" = valid; else a part of the error
	}{
		{"plain", "node", `{"targets":["127.0.0.1:9100"],"labels":{"node":"n1","cluster":"c"}}`, ""},
		{"metrics path and scheme", "app", `{"targets":["a.example:443"],"labels":{"__metrics_path__":"/m","__scheme__":"https"}}`, ""},
		{"escaped pair is UTF-8", "node", `{"targets":["127.0.0.1:9100"],"labels":{"x":"\ud83d\ude00 \u00e9"}}`, ""},
		{"key too long for a file", strings.Repeat("j", 300), `{"targets":["127.0.0.1:9100"]}`, "job"},
		{"job with a newline", "a\nb", `{"targets":["127.0.0.1:9100"]}`, "job"},
		{"job ..", "..", `{"targets":["127.0.0.1:9100"]}`, "job"},
		{"job with a leading dot", ".leader-revision", `{"targets":["127.0.0.1:9100"]}`, "job"},
		{"job with a backslash", `a\b`, `{"targets":["127.0.0.1:9100"]}`, "job"},
		{"non-UTF-8 label value", "node", "{\"targets\":[\"127.0.0.1:9100\"],\"labels\":{\"x\":\"a\xff\"}}", "labels.x: must be UTF-8"},
		{"lone surrogate escape", "node", `{"targets":["127.0.0.1:9100"],"labels":{"x":"a\udc00"}}`, "labels.x: must be UTF-8"},
		{"high surrogate without low", "node", `{"targets":["127.0.0.1:9100"],"labels":{"x":"\ud83d."}}`, "labels.x: must be UTF-8"},
		{"non-UTF-8 target", "node", "{\"targets\":[\"h\xfe:9100\"]}", "targets[0]: must be UTF-8"},
		{"reserved label", "node", `{"targets":["127.0.0.1:9100"],"labels":{"__address__":"10.0.0.1:80"}}`, `"__address__": names starting with __ are reserved`},
		{"reserved param label", "node", `{"targets":["127.0.0.1:9100"],"labels":{"__param_target":"x"}}`, "reserved"},
		{"bad scheme", "node", `{"targets":["127.0.0.1:9100"],"labels":{"__scheme__":"ftp"}}`, "labels.__scheme__: must be http or https"},
		{"bad metrics path", "node", `{"targets":["127.0.0.1:9100"],"labels":{"__metrics_path__":"m?x=1"}}`, "labels.__metrics_path__"},
		{"label value not a string", "node", `{"targets":["127.0.0.1:9100"],"labels":{"x":1}}`, "cannot unmarshal number"},
		{"bad label name", "node", `{"targets":["127.0.0.1:9100"],"labels":{"bad-name":"x"}}`, "labels: name must match"},
		{"no targets", "node", `{"targets":[]}`, "targets: none"},
		{"not host:port", "node", `{"targets":["127.0.0.1"]}`, "targets[0]: must be host:port"},
		{"port not a number", "node", `{"targets":["h:http"]}`, "port must be a number"},
		{"unknown field", "node", `{"targets":["127.0.0.1:9100"],"extra":1}`, "unknown field"},
		{"trailing data", "node", `{"targets":["127.0.0.1:9100"]} {}`, "data after the JSON object"},
		{"too big", "node", big, "more than the 16384 a target group may have"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tg, err := k.ParseTargetKV([]byte(k.Target("n1", c.job, "0")), []byte(c.value))
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("accepted %+v; want an error containing %q", tg, c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
		})
	}
}
