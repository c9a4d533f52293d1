package samples

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/agentproj/agent/master/relay/remotewrite"
)

// JSONSample is one element of the JSON list format:
// {"name": "...", "timestamp": 1700000000, "tags": {"k": "v"}, "value": 1.5},
// timestamp in seconds (0 or missing: now).
type JSONSample struct {
	Name      string            `json:"name"`
	Timestamp float64           `json:"timestamp,omitempty"`
	Tags      map[string]string `json:"tags,omitempty"`
	Value     *float64          `json:"value"`
}

// MarshalJSON writes NaN and ±Inf, which JSON numbers cannot hold, as the
// strings "NaN", "+Inf" and "-Inf".
func (s JSONSample) MarshalJSON() ([]byte, error) {
	type plain JSONSample
	if s.Value == nil || finite(*s.Value) {
		return json.Marshal(plain(s))
	}
	v := "NaN"
	if math.IsInf(*s.Value, 1) {
		v = "+Inf"
	} else if math.IsInf(*s.Value, -1) {
		v = "-Inf"
	}
	return json.Marshal(struct {
		Name      string            `json:"name"`
		Timestamp float64           `json:"timestamp,omitempty"`
		Tags      map[string]string `json:"tags,omitempty"`
		Value     string            `json:"value"`
	}{s.Name, s.Timestamp, s.Tags, v})
}

// JSON lists the result's samples in the JSON list format, with every
// label (the agent's included) as a tag.
func (r Result) JSON() []JSONSample {
	out := make([]JSONSample, 0, r.Samples)
	for _, ts := range r.Series {
		tags := make(map[string]string, len(ts.Labels)-1)
		for _, l := range ts.Labels[1:] {
			tags[l.Name] = l.Value
		}
		for _, s := range ts.Samples {
			v := s.Value
			out = append(out, JSONSample{Name: ts.Labels[0].Value, Timestamp: float64(s.Timestamp) / 1000, Tags: tags, Value: &v})
		}
	}
	return out
}

// notSeconds is where a JSON timestamp is clearly not in seconds: 1e11
// seconds is the year 5138, while milliseconds of today are about 1.7e12.
const notSeconds = 1e11

// parseJSON reads a JSON list, element by element so that an error names
// the line (and the element) it is on. Unknown fields are refused: a
// misspelt "tag" would otherwise lose every label silently.
func parseJSON(body []byte, now time.Time) ([]raw, int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('[') {
		return nil, 0, &Error{Line: lineAt(body, skipBlank(body, 0)), Msg: "want a JSON list of {\"name\", \"timestamp\", \"tags\", \"value\"}"}
	}
	var (
		raws     []raw
		replaced int
	)
	nowMs := now.UnixMilli()
	for i := 0; dec.More(); i++ {
		start := skipBlank(body, int(dec.InputOffset()))
		line := lineAt(body, start)
		fail := func(format string, args ...any) error {
			return &Error{Line: line, Msg: fmt.Sprintf("element %d: ", i) + fmt.Sprintf(format, args...)}
		}
		var e JSONSample
		if err := dec.Decode(&e); err != nil {
			var se *json.SyntaxError
			var te *json.UnmarshalTypeError
			switch {
			case errors.As(err, &se):
				return nil, 0, &Error{Line: lineAt(body, int(se.Offset)), Msg: fmt.Sprintf("element %d: %s", i, strings.TrimPrefix(se.Error(), "json: "))}
			case errors.As(err, &te):
				return nil, 0, &Error{Line: lineAt(body, int(te.Offset)), Msg: fmt.Sprintf("element %d: %s: want %s, got %s", i, te.Field, jsonWant(te.Field), te.Value)}
			case errors.Is(err, io.ErrUnexpectedEOF):
				return nil, 0, fail("the list ends early")
			}
			return nil, 0, fail("%s", strings.TrimPrefix(err.Error(), "json: "))
		}
		if e.Name == "" {
			return nil, 0, fail("name: missing")
		}
		if e.Value == nil {
			return nil, 0, fail("%s: value: missing (a number)", e.Name)
		}
		r := raw{name: e.Name, value: *e.Value, line: line, ts: nowMs}
		switch t := e.Timestamp; {
		case t == 0:
		case t < 0 || t >= notSeconds:
			replaced++
		default:
			r.ts = int64(math.Round(t * 1000))
		}
		for _, k := range slices.Sorted(maps.Keys(e.Tags)) {
			r.labels = append(r.labels, remotewrite.Label{Name: k, Value: e.Tags[k]})
		}
		raws = append(raws, r)
	}
	if _, err := dec.Token(); err != nil {
		return nil, 0, &Error{Line: lineAt(body, int(dec.InputOffset())), Msg: "the list is not closed with ]"}
	}
	if off := skipBlank(body, int(dec.InputOffset())); off < len(body) {
		return nil, 0, &Error{Line: lineAt(body, off), Msg: "data after the end of the list"}
	}
	return raws, replaced, nil
}

func jsonWant(field string) string {
	switch field {
	case "name":
		return "a string"
	case "tags":
		return "an object of strings"
	}
	return "a number"
}

func skipBlank(b []byte, off int) int {
	for off < len(b) && (b[off] == ' ' || b[off] == '\t' || b[off] == '\r' || b[off] == '\n' || b[off] == ',') {
		off++
	}
	return off
}

// lineAt is the line (from 1) of byte offset off.
func lineAt(b []byte, off int) int {
	return 1 + bytes.Count(b[:min(max(off, 0), len(b))], []byte("\n"))
}
