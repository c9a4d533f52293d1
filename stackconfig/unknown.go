package stackconfig

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
)

// knownKeys lists every key of Config as a TOML path: "etcd.endpoints",
// "exporters[].job"; a map (labels) is one key whatever it holds.
func knownKeys() []string {
	var keys []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := f.Tag.Get("mapstructure")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			key := prefix + name
			ft := f.Type
			switch {
			case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Duration]():
				walk(key+".", ft)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(key+"[].", ft.Elem())
			case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
				walk(key+".*.", ft.Elem()) // * is a name the operator chooses
			default:
				keys = append(keys, key)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
	slices.Sort(keys)
	return keys
}

// unknownKeys walks settings (the file's tables, as viper reads them)
// along t and returns the keys t has no field for: "bogus",
// "etcd.endpoint", "exporters[1].path". Decoding stops at the first bad
// value of a table and so cannot be asked for them.
func unknownKeys(prefix string, settings map[string]any, t reflect.Type) []string {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if name := f.Tag.Get("mapstructure"); name != "" && name != "-" && f.IsExported() {
			fields[name] = f.Type
		}
	}
	var out []string
	for k, v := range settings {
		ft, ok := fields[k]
		switch {
		case !ok:
			out = append(out, prefix+k)
		case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Duration]():
			if sub, ok := v.(map[string]any); ok {
				out = append(out, unknownKeys(prefix+k+".", sub, ft)...)
			}
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			for i, el := range asTables(v) {
				out = append(out, unknownKeys(fmt.Sprintf("%s%s[%d].", prefix, k, i), el, ft.Elem())...)
			}
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			// A table of named tables ([stack.helm.app_charts.<name>]).
			if sub, ok := v.(map[string]any); ok {
				for name, el := range sub {
					if m, ok := el.(map[string]any); ok {
						out = append(out, unknownKeys(prefix+k+"."+name+".", m, ft.Elem())...)
					}
				}
			}
		}
	}
	return out
}

// asTables returns the tables of an array of tables ([[exporters]]).
func asTables(v any) []map[string]any {
	switch v := v.(type) {
	case []map[string]any:
		return v
	case []any:
		out := make([]map[string]any, 0, len(v))
		for _, el := range v {
			m, _ := el.(map[string]any)
			out = append(out, m)
		}
		return out
	}
	return nil
}

var (
	index   = regexp.MustCompile(`\[\d+\]`)
	noIndex = regexp.MustCompile(`\[\]`)
)

// unknownKeysError says, one line per key, which keys of the file at path
// are not configuration keys, with the nearest known key when one is close.
func unknownKeysError(path string, unused []string) error {
	known := knownKeys()
	slices.Sort(unused)
	var b strings.Builder
	fmt.Fprintf(&b, "config file %s:", path)
	for _, k := range unused {
		fmt.Fprintf(&b, "\n  unknown key %s", k)
		if s := suggest(k, named(known, k)); s != "" {
			fmt.Fprintf(&b, " (did you mean %s?)", s)
		}
	}
	return fmt.Errorf("%s", b.String())
}

// named returns known with the * of named tables ("stack.helm.app_charts.*.path")
// replaced by the name key has there, where key is inside such a table.
func named(known []string, key string) []string {
	out := make([]string, 0, len(known))
	for _, k := range known {
		if before, after, ok := strings.Cut(k, ".*."); ok {
			if rest, ok := strings.CutPrefix(key, before+"."); ok {
				if name, _, ok := strings.Cut(rest, "."); ok {
					k = before + "." + name + "." + after
				}
			}
		}
		out = append(out, k)
	}
	return out
}

// suggest returns the known key nearest to key: one within a few edits
// (a typo), else one with the same last name in another section (a key
// put under the wrong table); "" when none is close.
func suggest(key string, known []string) string {
	norm := index.ReplaceAllString(key, "[]")
	best, bestDist := "", 0
	for _, k := range known {
		if d := editDistance(norm, k); best == "" || d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" && bestDist <= max(2, len(lastName(norm))/3) {
		return withIndexes(best, key)
	}
	leaf := lastName(norm)
	section := strings.TrimSuffix(norm, leaf)
	// A part of the name in the same table first ("path" for
	// metrics_path): the table is where the operator meant to write.
	var same []string
	for _, k := range known {
		kl := lastName(k)
		if strings.TrimSuffix(k, kl) == section && (strings.HasSuffix(kl, "_"+leaf) || strings.HasPrefix(kl, leaf+"_")) {
			same = append(same, k)
		}
	}
	if len(same) == 0 {
		// The same name in another table (a key under the wrong table).
		for _, k := range known {
			if lastName(k) == leaf {
				same = append(same, k)
			}
		}
	}
	if len(same) == 0 {
		return ""
	}
	slices.SortFunc(same, func(a, b string) int { return len(a) - len(b) })
	return withIndexes(same[0], key)
}

func lastName(key string) string { return key[strings.LastIndexAny(key, ".]")+1:] }

// withIndexes puts the indexes of like ("exporters[1].path") back into a
// known key ("exporters[].metrics_path").
func withIndexes(known, like string) string {
	idx := index.FindAllString(like, -1)
	i := 0
	return noIndex.ReplaceAllStringFunc(known, func(s string) string {
		if i < len(idx) {
			i++
			return idx[i-1]
		}
		return s
	})
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
