package remotewrite

import (
	"fmt"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// The 2.0 oracle is an independent reader of io.prometheus.write.v2.Request:
// the Go protobuf runtime with the schema of Prometheus'
// prompb/io/prometheus/write/v2/types.proto (v0.316.0), as strict about wire
// types as the gogo-generated parser of Prometheus, plus what Prometheus'
// receiver checks before it writes a series (storage/remote/write_handler.go
// and writev2's ToLabels): label references in pairs and inside the symbol
// table, non-empty UTF-8 label names without repeats, references of
// exemplars and metadata inside the table.

var oracleV2Desc = sync.OnceValue(func() protoreflect.MessageDescriptor {
	schema := protoFile{name: "oracle/v2/types.proto", pkg: "io.prometheus.write.v2"}
	field := schema.field
	return schema.message("Request", []*descriptorpb.DescriptorProto{
		{Name: proto.String("Request"), Field: []*descriptorpb.FieldDescriptorProto{
			field("symbols", 4, tString, rep, ""),
			field("timeseries", 5, tMessage, rep, "TimeSeries"),
		}},
		{Name: proto.String("TimeSeries"), Field: []*descriptorpb.FieldDescriptorProto{
			field("labels_refs", 1, tUint32, rep, ""),
			field("samples", 2, tMessage, rep, "Sample"),
			field("histograms", 3, tMessage, rep, "Histogram"),
			field("exemplars", 4, tMessage, rep, "Exemplar"),
			field("metadata", 5, tMessage, opt, "Metadata"),
		}},
		{Name: proto.String("Exemplar"), Field: []*descriptorpb.FieldDescriptorProto{
			field("labels_refs", 1, tUint32, rep, ""),
			field("value", 2, tDouble, opt, ""),
			field("timestamp", 3, tInt64, opt, ""),
		}},
		{Name: proto.String("Sample"), Field: []*descriptorpb.FieldDescriptorProto{
			field("value", 1, tDouble, opt, ""),
			field("timestamp", 2, tInt64, opt, ""),
			field("start_timestamp", 3, tInt64, opt, ""),
		}},
		{Name: proto.String("Metadata"), Field: []*descriptorpb.FieldDescriptorProto{
			field("type", 1, tEnum, opt, "Metadata.MetricType"),
			field("help_ref", 3, tUint32, opt, ""),
			field("unit_ref", 4, tUint32, opt, ""),
		}, EnumType: []*descriptorpb.EnumDescriptorProto{
			enum("MetricType", "METRIC_TYPE_UNSPECIFIED", "METRIC_TYPE_COUNTER", "METRIC_TYPE_GAUGE", "METRIC_TYPE_HISTOGRAM",
				"METRIC_TYPE_GAUGEHISTOGRAM", "METRIC_TYPE_SUMMARY", "METRIC_TYPE_INFO", "METRIC_TYPE_STATESET"),
		}},
		{Name: proto.String("Histogram"), Field: []*descriptorpb.FieldDescriptorProto{
			field("count_int", 1, tUint64, opt, "", 0),
			field("count_float", 2, tDouble, opt, "", 0),
			field("sum", 3, tDouble, opt, ""),
			field("schema", 4, tSint32, opt, ""),
			field("zero_threshold", 5, tDouble, opt, ""),
			field("zero_count_int", 6, tUint64, opt, "", 1),
			field("zero_count_float", 7, tDouble, opt, "", 1),
			field("negative_spans", 8, tMessage, rep, "BucketSpan"),
			field("negative_deltas", 9, tSint64, rep, ""),
			field("negative_counts", 10, tDouble, rep, ""),
			field("positive_spans", 11, tMessage, rep, "BucketSpan"),
			field("positive_deltas", 12, tSint64, rep, ""),
			field("positive_counts", 13, tDouble, rep, ""),
			field("reset_hint", 14, tEnum, opt, "Histogram.ResetHint"),
			field("timestamp", 15, tInt64, opt, ""),
			field("custom_values", 16, tDouble, rep, ""),
			field("start_timestamp", 17, tInt64, opt, ""),
		}, OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: proto.String("count")}, {Name: proto.String("zero_count")}},
			EnumType: []*descriptorpb.EnumDescriptorProto{enum("ResetHint", "RESET_HINT_UNSPECIFIED", "RESET_HINT_YES", "RESET_HINT_NO", "RESET_HINT_GAUGE")}},
		{Name: proto.String("BucketSpan"), Field: []*descriptorpb.FieldDescriptorProto{
			field("offset", 1, tSint32, opt, ""),
			field("length", 2, tUint32, opt, ""),
		}},
	})
})

// oracleCheckV2 reports why Prometheus' 2.0 receiver would refuse the
// decoded request b (or a series of it).
func oracleCheckV2(b []byte) error {
	m, err := decodeStrict(oracleV2Desc(), b)
	if err != nil {
		return err
	}
	d := m.Descriptor().Fields()
	syms := m.Get(d.ByName("symbols")).List()
	ts := m.Get(d.ByName("timeseries")).List()
	inTable := func(ref uint64) error {
		if ref >= uint64(syms.Len()) {
			return fmt.Errorf("reference %d outside the symbol table (%d)", ref, syms.Len())
		}
		return nil
	}
	for i := range ts.Len() {
		s := ts.Get(i).Message()
		sd := s.Descriptor().Fields()
		refs := s.Get(sd.ByName("labels_refs")).List()
		if refs.Len()%2 != 0 || refs.Len() == 0 {
			return fmt.Errorf("series %d: %d label refs", i, refs.Len())
		}
		seen := map[string]bool{}
		for j := 0; j < refs.Len(); j += 2 {
			for _, r := range []uint64{refs.Get(j).Uint(), refs.Get(j + 1).Uint()} {
				if err := inTable(r); err != nil {
					return fmt.Errorf("series %d: %w", i, err)
				}
			}
			name := syms.Get(int(refs.Get(j).Uint())).String()
			if name == "" || !utf8.ValidString(name) || seen[name] {
				return fmt.Errorf("series %d: label name %q empty, not UTF-8 or repeated", i, name)
			}
			seen[name] = true
		}
		ex := s.Get(sd.ByName("exemplars")).List()
		for j := range ex.Len() {
			e := ex.Get(j).Message()
			er := e.Get(e.Descriptor().Fields().ByName("labels_refs")).List()
			if er.Len()%2 != 0 {
				return fmt.Errorf("series %d: exemplar %d: odd label refs", i, j)
			}
			for k := range er.Len() {
				if err := inTable(er.Get(k).Uint()); err != nil {
					return fmt.Errorf("series %d: exemplar %d: %w", i, j, err)
				}
			}
		}
		if s.Has(sd.ByName("metadata")) {
			md := s.Get(sd.ByName("metadata")).Message()
			for _, f := range []protoreflect.Name{"help_ref", "unit_ref"} {
				if err := inTable(md.Get(md.Descriptor().Fields().ByName(f)).Uint()); err != nil {
					return fmt.Errorf("series %d: metadata: %w", i, err)
				}
			}
		}
	}
	return nil
}
