package remotewrite

import (
	"fmt"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// The oracle is an independent reader of remote-write 1.0: the Go protobuf
// runtime with the schema of prometheus.WriteRequest (prompb types.proto
// and remote.proto), made as strict as the gogo-generated parsers of
// Prometheus, Mimir, Thanos and Cortex, which fail a request whose known
// field has the wrong wire type (the Go runtime keeps it as unknown).

// Both oracles declare their schema with these: one proto3 file whose
// messages name each other by their full name in the file's package.

type (
	pbType  = descriptorpb.FieldDescriptorProto_Type
	pbLabel = descriptorpb.FieldDescriptorProto_Label
)

const (
	rep = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	opt = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL

	tString  = descriptorpb.FieldDescriptorProto_TYPE_STRING
	tDouble  = descriptorpb.FieldDescriptorProto_TYPE_DOUBLE
	tInt64   = descriptorpb.FieldDescriptorProto_TYPE_INT64
	tUint64  = descriptorpb.FieldDescriptorProto_TYPE_UINT64
	tUint32  = descriptorpb.FieldDescriptorProto_TYPE_UINT32
	tSint32  = descriptorpb.FieldDescriptorProto_TYPE_SINT32
	tSint64  = descriptorpb.FieldDescriptorProto_TYPE_SINT64
	tEnum    = descriptorpb.FieldDescriptorProto_TYPE_ENUM
	tMessage = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
)

// protoFile is the schema of the proto3 file name of package pkg.
type protoFile struct{ name, pkg string }

// field declares a field; msg names its message or enum type within the
// package (empty for a scalar), oneof the index of its oneof if any.
func (p protoFile) field(name string, num int32, typ pbType, label pbLabel, msg string, oneof ...int32) *descriptorpb.FieldDescriptorProto {
	f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum(), JsonName: proto.String(name)}
	if msg != "" {
		f.TypeName = proto.String("." + p.pkg + "." + msg)
	}
	if len(oneof) > 0 {
		f.OneofIndex = proto.Int32(oneof[0])
	}
	return f
}

// enum declares an enum whose values are numbered from 0 in order.
func enum(name string, values ...string) *descriptorpb.EnumDescriptorProto {
	e := &descriptorpb.EnumDescriptorProto{Name: proto.String(name)}
	for i, v := range values {
		e.Value = append(e.Value, &descriptorpb.EnumValueDescriptorProto{Name: proto.String(v), Number: proto.Int32(int32(i))})
	}
	return e
}

// message builds the file of msgs and returns its message root.
func (p protoFile) message(root protoreflect.Name, msgs []*descriptorpb.DescriptorProto) protoreflect.MessageDescriptor {
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String(p.name), Package: proto.String(p.pkg), Syntax: proto.String("proto3"), MessageType: msgs,
	}, nil)
	if err != nil {
		panic(err)
	}
	return fd.Messages().ByName(root)
}

// decodeStrict decodes b as a message of desc and fails where the
// gogo-generated parsers of the receivers fail (see strict).
func decodeStrict(desc protoreflect.MessageDescriptor, b []byte) (protoreflect.Message, error) {
	m := dynamicpb.NewMessage(desc)
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m, strict(m)
}

var oracleDesc = sync.OnceValue(func() protoreflect.MessageDescriptor {
	schema := protoFile{name: "oracle/remote.proto", pkg: "prometheus"}
	field := schema.field
	return schema.message("WriteRequest", []*descriptorpb.DescriptorProto{
		{Name: proto.String("WriteRequest"), Field: []*descriptorpb.FieldDescriptorProto{
			field("timeseries", 1, tMessage, rep, "TimeSeries"),
			field("metadata", 3, tMessage, rep, "MetricMetadata"),
		}},
		{Name: proto.String("MetricMetadata"), Field: []*descriptorpb.FieldDescriptorProto{
			field("type", 1, tEnum, opt, "MetricMetadata.MetricType"),
			field("metric_family_name", 2, tString, opt, ""),
			field("help", 4, tString, opt, ""),
			field("unit", 5, tString, opt, ""),
		}, EnumType: []*descriptorpb.EnumDescriptorProto{
			enum("MetricType", "UNKNOWN", "COUNTER", "GAUGE", "HISTOGRAM", "GAUGEHISTOGRAM", "SUMMARY", "INFO", "STATESET"),
		}},
		{Name: proto.String("Sample"), Field: []*descriptorpb.FieldDescriptorProto{
			field("value", 1, tDouble, opt, ""),
			field("timestamp", 2, tInt64, opt, ""),
		}},
		{Name: proto.String("Exemplar"), Field: []*descriptorpb.FieldDescriptorProto{
			field("labels", 1, tMessage, rep, "Label"),
			field("value", 2, tDouble, opt, ""),
			field("timestamp", 3, tInt64, opt, ""),
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
		}, OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: proto.String("count")}, {Name: proto.String("zero_count")}},
			EnumType: []*descriptorpb.EnumDescriptorProto{enum("ResetHint", "UNKNOWN", "YES", "NO", "GAUGE")}},
		{Name: proto.String("BucketSpan"), Field: []*descriptorpb.FieldDescriptorProto{
			field("offset", 1, tSint32, opt, ""),
			field("length", 2, tUint32, opt, ""),
		}},
		{Name: proto.String("TimeSeries"), Field: []*descriptorpb.FieldDescriptorProto{
			field("labels", 1, tMessage, rep, "Label"),
			field("samples", 2, tMessage, rep, "Sample"),
			field("exemplars", 3, tMessage, rep, "Exemplar"),
			field("histograms", 4, tMessage, rep, "Histogram"),
		}},
		{Name: proto.String("Label"), Field: []*descriptorpb.FieldDescriptorProto{
			field("name", 1, tString, opt, ""),
			field("value", 2, tString, opt, ""),
		}},
	})
})

// oracleCheck reports why a receiver would refuse the decoded request b.
func oracleCheck(b []byte) error {
	_, err := decodeStrict(oracleDesc(), b)
	return err
}

// strict fails for a field the Go runtime kept as unknown although its
// number is declared: a wire type that gogo parsers refuse.
func strict(m protoreflect.Message) error {
	fields := m.Descriptor().Fields()
	for b := m.GetUnknown(); len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if f := fields.ByNumber(num); f != nil {
			return fmt.Errorf("%s.%s: wire type %d", m.Descriptor().Name(), f.Name(), typ)
		}
		b = b[n+protowire.ConsumeFieldValue(num, typ, b[n:]):]
	}
	var err error
	m.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case f.Message() == nil:
		case f.IsList():
			for i := 0; i < v.List().Len() && err == nil; i++ {
				err = strict(v.List().Get(i).Message())
			}
		default:
			err = strict(v.Message())
		}
		return err == nil
	})
	return err
}
