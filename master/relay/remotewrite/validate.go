package remotewrite

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The relay checks the whole request on the way in, against the schema of
// prometheus.WriteRequest (prompb/types.proto, remote.proto), the way the
// receivers' generated (gogo) parsers read it: a field of a known number
// must have its declared wire type (they fail the request otherwise, where
// the reference Go runtime would keep it as an unknown field); strings must
// be UTF-8 (proto3); packed repeated fields must hold whole values. Unknown
// field numbers are skipped by every parser, so they are only checked to be
// well-formed. The hot fields (labels, float samples) are checked inline by
// Rewriter.series; the rare ones (exemplars, histograms, metadata) here.

type kind uint8

const (
	kindVarint        kind = iota + 1 // int32, int64, uint32, uint64, sint32, sint64, enum
	kindFixed64                       // double
	kindString                        // UTF-8
	kindMessage                       // nested message (msg)
	kindPackedVarint                  // repeated varint scalar: packed or one value per field
	kindPackedFixed64                 // repeated double: packed or one value per field
)

type fieldDesc struct {
	name string
	kind kind
	msg  *msgDesc
}

// msgDesc describes a message by field number; numbers beyond the slice are
// unknown.
type msgDesc struct {
	name   string
	fields []fieldDesc // indexed by field number; a zero kind is unknown
}

func (m *msgDesc) field(num protowire.Number) (fieldDesc, bool) {
	if num > 0 && int(num) < len(m.fields) && m.fields[num].kind != 0 {
		return m.fields[num], true
	}
	return fieldDesc{}, false
}

func desc(name string, fields map[protowire.Number]fieldDesc) *msgDesc {
	top := protowire.Number(0)
	for n := range fields {
		top = max(top, n)
	}
	m := &msgDesc{name: name, fields: make([]fieldDesc, top+1)}
	for n, f := range fields {
		m.fields[n] = f
	}
	return m
}

var (
	labelDesc = desc("label", map[protowire.Number]fieldDesc{
		labelName:  {"name", kindString, nil},
		labelValue: {"value", kindString, nil},
	})
	exemplarDesc = desc("exemplar", map[protowire.Number]fieldDesc{
		1: {"labels", kindMessage, labelDesc},
		2: {"value", kindFixed64, nil},
		3: {"timestamp", kindVarint, nil},
	})
	spanDesc = desc("span", map[protowire.Number]fieldDesc{
		spanOffset: {"offset", kindVarint, nil},
		spanLength: {"length", kindVarint, nil},
	})
	histogramDesc = desc("histogram", map[protowire.Number]fieldDesc{
		hCountInt:       {"count_int", kindVarint, nil},
		hCountFloat:     {"count_float", kindFixed64, nil},
		hSum:            {"sum", kindFixed64, nil},
		hSchema:         {"schema", kindVarint, nil},
		hZeroThreshold:  {"zero_threshold", kindFixed64, nil},
		hZeroCountInt:   {"zero_count_int", kindVarint, nil},
		hZeroCountFloat: {"zero_count_float", kindFixed64, nil},
		hNegSpans:       {"negative_spans", kindMessage, spanDesc},
		hNegDeltas:      {"negative_deltas", kindPackedVarint, nil},
		hNegCounts:      {"negative_counts", kindPackedFixed64, nil},
		hPosSpans:       {"positive_spans", kindMessage, spanDesc},
		hPosDeltas:      {"positive_deltas", kindPackedVarint, nil},
		hPosCounts:      {"positive_counts", kindPackedFixed64, nil},
		hResetHint:      {"reset_hint", kindVarint, nil},
		hTimestamp:      {"timestamp", kindVarint, nil},
		hCustomValues:   {"custom_values", kindPackedFixed64, nil},
	})
	metadataDesc = desc("metadata", map[protowire.Number]fieldDesc{
		mdType:   {"type", kindVarint, nil},
		mdFamily: {"metric_family_name", kindString, nil},
		mdHelp:   {"help", kindString, nil},
		mdUnit:   {"unit", kindString, nil},
	})

	// The messages of io.prometheus.write.v2.Request (its types.proto).
	sampleV2Desc = desc("sample", map[protowire.Number]fieldDesc{
		sampleValue:     {"value", kindFixed64, nil},
		sampleTimestamp: {"timestamp", kindVarint, nil},
		v2sampleStart:   {"start_timestamp", kindVarint, nil},
	})
	histogramV2Desc = func() *msgDesc {
		fields := map[protowire.Number]fieldDesc{v2hStart: {"start_timestamp", kindVarint, nil}}
		for n, f := range histogramDesc.fields {
			if f.kind != 0 {
				fields[protowire.Number(n)] = f
			}
		}
		return desc("histogram", fields)
	}()
	exemplarV2Desc = desc("exemplar", map[protowire.Number]fieldDesc{
		v2exLabelsRefs: {"labels_refs", kindPackedVarint, nil},
		v2exValue:      {"value", kindFixed64, nil},
		v2exTimestamp:  {"timestamp", kindVarint, nil},
	})
	metadataV2Desc = desc("metadata", map[protowire.Number]fieldDesc{
		v2mdType:    {"type", kindVarint, nil},
		v2mdHelpRef: {"help_ref", kindVarint, nil},
		v2mdUnitRef: {"unit_ref", kindVarint, nil},
	})
)

// Histogram and BucketSpan field numbers.
const (
	hCountInt       = 1
	hCountFloat     = 2
	hSum            = 3
	hSchema         = 4
	hZeroThreshold  = 5
	hZeroCountInt   = 6
	hZeroCountFloat = 7
	hNegSpans       = 8
	hNegDeltas      = 9
	hNegCounts      = 10
	hPosSpans       = 11
	hPosDeltas      = 12
	hPosCounts      = 13
	hResetHint      = 14
	hTimestamp      = 15
	hCustomValues   = 16

	spanOffset = 1
	spanLength = 2
)

var wireNames = [...]string{
	protowire.VarintType:     "varint",
	protowire.Fixed64Type:    "fixed64",
	protowire.BytesType:      "bytes",
	protowire.StartGroupType: "group",
	protowire.EndGroupType:   "end group",
	protowire.Fixed32Type:    "fixed32",
}

func wireName(t protowire.Type) string {
	if int(t) < len(wireNames) && wireNames[t] != "" {
		return wireNames[t]
	}
	return fmt.Sprintf("wire type %d", t)
}

// accepts reports whether a field of kind k may have wire type t.
func (k kind) accepts(t protowire.Type) bool {
	switch k {
	case kindVarint:
		return t == protowire.VarintType
	case kindFixed64:
		return t == protowire.Fixed64Type
	case kindString, kindMessage:
		return t == protowire.BytesType
	case kindPackedVarint:
		return t == protowire.VarintType || t == protowire.BytesType
	case kindPackedFixed64:
		return t == protowire.Fixed64Type || t == protowire.BytesType
	}
	return false
}

func (k kind) want() string {
	switch k {
	case kindVarint:
		return "varint"
	case kindFixed64:
		return "fixed64"
	case kindPackedVarint:
		return "varint or packed"
	case kindPackedFixed64:
		return "fixed64 or packed"
	}
	return "bytes"
}

// checkMessage checks b against m. The error names the path to the bad
// field; the caller prefixes where m is.
func checkMessage(b []byte, m *msgDesc) error {
	var seen [18]int // occurrences of each repeated message field, for error paths
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errors.New("bad protobuf: field tag")
		}
		l := protowire.ConsumeFieldValue(num, typ, b[n:])
		if l < 0 {
			return fmt.Errorf("bad protobuf: field %d", num)
		}
		if f, known := m.field(num); known {
			if !f.kind.accepts(typ) {
				return fmt.Errorf("bad protobuf: field %s (%d) has wire type %s, want %s", f.name, num, wireName(typ), f.kind.want())
			}
			if typ == protowire.BytesType {
				v, _ := protowire.ConsumeBytes(b[n:])
				if err := checkValue(v, f); err != nil {
					if f.kind == kindMessage {
						return fmt.Errorf("%s %d: %w", f.name, seen[num], err)
					}
					return err
				}
				seen[num]++
			}
		}
		b = b[n+l:]
	}
	return nil
}

// checkValue checks the content of a length-delimited field of kind f.
func checkValue(v []byte, f fieldDesc) error {
	switch f.kind {
	case kindString:
		if !utf8.Valid(v) {
			return fmt.Errorf("%s: not UTF-8", f.name)
		}
	case kindMessage:
		return checkMessage(v, f.msg)
	case kindPackedFixed64:
		if len(v)%8 != 0 {
			return fmt.Errorf("bad protobuf: packed field %s: %d bytes, not a multiple of 8", f.name, len(v))
		}
	case kindPackedVarint:
		for len(v) > 0 {
			_, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return fmt.Errorf("bad protobuf: packed field %s: bad varint", f.name)
			}
			v = v[n:]
		}
	}
	return nil
}

// checkHistogram checks one native histogram: its schema, then that its
// spans and buckets agree, as every receiver checks before storing it (a
// mismatch is refused there, by Prometheus with a 5xx that a sender would
// retry forever).
func checkHistogram(b []byte, d *msgDesc) error {
	if err := checkMessage(b, d); err != nil {
		return err
	}
	var (
		float                bool
		negSpans, posSpans   spanSum
		negDeltas, posDeltas int
		negCounts, posCounts int
	)
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		l := protowire.ConsumeFieldValue(num, typ, b[n:])
		v := b[n : n+l]
		switch num {
		case hCountInt:
			float = false
		case hCountFloat:
			float = true
		case hNegSpans, hPosSpans:
			body, _ := protowire.ConsumeBytes(v)
			if num == hNegSpans {
				negSpans.add(body)
			} else {
				posSpans.add(body)
			}
		case hNegDeltas:
			negDeltas += repeatedLen(typ, v, false)
		case hPosDeltas:
			posDeltas += repeatedLen(typ, v, false)
		case hNegCounts:
			negCounts += repeatedLen(typ, v, true)
		case hPosCounts:
			posCounts += repeatedLen(typ, v, true)
		}
		b = b[n+l:]
	}
	neg, pos := negDeltas, posDeltas
	what := "deltas"
	if float {
		neg, pos, what = negCounts, posCounts, "counts"
	}
	if err := negSpans.check("negative", neg, what); err != nil {
		return err
	}
	return posSpans.check("positive", pos, what)
}

// spanSum adds up the bucket spans of one side of a histogram.
type spanSum struct {
	spans   int
	buckets int64
	badAt   int // 1-based number of the first span but the first with a negative offset; 0: none
	badOff  int64
}

func (s *spanSum) add(body []byte) {
	var off int64
	for len(body) > 0 {
		num, typ, n := consumeTag(body)
		l := protowire.ConsumeFieldValue(num, typ, body[n:])
		if typ == protowire.VarintType {
			x, _ := protowire.ConsumeVarint(body[n:])
			switch num {
			case spanOffset:
				off = int64(int32(protowire.DecodeZigZag(x & 0xffffffff)))
			case spanLength:
				s.buckets += int64(uint32(x))
			}
		}
		body = body[n+l:]
	}
	s.spans++
	if s.spans > 1 && off < 0 && s.badAt == 0 {
		s.badAt, s.badOff = s.spans, off
	}
}

func (s *spanSum) check(side string, buckets int, what string) error {
	if s.badAt > 0 {
		return fmt.Errorf("%s span %d has negative offset %d (only the first span may)", side, s.badAt, s.badOff)
	}
	if s.buckets != int64(buckets) {
		return fmt.Errorf("%s spans need %d buckets, have %d bucket %s", side, s.buckets, buckets, what)
	}
	return nil
}

// repeatedLen counts the values of one occurrence of a repeated scalar
// field (already checked).
func repeatedLen(typ protowire.Type, v []byte, fixed bool) int {
	if typ != protowire.BytesType {
		return 1
	}
	body, _ := protowire.ConsumeBytes(v)
	if fixed {
		return len(body) / 8
	}
	n := 0
	for len(body) > 0 {
		_, k := protowire.ConsumeVarint(body)
		body = body[k:]
		n++
	}
	return n
}
