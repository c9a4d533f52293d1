package samples

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/agentproj/agent/master/relay/remotewrite"
)

// Options says how Parse completes what a body gives.
type Options struct {
	// Now is the time of samples that carry none (and of JSON timestamps
	// that are clearly not seconds).
	Now time.Time
	// Prefix is prepended to every metric name (plugin_<name>_).
	Prefix string
	// Labels are added to every sample (ns, node, cluster). A sample that
	// has a label of one of these names is refused.
	Labels map[string]string
}

// Result is a parsed body: one entry per series, its samples in time order.
type Result struct {
	Series []remotewrite.TimeSeries
	// Samples counts the samples of all series.
	Samples int
	// TimestampsReplaced counts JSON timestamps that were clearly not
	// seconds (negative, or 1e11 and above: milliseconds or finer) and
	// were taken as Now, as the agents before this one did.
	TimestampsReplaced int
}

// WriteRequest is the result as a remote-write 1.0 request.
func (r Result) WriteRequest() *remotewrite.WriteRequest {
	return &remotewrite.WriteRequest{Timeseries: r.Series}
}

// Error is a body that can never be accepted. Line is the line it fails
// on, counted from 1, or 0 when no single line is to blame.
type Error struct {
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// raw is a sample as a format gives it, before the agent's checks.
type raw struct {
	name   string
	labels []remotewrite.Label // without __name__, any order
	value  float64
	ts     int64 // unix ms
	line   int   // 0: find it in the body if needed
}

// Parse reads body in format f and checks all of it: on the first bad
// sample it returns an *Error naming the line and the reason, and nothing
// else.
func Parse(body []byte, f Format, opt Options) (Result, error) {
	if f == Auto {
		f = sniff(body)
	}
	var (
		raws     []raw
		replaced int
		err      error
	)
	switch f {
	case JSON:
		raws, replaced, err = parseJSON(body, opt.Now)
	default:
		raws, err = parseExpfmt(body, f, opt.Now)
	}
	if err != nil {
		return Result{}, err
	}
	res, err := finish(raws, body, opt)
	res.TimestampsReplaced = replaced
	return res, err
}

// parseExpfmt reads the text format, OpenMetrics or delimited protobuf
// with expfmt and flattens histograms and summaries into their series
// (_bucket, _sum, _count, quantile), as a Prometheus scrape does.
func parseExpfmt(body []byte, f Format, now time.Time) ([]raw, error) {
	var fams []*dto.MetricFamily
	switch f {
	case Text:
		p := expfmt.NewTextParser(model.LegacyValidation)
		m, err := p.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			return nil, expfmtError(err)
		}
		for _, fam := range m {
			fams = append(fams, fam)
		}
	default:
		format := expfmt.NewFormat(expfmt.TypeOpenMetrics)
		if f == Protobuf {
			format = expfmt.NewFormat(expfmt.TypeProtoDelim)
		}
		dec := expfmt.NewDecoder(bytes.NewReader(body), format)
		for {
			fam := &dto.MetricFamily{}
			err := dec.Decode(fam)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, expfmtError(err)
			}
			fams = append(fams, fam)
		}
	}
	vec, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.TimeFromUnixNano(now.UnixNano())}, fams...)
	if err != nil {
		return nil, &Error{Msg: strings.TrimPrefix(err.Error(), "expfmt.extractSamples: ")}
	}
	raws := make([]raw, 0, len(vec))
	for _, s := range vec {
		r := raw{name: string(s.Metric[model.MetricNameLabel]), value: float64(s.Value), ts: int64(s.Timestamp)}
		r.labels = make([]remotewrite.Label, 0, len(s.Metric)-1)
		for k, v := range s.Metric {
			if k != model.MetricNameLabel {
				r.labels = append(r.labels, remotewrite.Label{Name: string(k), Value: string(v)})
			}
		}
		raws = append(raws, r)
	}
	return raws, nil
}

// expfmtError turns expfmt's errors into *Error, keeping the line.
func expfmtError(err error) error {
	var pe expfmt.ParseError
	if errors.As(err, &pe) {
		return &Error{Line: pe.Line, Msg: pe.Msg}
	}
	return &Error{Msg: err.Error()}
}

// finish checks names and labels, adds the agent's labels, groups samples
// by series and refuses two samples of one series at one time (the
// receiver would refuse the whole batch they travel in).
func finish(raws []raw, body []byte, opt Options) (Result, error) {
	own := make([]remotewrite.Label, 0, len(opt.Labels))
	for k, v := range opt.Labels {
		own = append(own, remotewrite.Label{Name: k, Value: v})
	}
	var res Result
	index := map[string]int{} // series key -> index in res.Series
	var key []byte
	for i := range raws {
		r := &raws[i]
		fail := func(label, format string, args ...any) error {
			line := r.line
			if line == 0 {
				line = findLine(body, r.name, label)
			}
			return &Error{Line: line, Msg: fmt.Sprintf(format, args...)}
		}
		name := opt.Prefix + r.name
		if !model.LegacyValidation.IsValidMetricName(name) {
			return Result{}, fail("", "metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*, got %q", name)
		}
		labels := make([]remotewrite.Label, 0, len(r.labels)+len(own)+1)
		labels = append(labels, remotewrite.Label{Name: model.MetricNameLabel, Value: name})
		for _, l := range r.labels {
			switch {
			case !model.LegacyValidation.IsValidLabelName(l.Name):
				return Result{}, fail(l.Name, "%s: label name must match [a-zA-Z_][a-zA-Z0-9_]*, got %q", r.name, l.Name)
			case strings.HasPrefix(l.Name, "__"):
				return Result{}, fail(l.Name, "%s: label names starting with __ are reserved, got %q", r.name, l.Name)
			case !utf8.ValidString(l.Value):
				return Result{}, fail(l.Name, "%s: label %s: value must be UTF-8, got %q", r.name, l.Name, l.Value)
			}
			if _, ok := opt.Labels[l.Name]; ok {
				return Result{}, fail(l.Name, "%s: label %q is set by the agent (ns, node, cluster) and cannot be sent", r.name, l.Name)
			}
			if l.Value != "" { // an empty value is no label, as in Prometheus
				labels = append(labels, l)
			}
		}
		labels = append(labels, own...)
		slices.SortFunc(labels, func(a, b remotewrite.Label) int { return strings.Compare(a.Name, b.Name) })
		for j := 1; j < len(labels); j++ {
			if labels[j].Name == labels[j-1].Name {
				return Result{}, fail(labels[j].Name, "%s: label %q appears twice", r.name, labels[j].Name)
			}
		}
		key = key[:0]
		for _, l := range labels {
			key = append(append(append(key, l.Name...), 0xff), l.Value...)
			key = append(key, 0xff)
		}
		idx, ok := index[string(key)]
		if !ok {
			idx = len(res.Series)
			index[string(key)] = idx
			res.Series = append(res.Series, remotewrite.TimeSeries{Labels: labels})
		}
		ts := &res.Series[idx]
		ts.Samples = append(ts.Samples, remotewrite.Sample{Value: r.value, Timestamp: r.ts})
		res.Samples++
	}
	// Samples of a series go in time order (a receiver refuses older ones
	// after newer); two at the same time are a contradiction.
	for i := range res.Series {
		ts := &res.Series[i]
		if len(ts.Samples) < 2 {
			continue
		}
		slices.SortStableFunc(ts.Samples, func(a, b remotewrite.Sample) int { return int(min(max(a.Timestamp-b.Timestamp, -1), 1)) })
		for j := 1; j < len(ts.Samples); j++ {
			if ts.Samples[j].Timestamp == ts.Samples[j-1].Timestamp {
				name := ts.Labels[0].Value
				return Result{}, &Error{
					Line: duplicateLine(raws, ts, ts.Samples[j].Timestamp, body, opt),
					Msg:  fmt.Sprintf("%s: two samples of series %s at the same time %s", name, seriesString(ts.Labels), time.UnixMilli(ts.Samples[j].Timestamp).UTC().Format(time.RFC3339Nano)),
				}
			}
		}
	}
	return res, nil
}

// duplicateLine finds the line of the second sample of a series at ts:
// from the JSON element, or the second text line of the series' name
// that holds each of its own labels.
func duplicateLine(raws []raw, ts *remotewrite.TimeSeries, at int64, body []byte, opt Options) int {
	seen := false
	for _, r := range raws {
		if r.ts != at || r.line == 0 || !sameSeries(r, ts.Labels) {
			continue
		}
		if seen {
			return r.line
		}
		seen = true
	}
	name := strings.TrimPrefix(ts.Labels[0].Value, opt.Prefix)
	var want [][]byte
	for _, l := range ts.Labels[1:] {
		if _, own := opt.Labels[l.Name]; !own {
			want = append(want, []byte(l.Name+"="+strconv.Quote(l.Value)))
		}
	}
	n := 0
	return eachLine(body, name, func(after []byte) bool {
		for _, w := range want {
			if !bytes.Contains(after, w) {
				return false
			}
		}
		n++
		return n == 2
	})
}

func sameSeries(r raw, labels []remotewrite.Label) bool {
	for _, l := range r.labels {
		if l.Value == "" {
			continue
		}
		if !slices.Contains(labels, l) {
			return false
		}
	}
	return true
}

func seriesString(labels []remotewrite.Label) string {
	var b strings.Builder
	b.WriteString(labels[0].Value)
	b.WriteByte('{')
	for i, l := range labels[1:] {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}

// findLine finds the first sample line of the text format or OpenMetrics
// that starts with the metric name (and names label, when given), for
// errors found after expfmt has dropped the line numbers. 0 when none.
func findLine(body []byte, name, label string) int {
	return eachLine(body, name, func(after []byte) bool {
		return label == "" || bytes.Contains(after, []byte(label+"=")) || bytes.Contains(after, []byte(strconv.Quote(label)+"="))
	})
}

// eachLine calls match with the rest of every line that starts with the
// metric name, and returns the number of the first line it accepts.
func eachLine(body []byte, name string, match func(after []byte) bool) int {
	for n := 1; len(body) > 0; n++ {
		line, rest, _ := bytes.Cut(body, []byte("\n"))
		body = rest
		after, ok := bytes.CutPrefix(bytes.TrimLeft(line, " \t"), []byte(name))
		if ok && len(after) > 0 && (after[0] == '{' || after[0] == ' ' || after[0] == '\t') && match(after) {
			return n
		}
	}
	return 0
}

// finite reports whether v can be written as a JSON number.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
