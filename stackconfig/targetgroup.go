package stackconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/common/model"
)

// The one rule for target groups. Every source (the [[exporters]] of the
// config, the applications, anything else that writes targets/ in etcd) is
// held to it where its groups enter the master and the http_sd answer
// (ParseTargetGroup), and the config refuses at load what would break it.

// MaxTargetGroupBytes is the largest target group accepted: the size of its
// JSON value in etcd. A group is one exporter's targets and labels, a few
// hundred bytes; 16 KiB leaves room for a few hundred addresses while
// bounding what one bad value costs the master's memory and every file_sd
// rewrite of its job.
const MaxTargetGroupBytes = 16 << 10

// JobNameRule says in words what ValidJobName accepts, for error messages.
const JobNameRule = "1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit"

// ValidJobName reports whether job may name a scrape job. The job becomes a
// file name (<sd_dir>/<job>.json) and an etcd key segment, so the rule is
// far narrower than the job label Prometheus allows (any UTF-8): no leading
// dot (the writer's own files start with one), no "..", no slash,
// backslash, space or control character, and short enough for any file
// system. Jobs outside the rule are refused, never renamed, so that two
// names can never map to one file.
func ValidJobName(job string) bool {
	if job == "" || len(job) > 63 {
		return false
	}
	for i := 0; i < len(job); i++ {
		c := job[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// ReservedLabelRule says which __ labels a target group may carry.
const ReservedLabelRule = "names starting with __ are reserved; a group may only set __metrics_path__ and __scheme__ (from metrics_path and scheme)"

// Validate checks a group against the rule: at least one target, each
// host:port with a numeric port and nothing unprintable; label names in the
// legacy charset [a-zA-Z_][a-zA-Z0-9_]*; values UTF-8; of the reserved __
// names only __metrics_path__ (an absolute URL path) and __scheme__ (http or
// https). The size limit applies to the encoded value (ParseTargetGroup).
// Errors name the field and the bad value; among several bad labels the
// first by name is reported, so the message does not depend on map order.
func (g TargetGroup) Validate() error {
	if len(g.Targets) == 0 {
		return errors.New("targets: none")
	}
	for i, t := range g.Targets {
		if err := checkTarget(t); err != nil {
			return fmt.Errorf("targets[%d]: %w, got %q", i, err, t)
		}
	}
	var first model.LabelName
	var err error
	for name, value := range g.Labels {
		if err != nil && name > first {
			continue
		}
		if e := checkLabel(name, value); e != nil {
			first, err = name, e
		}
	}
	return err
}

func checkLabel(name model.LabelName, value model.LabelValue) error {
	if !ValidLabelName(string(name)) {
		return fmt.Errorf("labels: name must match %s, got %q", labelName, name)
	}
	if !utf8.ValidString(string(value)) {
		return fmt.Errorf("labels.%s: value must be UTF-8, got %q", name, value)
	}
	if !strings.HasPrefix(string(name), "__") {
		return nil
	}
	switch name {
	case model.MetricsPathLabel:
		if err := checkMetricsPath(string(value)); err != nil {
			return fmt.Errorf("labels.%s: %w, got %q", name, err, value)
		}
	case model.SchemeLabel:
		if value != "http" && value != "https" {
			return fmt.Errorf("labels.%s: must be http or https, got %q", name, value)
		}
	default:
		return fmt.Errorf("labels: %q: %s", name, ReservedLabelRule)
	}
	return nil
}

// ParseTargetGroup decodes one target group value as stored in etcd and
// checks it against the rule. Beyond Validate it refuses what the JSON
// decoder would silently repair or ignore: a value over
// MaxTargetGroupBytes, unknown fields, data after the object, and strings
// that are not valid UTF-8 (invalid bytes or an unpaired \ud800-\udfff
// escape, which encoding/json turns into U+FFFD instead of failing).
func ParseTargetGroup(value []byte) (TargetGroup, error) {
	if len(value) > MaxTargetGroupBytes {
		return TargetGroup{}, fmt.Errorf("value: %d bytes, more than the %d a target group may have", len(value), MaxTargetGroupBytes)
	}
	if !utf8.Valid(value) || hasLoneSurrogate(value) {
		return TargetGroup{}, notUTF8(value)
	}
	var g TargetGroup
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil {
		return TargetGroup{}, fmt.Errorf("value: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return TargetGroup{}, errors.New("value: data after the JSON object")
	}
	return g, g.Validate()
}

// notUTF8 names the string of value that is not valid UTF-8. It is the
// slow path: it decodes every string raw.
func notUTF8(value []byte) error {
	var raw struct {
		Targets []json.RawMessage          `json:"targets"`
		Labels  map[string]json.RawMessage `json:"labels"`
	}
	if err := json.Unmarshal(value, &raw); err == nil {
		for i, r := range raw.Targets {
			if err := checkJSONString(r); err != nil {
				return fmt.Errorf("targets[%d]: %w", i, err)
			}
		}
		var first string
		var err error
		for name, r := range raw.Labels {
			if e := checkJSONString(r); e != nil && (err == nil || name < first) {
				first, err = name, fmt.Errorf("labels.%s: %w", name, e)
			}
		}
		if err != nil {
			return err
		}
	}
	return errors.New("value: must be UTF-8 (no invalid bytes, no unpaired surrogate escape)")
}

// checkJSONString refuses a JSON string token that json.Unmarshal would
// rewrite to U+FFFD.
func checkJSONString(raw json.RawMessage) error {
	if !utf8.Valid(raw) {
		return fmt.Errorf("must be UTF-8, got %q", raw)
	}
	if hasLoneSurrogate(raw) {
		return fmt.Errorf("must be UTF-8, got an unpaired surrogate escape in %s", raw)
	}
	return nil
}

// hasLoneSurrogate reports whether JSON text holds a \uXXXX escape of a
// UTF-16 surrogate that is not part of a high-low pair.
func hasLoneSurrogate(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		i++
		if i >= len(b) || b[i] != 'u' {
			continue // \" \\ \n ...: the escaped byte is skipped
		}
		r, ok := hex4(b, i+1)
		if !ok {
			continue
		}
		i += 4
		switch {
		case r >= 0xdc00 && r <= 0xdfff:
			return true // a low half without a high one
		case r >= 0xd800 && r <= 0xdbff:
			if i+2 >= len(b) || b[i+1] != '\\' || b[i+2] != 'u' {
				return true
			}
			lo, ok := hex4(b, i+3)
			if !ok || lo < 0xdc00 || lo > 0xdfff {
				return true
			}
			i += 6
		}
	}
	return false
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// checkTarget accepts host:port with a non-empty host, a numeric port, and
// no slash, space, control character or invalid UTF-8.
func checkTarget(t string) error {
	host, port, err := net.SplitHostPort(t)
	if err != nil || host == "" || port == "" || !utf8.ValidString(t) ||
		strings.ContainsAny(t, "/ ") || strings.ContainsFunc(t, unicode.IsControl) {
		return errors.New("must be host:port")
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return errors.New("port must be a number")
		}
	}
	return nil
}

// checkMetricsPath accepts an absolute URL path without spaces, '?' or '#'.
func checkMetricsPath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, " \t\r\n?#") || strings.ContainsFunc(p, unicode.IsControl) {
		return errors.New("must be an absolute URL path without spaces, '?' or '#'")
	}
	return nil
}
