package stackconfig

import (
	"bytes"

	"go.yaml.in/yaml/v3"
)

// encodeYAML is the one YAML encoder of the renderers: two-space indent,
// struct fields in declaration order, map keys sorted, strings quoted
// whenever YAML would read them as something else.
func encodeYAML(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
