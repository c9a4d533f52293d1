package remotewrite

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Label, Sample, Exemplar, Histogram, TimeSeries, Metadata and WriteRequest
// are plain structs of prometheus.WriteRequest for tests and tools; the
// relay's hot path never builds them.
type (
	// Label is one name and value.
	Label struct{ Name, Value string }
	// Sample is a float sample. StartTimestamp (the created timestamp, 0:
	// none) exists in 2.0 only: the 1.0 encoding leaves it out.
	Sample struct {
		Value          float64
		Timestamp      int64 // milliseconds
		StartTimestamp int64
	}
	// Exemplar is a sample with labels (a trace id, usually).
	Exemplar struct {
		Labels    []Label
		Value     float64
		Timestamp int64
	}
	// BucketSpan is a run of consecutive buckets of a native histogram.
	BucketSpan struct {
		Offset int32
		Length uint32
	}
	// Histogram is a native histogram sample (1.0 and 2.0 share fields
	// 1-16; 2.0 adds start_timestamp). Float selects the float
	// encoding (count_float, zero_count_float, *_counts); otherwise the
	// integer one (count_int, zero_count_int, *_deltas).
	Histogram struct {
		Float                          bool
		CountInt, ZeroCountInt         uint64
		CountFloat, ZeroCountFloat     float64
		Sum                            float64
		Schema                         int32
		ZeroThreshold                  float64
		NegativeSpans, PositiveSpans   []BucketSpan
		NegativeDeltas, PositiveDeltas []int64
		NegativeCounts, PositiveCounts []float64
		ResetHint                      int32
		Timestamp                      int64
		CustomValues                   []float64
		StartTimestamp                 int64 // 2.0 only, as Sample's
	}
	// TimeSeries is one series and its samples.
	TimeSeries struct {
		Labels     []Label
		Samples    []Sample
		Exemplars  []Exemplar
		Histograms []Histogram
	}
	// Metadata describes a metric family.
	Metadata struct {
		Type               int32
		Family, Help, Unit string
	}
	// WriteRequest is prometheus.WriteRequest (remote-write 1.0).
	WriteRequest struct {
		Timeseries []TimeSeries
		Metadata   []Metadata
	}
)

// Append appends the protobuf encoding of w to dst, as Prometheus encodes
// it (fields in order, zero scalars left out, repeated scalars packed).
func (w *WriteRequest) Append(dst []byte) []byte {
	for _, ts := range w.Timeseries {
		dst = appendMessage(dst, fieldTimeseries, ts.append)
	}
	for _, md := range w.Metadata {
		dst = appendMessage(dst, fieldMetadata, func(b []byte) []byte {
			b = appendVarint(b, mdType, uint64(md.Type))
			b = appendString(b, mdFamily, md.Family)
			b = appendString(b, mdHelp, md.Help)
			return appendString(b, mdUnit, md.Unit)
		})
	}
	return dst
}

func (ts *TimeSeries) append(b []byte) []byte {
	for _, l := range ts.Labels {
		b = appendLabel(b, tsLabels, l)
	}
	for _, s := range ts.Samples {
		b = appendMessage(b, tsSamples, func(b []byte) []byte {
			b = appendFixed(b, sampleValue, s.Value)
			return appendVarint(b, sampleTimestamp, uint64(s.Timestamp))
		})
	}
	for _, e := range ts.Exemplars {
		b = appendMessage(b, tsExemplars, func(b []byte) []byte {
			for _, l := range e.Labels {
				b = appendLabel(b, 1, l)
			}
			b = appendFixed(b, 2, e.Value)
			return appendVarint(b, 3, uint64(e.Timestamp))
		})
	}
	for _, h := range ts.Histograms {
		b = appendMessage(b, tsHistograms, h.append)
	}
	return b
}

func (h *Histogram) append(b []byte) []byte {
	if h.Float {
		b = protowire.AppendTag(b, hCountFloat, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(h.CountFloat))
	} else {
		b = protowire.AppendTag(b, hCountInt, protowire.VarintType)
		b = protowire.AppendVarint(b, h.CountInt)
	}
	b = appendFixed(b, hSum, h.Sum)
	b = appendVarint(b, hSchema, protowire.EncodeZigZag(int64(h.Schema)))
	b = appendFixed(b, hZeroThreshold, h.ZeroThreshold)
	if h.Float {
		b = protowire.AppendTag(b, hZeroCountFloat, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(h.ZeroCountFloat))
	} else {
		b = protowire.AppendTag(b, hZeroCountInt, protowire.VarintType)
		b = protowire.AppendVarint(b, h.ZeroCountInt)
	}
	for _, side := range []struct {
		spans          protowire.Number
		deltas, counts protowire.Number
		spanList       []BucketSpan
		deltaList      []int64
		countList      []float64
	}{
		{hNegSpans, hNegDeltas, hNegCounts, h.NegativeSpans, h.NegativeDeltas, h.NegativeCounts},
		{hPosSpans, hPosDeltas, hPosCounts, h.PositiveSpans, h.PositiveDeltas, h.PositiveCounts},
	} {
		for _, s := range side.spanList {
			b = appendMessage(b, side.spans, func(b []byte) []byte {
				b = appendVarint(b, spanOffset, protowire.EncodeZigZag(int64(s.Offset)))
				return appendVarint(b, spanLength, uint64(s.Length))
			})
		}
		if len(side.deltaList) > 0 {
			b = appendMessage(b, side.deltas, func(b []byte) []byte {
				for _, d := range side.deltaList {
					b = protowire.AppendVarint(b, protowire.EncodeZigZag(d))
				}
				return b
			})
		}
		b = appendPackedFixed(b, side.counts, side.countList)
	}
	b = appendVarint(b, hResetHint, uint64(h.ResetHint))
	b = appendVarint(b, hTimestamp, uint64(h.Timestamp))
	return appendPackedFixed(b, hCustomValues, h.CustomValues)
}

func appendMessage(b []byte, num protowire.Number, body func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	at := len(b)
	b = body(b)
	// Move the body right to make room for its length.
	n := len(b) - at
	k := protowire.SizeVarint(uint64(n))
	b = append(b, make([]byte, k)...)
	copy(b[at+k:], b[at:at+n])
	protowire.AppendVarint(b[:at], uint64(n))
	return b
}

func appendLabel(b []byte, num protowire.Number, l Label) []byte {
	return appendMessage(b, num, func(b []byte) []byte {
		b = appendString(b, labelName, l.Name)
		return appendString(b, labelValue, l.Value)
	})
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendFixed(b []byte, num protowire.Number, v float64) []byte {
	if v == 0 && !math.Signbit(v) {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

func appendPackedFixed(b []byte, num protowire.Number, vs []float64) []byte {
	if len(vs) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(8*len(vs)))
	for _, v := range vs {
		b = protowire.AppendFixed64(b, math.Float64bits(v))
	}
	return b
}

// Unmarshal decodes a WriteRequest. It checks the framing only, not the
// schema: use Rewriter.Rewrite to validate.
func Unmarshal(b []byte) (*WriteRequest, error) {
	w := &WriteRequest{}
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == fieldTimeseries && typ == protowire.BytesType:
			var ts TimeSeries
			err := ts.unmarshal(v)
			w.Timeseries = append(w.Timeseries, ts)
			return err
		case num == fieldMetadata && typ == protowire.BytesType:
			var md Metadata
			err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				switch num {
				case mdType:
					md.Type = int32(x)
				case mdFamily:
					md.Family = string(v)
				case mdHelp:
					md.Help = string(v)
				case mdUnit:
					md.Unit = string(v)
				}
				return nil
			})
			w.Metadata = append(w.Metadata, md)
			return err
		}
		return nil
	})
	return w, err
}

func (ts *TimeSeries) unmarshal(b []byte) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case tsLabels:
			name, value, err := parseLabel(v)
			ts.Labels = append(ts.Labels, Label{string(name), string(value)})
			return err
		case tsSamples:
			var s Sample
			err := eachField(v, func(num protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
				switch num {
				case sampleValue:
					s.Value = math.Float64frombits(x)
				case sampleTimestamp:
					s.Timestamp = int64(x)
				}
				return nil
			})
			ts.Samples = append(ts.Samples, s)
			return err
		case tsExemplars:
			var e Exemplar
			err := eachField(v, func(num protowire.Number, _ protowire.Type, v []byte, x uint64) error {
				switch num {
				case 1:
					name, value, err := parseLabel(v)
					e.Labels = append(e.Labels, Label{string(name), string(value)})
					return err
				case 2:
					e.Value = math.Float64frombits(x)
				case 3:
					e.Timestamp = int64(x)
				}
				return nil
			})
			ts.Exemplars = append(ts.Exemplars, e)
			return err
		case tsHistograms:
			var h Histogram
			err := h.unmarshal(v)
			ts.Histograms = append(ts.Histograms, h)
			return err
		}
		return nil
	})
}

func (h *Histogram) unmarshal(b []byte) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case hCountInt:
			h.Float, h.CountInt = false, x
		case hCountFloat:
			h.Float, h.CountFloat = true, math.Float64frombits(x)
		case hSum:
			h.Sum = math.Float64frombits(x)
		case hSchema:
			h.Schema = int32(protowire.DecodeZigZag(x & 0xffffffff))
		case hZeroThreshold:
			h.ZeroThreshold = math.Float64frombits(x)
		case hZeroCountInt:
			h.ZeroCountInt = x
		case hZeroCountFloat:
			h.ZeroCountFloat = math.Float64frombits(x)
		case hNegSpans, hPosSpans:
			var s BucketSpan
			err := eachField(v, func(num protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
				switch num {
				case spanOffset:
					s.Offset = int32(protowire.DecodeZigZag(x & 0xffffffff))
				case spanLength:
					s.Length = uint32(x)
				}
				return nil
			})
			if num == hNegSpans {
				h.NegativeSpans = append(h.NegativeSpans, s)
			} else {
				h.PositiveSpans = append(h.PositiveSpans, s)
			}
			return err
		case hNegDeltas:
			return eachRepeated(typ, v, x, false, func(x uint64) { h.NegativeDeltas = append(h.NegativeDeltas, protowire.DecodeZigZag(x)) })
		case hPosDeltas:
			return eachRepeated(typ, v, x, false, func(x uint64) { h.PositiveDeltas = append(h.PositiveDeltas, protowire.DecodeZigZag(x)) })
		case hNegCounts:
			return eachRepeated(typ, v, x, true, func(x uint64) { h.NegativeCounts = append(h.NegativeCounts, math.Float64frombits(x)) })
		case hPosCounts:
			return eachRepeated(typ, v, x, true, func(x uint64) { h.PositiveCounts = append(h.PositiveCounts, math.Float64frombits(x)) })
		case hCustomValues:
			return eachRepeated(typ, v, x, true, func(x uint64) { h.CustomValues = append(h.CustomValues, math.Float64frombits(x)) })
		case hResetHint:
			h.ResetHint = int32(x)
		case hTimestamp:
			h.Timestamp = int64(x)
		case v2hStart:
			h.StartTimestamp = int64(x)
		}
		return nil
	})
}

// eachField calls fn for every field of b with its wire type and either its
// bytes (length-delimited) or its value (varint, fixed).
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, _ = protowire.ConsumeBytes(b[n:])
		case protowire.VarintType:
			x, _ = protowire.ConsumeVarint(b[n:])
		case protowire.Fixed64Type:
			x, _ = protowire.ConsumeFixed64(b[n:])
		case protowire.Fixed32Type:
			y, _ := protowire.ConsumeFixed32(b[n:])
			x = uint64(y)
		}
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
		b = b[n+m:]
	}
	return nil
}

// eachRepeated calls fn for each value of a repeated scalar field, packed
// (v) or not (x).
func eachRepeated(typ protowire.Type, v []byte, x uint64, fixed bool, fn func(uint64)) error {
	if typ != protowire.BytesType {
		fn(x)
		return nil
	}
	for len(v) > 0 {
		var n int
		if fixed {
			x, n = protowire.ConsumeFixed64(v)
		} else {
			x, n = protowire.ConsumeVarint(v)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		fn(x)
		v = v[n:]
	}
	return nil
}
