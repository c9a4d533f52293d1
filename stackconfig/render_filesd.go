package stackconfig

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
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
// and groups by their labels, then their targets. No groups render as "[]".
// A label name Prometheus would refuse (it would drop the whole file) or a
// target that is not a printable string is an error.
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
			if !labelName.MatchString(string(name)) || !utf8.ValidString(string(value)) {
				c.bad(key+".labels", "label name must match %s and value be UTF-8, got %q=%q", labelName, name, value)
			}
		}
		targets := slices.Clone(g.Targets)
		if targets == nil {
			targets = []string{}
		}
		slices.Sort(targets)
		labels := g.Labels.Clone()
		if labels == nil {
			labels = model.LabelSet{}
		}
		out = append(out, TargetGroup{Targets: targets, Labels: labels})
	}
	if err := c.err("render file_sd"); err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b TargetGroup) int {
		if c := cmp.Compare(a.Labels.String(), b.Labels.String()); c != 0 {
			return c
		}
		return slices.Compare(a.Targets, b.Targets)
	})
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil { // Encode ends with a newline
		return nil, fmt.Errorf("render file_sd: %w", err)
	}
	return buf.Bytes(), nil
}
