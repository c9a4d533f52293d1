package stackconfig

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
)

func testTargetGroups() []TargetGroup {
	return []TargetGroup{
		{Targets: []string{"10.0.0.2:9100", "10.0.0.1:9100"}, Labels: model.LabelSet{"job": "node", "node": "n1", "cluster": "c1"}},
		{Targets: []string{"10.0.0.3:8080"}, Labels: model.LabelSet{"job": "app", "guid": "a1b2", "__metrics_path__": "/custom/metrics", "__scheme__": "https"}},
		{Targets: []string{"10.0.0.4:9100"}, Labels: model.LabelSet{"job": "node", "node": "n2", "cluster": "c1"}},
	}
}

func TestRenderFileSDGolden(t *testing.T) {
	b, err := RenderFileSD(testTargetGroups())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "file_sd.json.golden", b)
}

func TestRenderFileSDIsDeterministic(t *testing.T) {
	groups := testTargetGroups()
	want, err := RenderFileSD(groups)
	if err != nil {
		t.Fatal(err)
	}
	// Any order of groups and targets renders the same bytes, and the input
	// is not modified.
	before := testTargetGroups()
	for range 20 {
		shuffled := slices.Clone(groups)
		slices.Reverse(shuffled)
		shuffled[0].Targets = slices.Clone(shuffled[0].Targets)
		slices.Reverse(shuffled[0].Targets)
		got, err := RenderFileSD(shuffled)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("order changed the bytes:\n%s\nwant\n%s", got, want)
		}
	}
	if !reflect.DeepEqual(groups, before) {
		t.Fatal("RenderFileSD modified its input")
	}
}

func TestRenderFileSDEmpty(t *testing.T) {
	for _, groups := range [][]TargetGroup{nil, {}} {
		b, err := RenderFileSD(groups)
		if err != nil || string(b) != "[]\n" {
			t.Fatalf("RenderFileSD(%v) = %q, %v; want \"[]\\n\"", groups, b, err)
		}
	}
	b, err := RenderFileSD([]TargetGroup{{}})
	if err != nil || string(b) != "[\n  {\n    \"targets\": [],\n    \"labels\": {}\n  }\n]\n" {
		t.Fatalf("empty group = %q, %v", b, err)
	}
}

func TestRenderFileSDParsesBack(t *testing.T) {
	for _, v := range hostile {
		if v == "" || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			continue // not a printable target; label values take it below
		}
		in := []TargetGroup{{Targets: []string{v}, Labels: model.LabelSet{"job": model.LabelValue(v), "x": model.LabelValue("a" + v)}}}
		b, err := RenderFileSD(in)
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		var got []TargetGroup
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q: %v\n%s", v, err, b)
		}
		if !reflect.DeepEqual(got, in) {
			t.Errorf("%q: parsed back %+v, want %+v", v, got, in)
		}
	}
	for _, v := range hostile {
		in := []TargetGroup{{Targets: []string{"h:1"}, Labels: model.LabelSet{"job": model.LabelValue(v)}}}
		b, err := RenderFileSD(in)
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		var got []TargetGroup
		if err := json.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, in) {
			t.Errorf("%q: parsed back %+v, %v", v, got, err)
		}
	}
}

func TestRenderFileSDRejects(t *testing.T) {
	for _, tc := range []struct {
		groups []TargetGroup
		want   string
	}{
		{[]TargetGroup{{Targets: []string{"a:1"}, Labels: model.LabelSet{"bad-name": "x"}}}, `render file_sd: groups[0].labels: label name must match ^[a-zA-Z_][a-zA-Z0-9_]*$ and value be UTF-8, got "bad-name"="x"`},
		{[]TargetGroup{{}, {Targets: []string{"a:1"}, Labels: model.LabelSet{"x": "\xff"}}}, `groups[1].labels: label name must match`},
		{[]TargetGroup{{Targets: []string{"a:1", ""}}}, `groups[0].targets[1]: must be a non-empty printable string, got ""`},
		{[]TargetGroup{{Targets: []string{"a:1\n"}}}, `groups[0].targets[0]: must be a non-empty printable string, got "a:1\n"`},
	} {
		_, err := RenderFileSD(tc.groups)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RenderFileSD() = %v\nwant it to contain %q", err, tc.want)
		}
	}
}

// WriteGroups streams the bytes JoinGroups builds.
func TestWriteGroupsIsJoinGroups(t *testing.T) {
	groups := testTargetGroups()
	for n := 0; n <= len(groups); n++ {
		var frags [][]byte
		for _, g := range groups[:n] {
			frags = append(frags, GroupJSON(g.Normalize()))
		}
		var buf bytes.Buffer
		if err := WriteGroups(&buf, slices.Values(frags)); err != nil {
			t.Fatal(err)
		}
		if want := JoinGroups(frags); !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("%d groups: WriteGroups wrote\n%s\nJoinGroups built\n%s", n, buf.Bytes(), want)
		}
	}
}
