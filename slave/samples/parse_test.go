package samples

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/agentproj/agent/master/relay/remotewrite"
)

var (
	now  = time.UnixMilli(1_700_000_000_123)
	opts = Options{Now: now, Labels: map[string]string{"ns": "team-a", "node": "n1", "cluster": "c1"}}
)

// series renders a result as "name{labels} value@ts" lines, sorted, for
// comparisons that do not depend on the parsers' order.
func series(r Result) map[string]bool {
	out := map[string]bool{}
	for _, ts := range r.Series {
		for _, s := range ts.Samples {
			out[seriesString(ts.Labels)+" "+formatFloat(s.Value)+"@"+time.UnixMilli(s.Timestamp).UTC().Format("15:04:05.000")] = true
		}
	}
	return out
}

func formatFloat(v float64) string { b, _ := json.Marshal(JSONSample{Value: &v}); return string(b) }

func TestTextFormat(t *testing.T) {
	body := `# HELP jobs_done_total Jobs done.
# TYPE jobs_done_total counter
jobs_done_total{queue="mail"} 42
jobs_done_total{queue="sms",empty=""} 7 1700000000000
# TYPE duration_seconds histogram
duration_seconds_bucket{le="1"} 3
duration_seconds_bucket{le="+Inf"} 5
duration_seconds_sum 4.5
duration_seconds_count 5
temperature 21.5
`
	res, err := Parse([]byte(body), Text, opts)
	if err != nil {
		t.Fatal(err)
	}
	own := `,cluster="c1",node="n1",ns="team-a"`
	want := map[string]bool{
		`jobs_done_total{cluster="c1",node="n1",ns="team-a",queue="mail"} {"name":"","value":42}@22:13:20.123`:     true,
		`jobs_done_total{cluster="c1",node="n1",ns="team-a",queue="sms"} {"name":"","value":7}@22:13:20.000`:       true,
		`duration_seconds_bucket{cluster="c1",le="1",node="n1",ns="team-a"} {"name":"","value":3}@22:13:20.123`:    true,
		`duration_seconds_bucket{cluster="c1",le="+Inf",node="n1",ns="team-a"} {"name":"","value":5}@22:13:20.123`: true,
		`duration_seconds_sum{` + own[1:] + `} {"name":"","value":4.5}@22:13:20.123`:                               true,
		`duration_seconds_count{` + own[1:] + `} {"name":"","value":5}@22:13:20.123`:                               true,
		`temperature{` + own[1:] + `} {"name":"","value":21.5}@22:13:20.123`:                                       true,
	}
	if got := series(res); !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%v\nwant\n%v", got, want)
	}
	if res.Samples != 7 {
		t.Fatalf("Samples = %d", res.Samples)
	}
}

func TestOpenMetrics(t *testing.T) {
	body := "# TYPE jobs counter\njobs_total{queue=\"mail\"} 42 1700000000.5\n# TYPE up gauge\nup 1\n# EOF\n"
	f, err := ContentFormat("application/openmetrics-text; version=1.0.0; charset=utf-8")
	if err != nil || f != OpenMetrics {
		t.Fatalf("ContentFormat = %v, %v", f, err)
	}
	res, err := Parse([]byte(body), f, opts)
	if err != nil {
		t.Fatal(err)
	}
	got := series(res)
	if !got[`jobs_total{cluster="c1",node="n1",ns="team-a",queue="mail"} {"name":"","value":42}@22:13:20.500`] ||
		!got[`up{cluster="c1",node="n1",ns="team-a"} {"name":"","value":1}@22:13:20.123`] || len(got) != 2 {
		t.Fatalf("got %v", got)
	}
	// Without # EOF it is not OpenMetrics.
	_, err = Parse([]byte("up 1\n"), OpenMetrics, opts)
	var pe *Error
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "# EOF") {
		t.Fatalf("OpenMetrics without EOF: %v", err)
	}
}

func TestJSONList(t *testing.T) {
	body := `[
  {"name": "disk_free", "timestamp": 1700000000, "tags": {"mount": "/"}, "value": 1.5},
  {"name": "disk_free", "timestamp": 1700000001.25, "tags": {"mount": "/"}, "value": 2},
  {"name": "load", "value": 0.5},
  {"name": "load", "timestamp": 0, "tags": {"cpu": "1"}, "value": 0.25},
  {"name": "millis", "timestamp": 1700000000999, "value": 3},
  {"name": "negative", "timestamp": -5, "value": 4}
]`
	res, err := Parse([]byte(body), Auto, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		`disk_free{cluster="c1",mount="/",node="n1",ns="team-a"} {"name":"","value":1.5}@22:13:20.000`: true,
		`disk_free{cluster="c1",mount="/",node="n1",ns="team-a"} {"name":"","value":2}@22:13:21.250`:   true,
		`load{cluster="c1",node="n1",ns="team-a"} {"name":"","value":0.5}@22:13:20.123`:                true,
		`load{cluster="c1",cpu="1",node="n1",ns="team-a"} {"name":"","value":0.25}@22:13:20.123`:       true,
		`millis{cluster="c1",node="n1",ns="team-a"} {"name":"","value":3}@22:13:20.123`:                true,
		`negative{cluster="c1",node="n1",ns="team-a"} {"name":"","value":4}@22:13:20.123`:              true,
	}
	if got := series(res); !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%v\nwant\n%v", got, want)
	}
	if res.TimestampsReplaced != 2 {
		t.Fatalf("TimestampsReplaced = %d, want 2 (milliseconds and negative)", res.TimestampsReplaced)
	}
	// Two samples of one series travel as one series, in time order.
	for _, ts := range res.Series {
		if ts.Labels[0].Value == "disk_free" && (len(ts.Samples) != 2 || ts.Samples[0].Timestamp > ts.Samples[1].Timestamp) {
			t.Fatalf("disk_free: %+v", ts)
		}
	}
}

func TestPrefix(t *testing.T) {
	o := opts
	o.Prefix = "plugin_disk_"
	res, err := Parse([]byte(`[{"name":"free","value":1}]`), JSON, o)
	if err != nil || res.Series[0].Labels[0].Value != "plugin_disk_free" {
		t.Fatalf("%+v %v", res, err)
	}
}

// Every bad body is refused whole, with the line it fails on.
func TestBadBodies(t *testing.T) {
	for _, c := range []struct {
		name, body string
		f          Format
		want       string
	}{
		{"text syntax", "ok 1\nok2 2\nbad line here\n", Text, "line 3: "},
		{"text bad value", "a 1\nb{x=\"y\"} notanumber\n", Text, "line 2: "},
		{"text reserved label", "a 1\n\nb{node=\"other\"} 2\n", Text, `line 3: b: label "node" is set by the agent (ns, node, cluster) and cannot be sent`},
		{"text reserved __ label", "a 1\nb{__x=\"1\"} 2\n", Text, `line 2: b: label names starting with __ are reserved, got "__x"`},
		{"text duplicate", "a 1\nb{x=\"1\"} 2\nb{x=\"1\"} 3\n", Text, `line 3: b: two samples of series b{cluster="c1",node="n1",ns="team-a",x="1"} at the same time`},
		{"text empty ok but utf8 name", "é 1\n", Text, "line 1: "},
		{"json not a list", `{"name":"a","value":1}`, JSON, "line 1: want a JSON list"},
		{"json unknown field", "[\n{\"name\":\"a\",\"value\":1},\n{\"name\":\"b\",\"value\":1,\"step\":60}\n]", JSON, `line 3: element 1: unknown field "step"`},
		{"json missing value", "[{\"name\":\"a\",\"value\":1},\n\n{\"name\":\"b\"}]", JSON, "line 3: element 1: b: value: missing (a number)"},
		{"json missing name", "[{\"value\":1}]", JSON, "line 1: element 0: name: missing"},
		{"json value string", "[\n{\"name\":\"a\",\"value\":\"1\"}]", JSON, "line 2: element 0: value: want a number, got string"},
		{"json tag not string", "[\n{\"name\":\"a\",\"value\":1,\"tags\":{\"k\":1}}]", JSON, "line 2: element 0: tags: want an object of strings, got number"},
		{"json syntax", "[\n{\"name\":\"a\",\"value\":1},\n{\"name\":\"b\" \"value\":1}]", JSON, "line 3: element 1: "},
		{"json bad name", "[{\"name\":\"a\",\"value\":1},\n{\"name\":\"disk-free\",\"value\":1}]", JSON, `line 2: metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*, got "disk-free"`},
		{"json bad tag", "[\n{\"name\":\"a\",\"value\":1,\"tags\":{\"a b\":\"1\"}}]", JSON, `line 2: a: label name must match [a-zA-Z_][a-zA-Z0-9_]*, got "a b"`},
		{"json reserved tag", "[\n{\"name\":\"a\",\"value\":1,\"tags\":{\"ns\":\"x\"}}]", JSON, `line 2: a: label "ns" is set by the agent`},
		{"json duplicate", "[\n{\"name\":\"a\",\"timestamp\":5,\"value\":1},\n{\"name\":\"a\",\"timestamp\":5,\"value\":2}]", JSON, "line 3: a: two samples of series"},
		{"json open list", "[{\"name\":\"a\",\"value\":1}", JSON, "line 1: "},
		{"json trailing data", "[{\"name\":\"a\",\"value\":1}]\n[]", JSON, "line 2: data after the end of the list"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := Parse([]byte(c.body), c.f, opts)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("accepted (%d samples) or not an *Error: %v", res.Samples, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
			if len(res.Series) != 0 {
				t.Fatalf("a refused body returned series: %+v", res.Series)
			}
		})
	}
}

func TestContentFormat(t *testing.T) {
	for ct, want := range map[string]Format{
		"":                                  Auto,
		"text/plain; version=0.0.4":         Text * 0, // Auto: sniffed
		"application/x-www-form-urlencoded": Auto,
		"application/json":                  JSON,
		"application/openmetrics-text":      OpenMetrics,
		"application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited": Protobuf,
	} {
		if got, err := ContentFormat(ct); err != nil || got != want {
			t.Errorf("ContentFormat(%q) = %v, %v; want %v", ct, got, err, want)
		}
	}
	for _, ct := range []string{"text/plain; version=9.9", "application/openmetrics-text; version=2.0.0", "application/vnd.google.protobuf"} {
		if _, err := ContentFormat(ct); err == nil {
			t.Errorf("ContentFormat(%q) accepted", ct)
		}
	}
}

// The request the relay gets decodes to the same series and samples.
func TestWriteRequestRoundTrip(t *testing.T) {
	res, err := Parse([]byte("a{x=\"1\"} 1.5 1700000000000\nb 2\n"), Text, opts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remotewrite.Unmarshal(res.WriteRequest().Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Timeseries) != 2 {
		t.Fatalf("%+v", got)
	}
	for _, ts := range got.Timeseries {
		for i := 1; i < len(ts.Labels); i++ {
			if ts.Labels[i-1].Name >= ts.Labels[i].Name {
				t.Fatalf("labels not sorted: %+v", ts.Labels)
			}
		}
	}
}

func TestJSONViewWritesNonFiniteValues(t *testing.T) {
	res, err := Parse([]byte("a NaN\nb +Inf\n"), Text, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res.JSON())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"value":"NaN"`) || !strings.Contains(string(b), `"value":"+Inf"`) {
		t.Fatalf("%s", b)
	}
	if v := *res.JSON()[0].Value; !math.IsNaN(v) && !math.IsInf(v, 1) {
		t.Fatalf("value %v", v)
	}
}

func TestDelimitedProtobuf(t *testing.T) {
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeProtoDelim))
	name, help, v := "queue_depth", "Depth.", 3.0
	mt := dto.MetricType_GAUGE
	lname, lval := "queue", "mail"
	if err := enc.Encode(&dto.MetricFamily{Name: &name, Help: &help, Type: &mt, Metric: []*dto.Metric{{
		Label: []*dto.LabelPair{{Name: &lname, Value: &lval}}, Gauge: &dto.Gauge{Value: &v},
	}}}); err != nil {
		t.Fatal(err)
	}
	f, err := ContentFormat(string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
	if err != nil || f != Protobuf {
		t.Fatalf("ContentFormat = %v, %v", f, err)
	}
	res, err := Parse(buf.Bytes(), f, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := series(res); !got[`queue_depth{cluster="c1",node="n1",ns="team-a",queue="mail"} {"name":"","value":3}@22:13:20.123`] || len(got) != 1 {
		t.Fatalf("got %v", got)
	}
}
