package remotewrite

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Version is a remote-write protocol version: which protobuf message a body
// holds.
type Version uint8

// The two versions.
const (
	V1 Version = 1 // prometheus.WriteRequest
	V2 Version = 2 // io.prometheus.write.v2.Request
)

func (v Version) String() string {
	switch v {
	case V1:
		return "1.0"
	case V2:
		return "2.0"
	}
	return fmt.Sprintf("version(%d)", uint8(v))
}

// Remote-write 2.0 protocol constants.
const (
	// ContentTypeV2 is the Content-Type of a 2.0 body.
	ContentTypeV2 = ContentType + ";proto=" + ProtoV2
	// ProtoV1 is the proto parameter of a 1.0 Content-Type (optional).
	ProtoV1   = "prometheus.WriteRequest"
	VersionV2 = "2.0.0"
	// The response headers of a 2.0 receiver: how many of each it wrote.
	SamplesWrittenHeader    = "X-Prometheus-Remote-Write-Samples-Written"
	HistogramsWrittenHeader = "X-Prometheus-Remote-Write-Histograms-Written"
	ExemplarsWrittenHeader  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

// Field numbers of io.prometheus.write.v2.Request and the messages inside.
const (
	v2Symbols    = 4
	v2Timeseries = 5

	v2tsLabelsRefs = 1
	v2tsSamples    = 2
	v2tsHistograms = 3
	v2tsExemplars  = 4
	v2tsMetadata   = 5
	// v2tsCreated was TimeSeries.created_timestamp in the 2.0 release
	// candidates (now reserved; per sample start_timestamp replaced it).
	v2tsCreated = 6

	v2exLabelsRefs = 1
	v2exValue      = 2
	v2exTimestamp  = 3

	v2sampleStart = 3
	v2hStart      = 17

	v2mdType    = 1
	v2mdHelpRef = 3
	v2mdUnitRef = 4
)

type (
	// TimeSeriesV2 is a 2.0 series with its symbols resolved. Sample and
	// Histogram StartTimestamp are 2.0 only.
	TimeSeriesV2 struct {
		Labels     []Label
		Samples    []Sample
		Histograms []Histogram
		Exemplars  []Exemplar
		Metadata   MetadataV2
	}
	// MetadataV2 is the metadata a 2.0 series carries (Type as in 1.0).
	MetadataV2 struct {
		Type       int32
		Help, Unit string
	}
	// RequestV2 is io.prometheus.write.v2.Request with symbols resolved,
	// for tests and tools; the relay's hot path never builds it.
	RequestV2 struct {
		Timeseries []TimeSeriesV2
	}
)

// Append appends the protobuf encoding of r to dst, as Prometheus encodes
// it: one symbol table (empty string first, then strings in order of first
// use), then the series.
func (r *RequestV2) Append(dst []byte) []byte {
	syms := map[string]uint32{"": 0}
	list := []string{""}
	ref := func(s string) uint64 {
		i, ok := syms[s]
		if !ok {
			i = uint32(len(list))
			syms[s] = i
			list = append(list, s)
		}
		return uint64(i)
	}
	// labelRefs appends ls as field num: the packed refs of each name and
	// value; no labels, no field.
	labelRefs := func(b []byte, num protowire.Number, ls []Label) []byte {
		if len(ls) == 0 {
			return b
		}
		return appendMessage(b, num, func(b []byte) []byte {
			for _, l := range ls {
				b = protowire.AppendVarint(b, ref(l.Name))
				b = protowire.AppendVarint(b, ref(l.Value))
			}
			return b
		})
	}
	var series []byte
	for _, ts := range r.Timeseries {
		series = appendMessage(series, v2Timeseries, func(b []byte) []byte {
			b = labelRefs(b, v2tsLabelsRefs, ts.Labels)
			for _, s := range ts.Samples {
				b = appendMessage(b, v2tsSamples, func(b []byte) []byte {
					b = appendFixed(b, sampleValue, s.Value)
					b = appendVarint(b, sampleTimestamp, uint64(s.Timestamp))
					return appendVarint(b, v2sampleStart, uint64(s.StartTimestamp))
				})
			}
			for _, h := range ts.Histograms {
				b = appendMessage(b, v2tsHistograms, func(b []byte) []byte {
					b = h.append(b)
					return appendVarint(b, v2hStart, uint64(h.StartTimestamp))
				})
			}
			for _, e := range ts.Exemplars {
				b = appendMessage(b, v2tsExemplars, func(b []byte) []byte {
					b = labelRefs(b, v2exLabelsRefs, e.Labels)
					b = appendFixed(b, v2exValue, e.Value)
					return appendVarint(b, v2exTimestamp, uint64(e.Timestamp))
				})
			}
			if md := ts.Metadata; md != (MetadataV2{}) {
				b = appendMessage(b, v2tsMetadata, func(b []byte) []byte {
					b = appendVarint(b, v2mdType, uint64(md.Type))
					b = appendVarint(b, v2mdHelpRef, ref(md.Help))
					return appendVarint(b, v2mdUnitRef, ref(md.Unit))
				})
			}
			return b
		})
	}
	for _, s := range list {
		dst = protowire.AppendTag(dst, v2Symbols, protowire.BytesType)
		dst = protowire.AppendString(dst, s)
	}
	return append(dst, series...)
}

// UnmarshalV2 decodes a 2.0 request, resolving symbols. It checks the
// framing and that references are in the symbol table, not the schema: use
// Rewriter.RewriteV2 to validate.
func UnmarshalV2(b []byte) (*RequestV2, error) {
	var syms []string
	var series [][]byte
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == v2Symbols && typ == protowire.BytesType:
			syms = append(syms, string(v))
		case num == v2Timeseries && typ == protowire.BytesType:
			series = append(series, v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sym := func(ref uint64) (string, error) {
		if ref >= uint64(len(syms)) {
			return "", fmt.Errorf("symbol ref %d outside the table (%d)", ref, len(syms))
		}
		return syms[ref], nil
	}
	labels := func(refs []uint64) ([]Label, error) {
		if len(refs)%2 != 0 {
			return nil, fmt.Errorf("odd number of label refs (%d)", len(refs))
		}
		var out []Label
		for i := 0; i < len(refs); i += 2 {
			n, err := sym(refs[i])
			if err != nil {
				return nil, err
			}
			v, err := sym(refs[i+1])
			if err != nil {
				return nil, err
			}
			out = append(out, Label{n, v})
		}
		return out, nil
	}
	r := &RequestV2{}
	for _, body := range series {
		var ts TimeSeriesV2
		var refs []uint64
		err := eachField(body, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
			switch num {
			case v2tsLabelsRefs:
				return eachRepeated(typ, v, x, false, func(x uint64) { refs = append(refs, x) })
			case v2tsSamples:
				var s Sample
				err := eachField(v, func(num protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
					switch num {
					case sampleValue:
						s.Value = math.Float64frombits(x)
					case sampleTimestamp:
						s.Timestamp = int64(x)
					case v2sampleStart:
						s.StartTimestamp = int64(x)
					}
					return nil
				})
				ts.Samples = append(ts.Samples, s)
				return err
			case v2tsHistograms:
				var h Histogram
				err := h.unmarshal(v)
				ts.Histograms = append(ts.Histograms, h)
				return err
			case v2tsExemplars:
				var e Exemplar
				var erefs []uint64
				err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
					switch num {
					case v2exLabelsRefs:
						return eachRepeated(typ, v, x, false, func(x uint64) { erefs = append(erefs, x) })
					case v2exValue:
						e.Value = math.Float64frombits(x)
					case v2exTimestamp:
						e.Timestamp = int64(x)
					}
					return nil
				})
				if err != nil {
					return err
				}
				e.Labels, err = labels(erefs)
				ts.Exemplars = append(ts.Exemplars, e)
				return err
			case v2tsMetadata:
				return eachField(v, func(num protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
					var err error
					switch num {
					case v2mdType:
						ts.Metadata.Type = int32(x)
					case v2mdHelpRef:
						ts.Metadata.Help, err = sym(x)
					case v2mdUnitRef:
						ts.Metadata.Unit, err = sym(x)
					}
					return err
				})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if ts.Labels, err = labels(refs); err != nil {
			return nil, err
		}
		r.Timeseries = append(r.Timeseries, ts)
	}
	return r, nil
}
