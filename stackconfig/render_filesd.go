package stackconfig

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/common/model"
)

// TargetGroup is one Prometheus target group, as in file_sd files and
// http_sd answers: scrape targets (host:port) and the labels they share.
// Each group carries its own job label: Prometheus keeps a target's job
// label over the scrape config's job_name, so one scrape config serves all
// jobs; __metrics_path__ and __scheme__ are set where not /metrics and http.
type TargetGroup struct {
	Targets []string       `json:"targets"`
	Labels  model.LabelSet `json:"labels"`
}

// RenderFileSD renders groups as Prometheus file_sd (and http_sd) JSON. The
// bytes depend only on the set of groups: targets are sorted within a group
// and groups by GroupOrder. No groups render as "[]". A label name
// Prometheus would refuse (it would drop the whole file) or a target that is
// not a printable string is an error.
func RenderFileSD(groups []TargetGroup) ([]byte, error) {
	var c checker
	out := make([]TargetGroup, 0, len(groups))
	for i, g := range groups {
		key := fmt.Sprintf("groups[%d]", i)
		for j, t := range g.Targets {
			if t == "" || !utf8.ValidString(t) || strings.ContainsFunc(t, unicode.IsControl) {
				c.bad(fmt.Sprintf("%s.targets[%d]", key, j), "must be a non-empty printable string, got %q", t)
			}
		}
		for name, value := range g.Labels {
			if !ValidLabelName(string(name)) || !utf8.ValidString(string(value)) {
				c.bad(key+".labels", "label name must match %s and value be UTF-8, got %q=%q", labelName, name, value)
			}
		}
		out = append(out, g.Normalize())
	}
	if err := c.err("render file_sd"); err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b TargetGroup) int { return cmp.Compare(GroupOrder(a), GroupOrder(b)) })
	frags := make([][]byte, len(out))
	for i, g := range out {
		frags[i] = GroupJSON(g)
	}
	return JoinGroups(frags), nil
}

// Normalize returns a copy with sorted targets and non-nil slices and maps.
func (g TargetGroup) Normalize() TargetGroup {
	targets := slices.Clone(g.Targets)
	if targets == nil {
		targets = []string{}
	}
	slices.Sort(targets)
	labels := g.Labels.Clone()
	if labels == nil {
		labels = model.LabelSet{}
	}
	return TargetGroup{Targets: targets, Labels: labels}
}

// GroupOrder is the key RenderFileSD sorts normalized groups by: the label
// set, then the targets.
func GroupOrder(g TargetGroup) string {
	return g.Labels.String() + "\x00" + strings.Join(g.Targets, "\x00")
}

// GroupJSON is one normalized group as an element of the RenderFileSD
// array. Callers that re-render often (the master's file_sd writer) keep it
// per group, so that a file is a concatenation rather than a new encoding.
func GroupJSON(g TargetGroup) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("  ", "  ")
	if err := enc.Encode(g); err != nil {
		panic(err) // strings and maps of strings always encode
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// WriteGroups writes GroupJSON fragments, in the order given, to w: the
// bytes JoinGroups returns, without building them (the agent's http_sd
// streams 10,000 groups straight into gzip). Buffer w: it gets a write per
// fragment and separator.
func WriteGroups(w io.Writer, frags iter.Seq[[]byte]) error {
	first := true
	for f := range frags {
		sep := ",\n  "
		if first {
			sep, first = "[\n  ", false
		}
		if _, err := io.WriteString(w, sep); err != nil {
			return err
		}
		if _, err := w.Write(f); err != nil {
			return err
		}
	}
	end := "\n]\n"
	if first {
		end = "[]\n"
	}
	_, err := io.WriteString(w, end)
	return err
}

// JoinGroups joins GroupJSON fragments, in the order given, into the JSON
// array RenderFileSD returns.
func JoinGroups(frags [][]byte) []byte {
	if len(frags) == 0 {
		return []byte("[]\n")
	}
	n := 4
	for _, f := range frags {
		n += len(f) + 4
	}
	out := make([]byte, 0, n)
	out = append(out, "[\n"...)
	for i, f := range frags {
		out = append(out, "  "...)
		out = append(out, f...)
		if i < len(frags)-1 {
			out = append(out, ',')
		}
		out = append(out, '\n')
	}
	return append(out, "]\n"...)
}
