package remotewrite

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Names is how metric and label names are checked on the way in.
type Names uint8

const (
	// NamesUTF8 takes any non-empty UTF-8 name, as Prometheus 3 does
	// (OpenTelemetry names such as http.server.duration).
	NamesUTF8 Names = iota
	// NamesLegacy takes only label names matching [a-zA-Z_][a-zA-Z0-9_]*
	// and metric names matching [a-zA-Z_:][a-zA-Z0-9_:]*, as Prometheus 2.
	NamesLegacy
)

const metricNameLabel = "__name__"

// checkName reports why a label name (and, for __name__, its value) is not
// accepted; value is only looked at for __name__.
func (n Names) checkName(name, value []byte) error {
	if err := n.checkLabelName(name); err != nil {
		return err
	}
	if string(name) == metricNameLabel {
		return n.checkMetricName(value)
	}
	return nil
}

func (n Names) checkLabelName(name []byte) error {
	if n == NamesLegacy {
		if !ValidLabelName(name) {
			return fmt.Errorf("invalid label name %q (relay.name_validation is legacy: must match [a-zA-Z_][a-zA-Z0-9_]*)", truncate(name))
		}
		return nil
	}
	if len(name) == 0 {
		return errors.New("empty label name")
	}
	if !validUTF8(name) {
		return fmt.Errorf("label name %q is not UTF-8", truncate(name))
	}
	return nil
}

// checkMetricName checks the value of __name__: legacy names only when
// names are legacy (any UTF-8 value is a valid metric name otherwise).
func (n Names) checkMetricName(value []byte) error {
	if n == NamesLegacy && !validLegacyMetricName(value) {
		return fmt.Errorf("invalid metric name %q (relay.name_validation is legacy: must match [a-zA-Z_:][a-zA-Z0-9_:]*)", truncate(value))
	}
	return nil
}

func validLegacyMetricName(name []byte) bool {
	if len(name) == 0 || (nameChar[name[0]] != 2 && name[0] != ':') {
		return false
	}
	for _, c := range name[1:] {
		if nameChar[c] == 0 && c != ':' {
			return false
		}
	}
	return true
}

// Escaping is how names are sent to an upstream that takes only legacy
// names. The schemes are Prometheus' own (model.EscapingScheme), applied to
// metric names with the metric charset and to label names with the label
// charset (no ':').
type Escaping uint8

const (
	// EscapeNone sends names as they came in.
	EscapeNone Escaping = iota
	// EscapeUnderscores replaces every character outside the legacy charset
	// with '_' (http.server.duration becomes http_server_duration). Two
	// names may become one: a series whose labels then repeat a name is
	// dropped and counted.
	EscapeUnderscores
	// EscapeValues is Prometheus' reversible escaping: a name outside the
	// legacy charset becomes U__ followed by the name with '_' doubled and
	// every other character outside the charset written as _<hex code>_
	// (http.server.duration becomes U__http_2e_server_2e_duration).
	EscapeValues
)

// escape appends name, escaped for an upstream that takes only legacy
// names, to dst. metric selects the metric charset (':' allowed).
func (e Escaping) escape(dst, name []byte, metric bool) []byte {
	valid := ValidLabelName(name)
	if metric {
		valid = validLegacyMetricName(name)
	}
	if e == EscapeNone || valid || len(name) == 0 {
		return append(dst, name...)
	}
	ok := func(r rune, i int) bool {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			return true
		case r >= '0' && r <= '9':
			return i > 0
		case r == ':':
			return metric
		}
		return false
	}
	if e == EscapeUnderscores {
		for i, r := range string(name) {
			if ok(r, i) {
				dst = utf8.AppendRune(dst, r)
			} else {
				dst = append(dst, '_')
			}
		}
		return dst
	}
	dst = append(dst, "U__"...)
	for i, r := range string(name) {
		switch {
		case r == '_':
			dst = append(dst, "__"...)
		case ok(r, i):
			dst = utf8.AppendRune(dst, r)
		case r == utf8.RuneError:
			dst = append(dst, "_FFFD_"...)
		default:
			dst = append(dst, '_')
			dst = strconv.AppendInt(dst, int64(r), 16)
			dst = append(dst, '_')
		}
	}
	return dst
}
