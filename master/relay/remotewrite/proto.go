package remotewrite

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// Remote-write 1.0 protocol constants.
const (
	ContentType     = "application/x-protobuf"
	ContentEncoding = "snappy"
	VersionHeader   = "X-Prometheus-Remote-Write-Version"
	Version         = "0.1.0"
	// ProtoV2 is the proto parameter of a remote-write 2.0 Content-Type.
	ProtoV2 = "io.prometheus.write.v2.Request"
)

// Field numbers of prometheus.WriteRequest and the messages inside it.
const (
	fieldTimeseries = 1
	fieldMetadata   = 3

	tsLabels     = 1
	tsSamples    = 2
	tsExemplars  = 3
	tsHistograms = 4

	labelName  = 1
	labelValue = 2

	sampleValue     = 1
	sampleTimestamp = 2

	mdType   = 1
	mdFamily = 2
	mdHelp   = 4
	mdUnit   = 5
)

// Counts says what a request held.
type Counts struct {
	Series, Samples, Histograms, Exemplars, Metadata int
}

// Shard is one output of Rewrite: the time series whose label hash fell into
// it, as the body of a WriteRequest, and how many samples and histograms
// they carry.
type Shard struct {
	Buf     []byte
	Samples int
}

// Rewriter validates requests and rewrites them with external labels into
// shards. It is immutable and safe for concurrent use.
type Rewriter struct {
	ext    []extLabel // sorted by name
	shards int
	cache  *labelCache
}

type extLabel struct {
	name  []byte
	field []byte // the encoded Label message, tag and length included
}

// NewRewriter returns a Rewriter that adds external (a series' own label of
// the same name wins, as in Prometheus) and splits series into shards.
func NewRewriter(external map[string]string, shards int) (*Rewriter, error) {
	if shards < 1 {
		return nil, fmt.Errorf("shards: must be >= 1, got %d", shards)
	}
	r := &Rewriter{shards: shards, cache: newLabelCache(labelCacheBytes)}
	for name, value := range external {
		if !ValidLabelName([]byte(name)) {
			return nil, fmt.Errorf("external label name %q: must match [a-zA-Z_][a-zA-Z0-9_]*", name)
		}
		var msg []byte
		msg = protowire.AppendTag(msg, labelName, protowire.BytesType)
		msg = protowire.AppendString(msg, name)
		msg = protowire.AppendTag(msg, labelValue, protowire.BytesType)
		msg = protowire.AppendString(msg, value)
		field := protowire.AppendTag(nil, tsLabels, protowire.BytesType)
		field = protowire.AppendBytes(field, msg)
		r.ext = append(r.ext, extLabel{name: []byte(name), field: field})
	}
	slices.SortFunc(r.ext, func(a, b extLabel) int { return bytes.Compare(a.name, b.name) })
	return r, nil
}

// Identity reports whether Rewrite would return its input unchanged (no
// external labels, one shard), so a caller may keep the original bytes.
func (r *Rewriter) Identity() bool { return len(r.ext) == 0 && r.shards == 1 }

// Shards is the number of outputs Rewrite fills.
func (r *Rewriter) Shards() int { return r.shards }

// Rewrite validates src, a decoded WriteRequest. When out is not nil (it must
// have Shards() entries) each time series is appended, with external labels
// merged in, to the Buf of its shard; metadata and unknown fields go to shard
// 0. An error means the request can never be accepted.
func (r *Rewriter) Rewrite(src []byte, out []Shard) (Counts, error) {
	var c Counts
	b := src
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return c, errors.New("bad protobuf: write request field tag")
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return c, fmt.Errorf("bad protobuf: write request field %d", num)
		}
		field := b[:n+m]
		switch {
		case num == fieldTimeseries && typ == protowire.BytesType:
			body, _ := protowire.ConsumeBytes(b[n:])
			if err := r.series(body, c.Series, out, &c, true); err != nil {
				return c, err
			}
			c.Series++
		case num == fieldMetadata && typ == protowire.BytesType:
			if body, _ := protowire.ConsumeBytes(b[n:]); !wellFormed(body) {
				return c, fmt.Errorf("bad protobuf: metadata %d", c.Metadata)
			}
			c.Metadata++
			if out != nil {
				out[0].Buf = append(out[0].Buf, field...)
			}
		default:
			if out != nil {
				out[0].Buf = append(out[0].Buf, field...)
			}
		}
		b = b[n+m:]
	}
	return c, nil
}

// series validates one TimeSeries body in a single pass and, when out is
// set, appends it to its shard with the external labels inserted at their
// sorted positions (found during the pass), copying everything else as is.
func (r *Rewriter) series(body []byte, idx int, out []Shard, total *Counts, useCache bool) error {
	var (
		c          Counts // added to total on success
		hash       uint64
		fromCache  bool
		off        int
		runEnd     = -1 // end of the label run the cache looked up
		prev       []byte
		nLabels    int
		samples    int
		ei         int
		addLen     int
		lStart     = -1 // first label field
		lEnd       int  // end of the last label field
		contiguous = true
		insBuf     [8]int
	)
	ins := insBuf[:0] // where each external label goes; -1: the series has it
	if len(r.ext) > len(insBuf) {
		ins = make([]int, 0, len(r.ext))
	}
	if useCache {
		var e *cacheEntry
		if e, runEnd, hash = r.cache.lookup(body); e != nil {
			lEnd = runEnd
			// These exact label bytes were validated before: reuse the
			// merge plan and check only the rest.
			fromCache, off, lStart, nLabels, addLen, ei = true, lEnd, 0, e.n, e.addLen, len(r.ext)
			ins = append(ins, e.ins...)
		}
	}
	for off < len(body) {
		b := body[off:]
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad protobuf: series %d: field tag", idx)
		}
		if typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, b[n:])
			if m < 0 {
				return fmt.Errorf("bad protobuf: series %d: field %d", idx, num)
			}
			if lStart >= 0 && num != tsLabels {
				contiguous = false
			}
			off += n + m
			continue
		}
		l, m := consumeVarint(b[n:])
		if m < 0 || l > uint64(len(b)-n-m) {
			return fmt.Errorf("bad protobuf: series %d: field %d", idx, num)
		}
		v := b[n+m : n+m+int(l)]
		end := off + n + m + int(l)
		switch num {
		case tsLabels:
			if fromCache {
				return r.series(body, idx, out, total, false) // labels after other fields: the slow way
			}
			name, value, err := parseLabel(v)
			if err != nil {
				return fmt.Errorf("series %d: %w", idx, err)
			}
			if !ValidLabelName(name) {
				return fmt.Errorf("series %d: invalid label name %q", idx, truncate(name))
			}
			if !validUTF8(value) {
				return fmt.Errorf("series %d: label %s: value is not UTF-8", idx, name)
			}
			if nLabels > 0 && !less(prev, name) {
				return fmt.Errorf("series %d: labels not sorted or repeated at %q", idx, name)
			}
			for ei < len(r.ext) && bytes.Compare(r.ext[ei].name, name) < 0 {
				ins = append(ins, off)
				addLen += len(r.ext[ei].field)
				ei++
			}
			if ei < len(r.ext) && bytes.Equal(r.ext[ei].name, name) {
				ins = append(ins, -1)
				ei++
			}
			if lStart < 0 {
				lStart = off
			} else if lEnd != off {
				contiguous = false
			}
			lEnd = end
			prev = name
			nLabels++
		case tsSamples:
			if err := checkSample(v); err != nil {
				return fmt.Errorf("series %d: %w", idx, err)
			}
			samples++
			c.Samples++
		case tsExemplars, tsHistograms:
			if !wellFormed(v) {
				return fmt.Errorf("bad protobuf: series %d: field %d", idx, num)
			}
			if num == tsExemplars {
				c.Exemplars++
				break
			}
			samples++
			c.Histograms++
		default:
			if lStart >= 0 {
				contiguous = false
			}
		}
		off = end
	}
	if nLabels == 0 {
		return fmt.Errorf("series %d: no labels", idx)
	}
	total.Series += c.Series
	total.Samples += c.Samples
	total.Histograms += c.Histograms
	total.Exemplars += c.Exemplars
	for ; ei < len(r.ext); ei++ {
		ins = append(ins, lEnd)
		addLen += len(r.ext[ei].field)
	}
	if !fromCache && lStart == 0 && contiguous && lEnd == runEnd {
		r.cache.put(hash, body[:lEnd], ins, addLen, nLabels)
	}
	if out == nil {
		return nil
	}
	s := 0
	if r.shards > 1 {
		if lStart != 0 || lEnd != runEnd || !contiguous {
			hash = r.labelHash(body, lStart, lEnd, contiguous)
		}
		s = int(hash % uint64(r.shards))
	}
	out[s].Samples += samples
	dst := protowire.AppendTag(out[s].Buf, fieldTimeseries, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(len(body)+addLen))
	from := 0
	for k, at := range ins {
		if at < 0 {
			continue
		}
		dst = append(dst, body[from:at]...)
		dst = append(dst, r.ext[k].field...)
		from = at
	}
	out[s].Buf = append(dst, body[from:]...)
	return nil
}

// labelHash hashes a series' label fields: the series' identity, so it
// always lands in the same shard.
func (r *Rewriter) labelHash(body []byte, start, end int, contiguous bool) uint64 {
	if contiguous {
		return xxhash.Sum64(body[start:end])
	}
	h := xxhash.New()
	for b := body; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if num == tsLabels && typ == protowire.BytesType {
			_, _ = h.Write(b[:n+m])
		}
		b = b[n+m:]
	}
	return h.Sum64()
}

// validUTF8 is utf8.Valid with an inlined path for short ASCII values.
func validUTF8(b []byte) bool {
	var or byte
	for _, c := range b {
		or |= c
	}
	return or < 0x80 || utf8.Valid(b)
}

// less reports whether a sorts before b; label names are short, so a plain
// loop beats the assembly of bytes.Compare.
func less(a, b []byte) bool {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

// consumeTag is protowire.ConsumeTag with a fast path for one-byte tags.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	if len(b) > 0 && b[0] < 0x80 {
		if b[0]>>3 == 0 {
			return 0, 0, -1
		}
		return protowire.Number(b[0] >> 3), protowire.Type(b[0] & 7), 1
	}
	return protowire.ConsumeTag(b)
}

// consumeVarint is protowire.ConsumeVarint with fast paths for the one- and
// two-byte lengths that dominate remote-write.
func consumeVarint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	if len(b) > 1 && b[1] < 0x80 {
		return uint64(b[0]&0x7f) | uint64(b[1])<<7, 2
	}
	return protowire.ConsumeVarint(b)
}

func parseLabel(b []byte) (name, value []byte, err error) {
	// Fast path: name then value, one-byte tags, as every encoder writes.
	if len(b) > 1 && b[0] == labelName<<3|2 {
		if l, n := consumeVarint(b[1:]); n > 0 && l <= uint64(len(b)-1-n) {
			name, rest := b[1+n:1+n+int(l)], b[1+n+int(l):]
			if len(rest) == 0 {
				return name, nil, nil
			}
			if len(rest) > 1 && rest[0] == labelValue<<3|2 {
				if l, n := consumeVarint(rest[1:]); n > 0 && l == uint64(len(rest)-1-n) {
					return name, rest[1+n:], nil
				}
			}
		}
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, errors.New("bad protobuf: label field tag")
		}
		if typ == protowire.BytesType && (num == labelName || num == labelValue) {
			v, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return nil, nil, errors.New("bad protobuf: label string")
			}
			if num == labelName {
				name = v
			} else {
				value = v
			}
			b = b[n+m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil, errors.New("bad protobuf: label field")
		}
		b = b[n+m:]
	}
	return name, value, nil
}

// wellFormed reports whether b is a sequence of protobuf fields.
func wellFormed(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return false
		}
		b = b[n+m:]
	}
	return true
}

func checkSample(b []byte) error {
	// Fast path: value then timestamp, as every encoder writes them.
	if len(b) > 10 && b[0] == sampleValue<<3|1 && b[9] == sampleTimestamp<<3 {
		if _, n := consumeVarint(b[10:]); n > 0 && 10+n == len(b) {
			return nil
		}
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errors.New("bad protobuf: sample field tag")
		}
		if (num == sampleValue && typ != protowire.Fixed64Type) || (num == sampleTimestamp && typ != protowire.VarintType) {
			return fmt.Errorf("bad protobuf: sample field %d has wire type %d", num, typ)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return errors.New("bad protobuf: sample field")
		}
		b = b[n+m:]
	}
	return nil
}

var nameChar = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			t[c] = 2 // may start a name
		case c >= '0' && c <= '9':
			t[c] = 1
		}
	}
	return t
}()

// ValidLabelName reports whether name matches the legacy Prometheus charset
// [a-zA-Z_][a-zA-Z0-9_]*.
func ValidLabelName(name []byte) bool {
	if len(name) == 0 || nameChar[name[0]] != 2 {
		return false
	}
	for _, c := range name[1:] {
		if nameChar[c] == 0 {
			return false
		}
	}
	return true
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// Label, Sample, TimeSeries, Metadata and WriteRequest are plain structs for
// tests and tools; the relay's hot path never builds them.
type (
	Label struct{ Name, Value string }
	// Sample is a float sample.
	Sample struct {
		Value     float64
		Timestamp int64 // milliseconds
	}
	// TimeSeries is one series and its samples.
	TimeSeries struct {
		Labels  []Label
		Samples []Sample
	}
	// Metadata describes a metric family.
	Metadata struct {
		Type               int32
		Family, Help, Unit string
	}
	// WriteRequest is prometheus.WriteRequest without exemplars and histograms.
	WriteRequest struct {
		Timeseries []TimeSeries
		Metadata   []Metadata
	}
)

// Append appends the protobuf encoding of w to dst.
func (w *WriteRequest) Append(dst []byte) []byte {
	var msg, sub []byte
	for _, ts := range w.Timeseries {
		msg = msg[:0]
		for _, l := range ts.Labels {
			sub = protowire.AppendTag(sub[:0], labelName, protowire.BytesType)
			sub = protowire.AppendString(sub, l.Name)
			sub = protowire.AppendTag(sub, labelValue, protowire.BytesType)
			sub = protowire.AppendString(sub, l.Value)
			msg = protowire.AppendTag(msg, tsLabels, protowire.BytesType)
			msg = protowire.AppendBytes(msg, sub)
		}
		for _, s := range ts.Samples {
			sub = protowire.AppendTag(sub[:0], sampleValue, protowire.Fixed64Type)
			sub = protowire.AppendFixed64(sub, math.Float64bits(s.Value))
			sub = protowire.AppendTag(sub, sampleTimestamp, protowire.VarintType)
			sub = protowire.AppendVarint(sub, uint64(s.Timestamp))
			msg = protowire.AppendTag(msg, tsSamples, protowire.BytesType)
			msg = protowire.AppendBytes(msg, sub)
		}
		dst = protowire.AppendTag(dst, fieldTimeseries, protowire.BytesType)
		dst = protowire.AppendBytes(dst, msg)
	}
	for _, md := range w.Metadata {
		msg = protowire.AppendTag(msg[:0], mdType, protowire.VarintType)
		msg = protowire.AppendVarint(msg, uint64(md.Type))
		for _, f := range []struct {
			num protowire.Number
			s   string
		}{{mdFamily, md.Family}, {mdHelp, md.Help}, {mdUnit, md.Unit}} {
			msg = protowire.AppendTag(msg, f.num, protowire.BytesType)
			msg = protowire.AppendString(msg, f.s)
		}
		dst = protowire.AppendTag(dst, fieldMetadata, protowire.BytesType)
		dst = protowire.AppendBytes(dst, msg)
	}
	return dst
}

// Unmarshal decodes the series, float samples and metadata of a
// WriteRequest; everything else is skipped.
func Unmarshal(b []byte) (*WriteRequest, error) {
	w := &WriteRequest{}
	err := eachField(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldTimeseries:
			var ts TimeSeries
			err := eachField(v, func(num protowire.Number, v []byte) error {
				switch num {
				case tsLabels:
					name, value, err := parseLabel(v)
					ts.Labels = append(ts.Labels, Label{string(name), string(value)})
					return err
				case tsSamples:
					var s Sample
					err := eachValue(v, func(num protowire.Number, x uint64) {
						switch num {
						case sampleValue:
							s.Value = math.Float64frombits(x)
						case sampleTimestamp:
							s.Timestamp = int64(x)
						}
					})
					ts.Samples = append(ts.Samples, s)
					return err
				}
				return nil
			})
			w.Timeseries = append(w.Timeseries, ts)
			return err
		case fieldMetadata:
			var md Metadata
			err := eachField(v, func(num protowire.Number, v []byte) error {
				switch num {
				case mdFamily:
					md.Family = string(v)
				case mdHelp:
					md.Help = string(v)
				case mdUnit:
					md.Unit = string(v)
				}
				return nil
			})
			if err == nil {
				err = eachValue(v, func(num protowire.Number, x uint64) {
					if num == mdType {
						md.Type = int32(x)
					}
				})
			}
			w.Metadata = append(w.Metadata, md)
			return err
		}
		return nil
	})
	return w, err
}

// eachField calls fn for every length-delimited field of b.
func eachField(b []byte, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		if typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n:])
			if err := fn(num, v); err != nil {
				return err
			}
		}
		b = b[n+m:]
	}
	return nil
}

// eachValue calls fn for every varint and fixed64 field of b.
func eachValue(b []byte, fn func(protowire.Number, uint64)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			x, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			fn(num, x)
			b = b[m:]
		case protowire.Fixed64Type:
			x, m := protowire.ConsumeFixed64(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			fn(num, x)
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			b = b[m:]
		}
	}
	return nil
}
