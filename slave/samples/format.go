package samples

import (
	"bytes"
	"fmt"
	"mime"

	"github.com/prometheus/common/expfmt"
)

// Format is the encoding of a body.
type Format int

// The formats Parse reads.
const (
	// Auto is JSON when the body's first non-blank byte is '[' (a line of
	// the text format never starts so), else the text format.
	Auto Format = iota
	Text
	OpenMetrics
	Protobuf
	JSON
)

func (f Format) String() string {
	switch f {
	case Text:
		return "text"
	case OpenMetrics:
		return "openmetrics"
	case Protobuf:
		return "protobuf"
	case JSON:
		return "json"
	}
	return "auto"
}

// ContentFormat chooses the format from a Content-Type header, as the
// Pushgateway does: application/json is the JSON list, OpenMetrics and
// delimited protobuf by their media types, and anything else (text/plain,
// or what curl --data-binary sends) is Auto. It fails only for a
// text/plain or OpenMetrics version this agent cannot read.
func ContentFormat(contentType string) (Format, error) {
	if contentType == "" {
		return Auto, nil
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return Auto, nil
	}
	switch mt {
	case "application/json":
		return JSON, nil
	case expfmt.OpenMetricsType:
		switch params["version"] {
		case "", expfmt.OpenMetricsVersion_0_0_1, expfmt.OpenMetricsVersion_1_0_0:
			return OpenMetrics, nil
		}
		return Auto, fmt.Errorf("OpenMetrics version %q is not supported: send version %s or the text format", params["version"], expfmt.OpenMetricsVersion_1_0_0)
	case expfmt.ProtoType:
		if params["proto"] == expfmt.ProtoProtocol && params["encoding"] == "delimited" {
			return Protobuf, nil
		}
		return Auto, fmt.Errorf("protobuf %q is not supported: send proto=%s; encoding=delimited", contentType, expfmt.ProtoProtocol)
	case "text/plain":
		if v := params["version"]; v != "" && v != expfmt.TextVersion {
			return Auto, fmt.Errorf("text format version %q is not supported: send version %s", v, expfmt.TextVersion)
		}
	}
	return Auto, nil
}

// sniff resolves Auto for body.
func sniff(body []byte) Format {
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) > 0 && b[0] == '[' {
		return JSON
	}
	return Text
}
