package apps

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// checkKeys refuses JSON that encoding/json would read in a way the sender
// may not mean: a key given twice in one object (the decoder keeps the
// last, so two "guid" keys are one app to the agent and maybe another to
// whoever checked the first), and, in an object decoded into a struct of
// t, a key that is a case variant of a field name ("GUID", "Image": the
// decoder matches field names case-insensitively). Keys that are unknown
// in every spelling, type mismatches and syntax errors are left to the
// decoder, which reports them. Errors are *FieldError naming the key's
// path.
func checkKeys(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	err := walkJSON(dec, t, "")
	if fe := (*FieldError)(nil); errors.As(err, &fe) {
		return fe
	}
	return nil // malformed: the decoder says what is wrong
}

// walkJSON reads one value from dec; t is the Go type it decodes into, nil
// when unknown (then only duplicates are checked below it).
func walkJSON(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch tok {
	case json.Delim('{'):
		var fields map[string]reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = jsonFields(t)
		}
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := kt.(string)
			at := joinPath(path, key)
			if seen[key] {
				return fieldErr(at, "duplicate key %q: each key may appear once in an object", key)
			}
			seen[key] = true
			var vt reflect.Type
			switch {
			case fields != nil:
				if ft, ok := fields[key]; ok {
					vt = ft
				} else if name := foldMatch(fields, key); name != "" {
					return fieldErr(at, "field names are case-sensitive: use %q", name)
				}
			case t != nil && t.Kind() == reflect.Map:
				vt = t.Elem()
			}
			if err := walkJSON(dec, vt, at); err != nil {
				return err
			}
		}
		_, err := dec.Token() // '}'
		return err
	case json.Delim('['):
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walkJSON(dec, et, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return nil
}

// jsonFields maps the JSON names of t's fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// foldMatch returns the field name key matches only without regard to
// case, as encoding/json would match it.
func foldMatch(fields map[string]reflect.Type, key string) string {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return name
		}
	}
	return ""
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
