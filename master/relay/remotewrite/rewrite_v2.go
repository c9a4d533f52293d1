package remotewrite

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// Remote-write 2.0 on the way in. A request is checked as a whole, like a
// 1.0 one (wire types at every depth, UTF-8, names, sorted labels, every
// reference inside the symbol table, histogram spans), then each series is
// rebuilt into the request of its shard: with external labels merged, its
// references pointing into the shard's own symbol table (only the strings
// its series use, the empty string first), everything else copied as is.

// v2Scratch is what RewriteV2 needs for one request.
type v2Scratch struct {
	syms   [][]byte // the request's symbols, slices of the request
	memo   []uint8  // per symbol, which name checks it passed
	series [][]byte
	refs   []uint64
	lbls   []int64 // the final label set: pairs of symbol indexes; an external label k is ^k
	packed []byte
	body   []byte
}

const (
	memoLabelName  = 1 << iota // a valid label name
	memoMetricName             // a valid metric name
)

// RewriteV2 validates src, a decoded io.prometheus.write.v2.Request. When out
// is not nil (it must have Shards() entries) the Buf of each shard that gets
// series is set to a complete 2.0 request of them, with external labels
// merged in, labels with an empty value left out (the spec does not allow
// them, and receivers read them as absent), and a symbol table of its own.
// Unknown top-level fields are dropped; unknown fields of a series are kept.
// An error means the request can never be accepted.
func (r *Rewriter) RewriteV2(src []byte, out []Shard) (Counts, error) {
	var c Counts
	sc, _ := r.v2.Get().(*v2Scratch)
	if sc == nil {
		sc = &v2Scratch{}
	}
	defer r.v2.Put(sc)
	sc.syms, sc.series = sc.syms[:0], sc.series[:0]
	for b := src; len(b) > 0; {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return c, errors.New("bad protobuf: request field tag")
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return c, fmt.Errorf("bad protobuf: request field %d", num)
		}
		switch {
		case num <= 3:
			return c, fmt.Errorf("request field %d is reserved in %s: is this a remote-write 1.0 body? send it with Content-Type %s", num, ProtoV2, ContentType)
		case (num == v2Symbols || num == v2Timeseries) && typ != protowire.BytesType:
			return c, fmt.Errorf("bad protobuf: request field %d has wire type %s, want bytes", num, wireName(typ))
		case num == v2Symbols:
			v, _ := protowire.ConsumeBytes(b[n:])
			if !validUTF8(v) {
				return c, fmt.Errorf("symbol %d: not UTF-8", len(sc.syms))
			}
			sc.syms = append(sc.syms, v)
		case num == v2Timeseries:
			v, _ := protowire.ConsumeBytes(b[n:])
			sc.series = append(sc.series, v)
		}
		b = b[n+m:]
	}
	nsyms := len(sc.syms)
	if cap(sc.memo) < nsyms {
		sc.memo = make([]uint8, nsyms)
	} else {
		sc.memo = sc.memo[:nsyms]
		clear(sc.memo)
	}
	if out != nil {
		for i := range out {
			out[i].beginV2(nsyms, 2*len(r.ext))
		}
	}
	for i, body := range sc.series {
		if err := r.seriesV2(sc, i, body, out, &c); err != nil {
			return c, err
		}
	}
	if out != nil {
		for i := range out {
			out[i].endV2()
		}
	}
	return c, nil
}

// seriesV2 checks one series and, when out is set, appends it to its shard.
func (r *Rewriter) seriesV2(sc *v2Scratch, idx int, body []byte, out []Shard, total *Counts) error {
	var c Counts
	nsyms := uint64(len(sc.syms))
	sc.refs = sc.refs[:0]
	for b := body; len(b) > 0; {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad protobuf: series %d: field tag", idx)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return fmt.Errorf("bad protobuf: series %d: field %d", idx, num)
		}
		if num >= v2tsLabelsRefs && num <= v2tsMetadata && typ != protowire.BytesType && (num != v2tsLabelsRefs || typ != protowire.VarintType) {
			return fmt.Errorf("bad protobuf: series %d: field %d has wire type %s, want bytes", idx, num, wireName(typ))
		}
		v := b[n : n+m]
		if typ == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(v)
		}
		var err error
		switch num {
		case v2tsLabelsRefs:
			if sc.refs, err = appendRefs(sc.refs, typ, v); err != nil {
				return fmt.Errorf("series %d: labels_refs: %w", idx, err)
			}
		case v2tsSamples:
			if err := checkSampleV2(v); err != nil {
				return fmt.Errorf("series %d: sample %d: %w", idx, c.Samples, err)
			}
			c.Samples++
		case v2tsHistograms:
			if err := checkHistogram(v, histogramV2Desc); err != nil {
				return fmt.Errorf("series %d: histogram %d: %w", idx, c.Histograms, err)
			}
			c.Histograms++
		case v2tsExemplars:
			if err := checkMessage(v, exemplarV2Desc); err != nil {
				return fmt.Errorf("series %d: exemplar %d: %w", idx, c.Exemplars, err)
			}
			if err := checkRefs(v, v2exLabelsRefs, nsyms, true); err != nil {
				return fmt.Errorf("series %d: exemplar %d: %w", idx, c.Exemplars, err)
			}
			c.Exemplars++
		case v2tsMetadata:
			if err := checkMessage(v, metadataV2Desc); err != nil {
				return fmt.Errorf("series %d: metadata: %w", idx, err)
			}
			if err := checkRefs(v, v2mdHelpRef, nsyms, false); err != nil {
				return fmt.Errorf("series %d: metadata: %w", idx, err)
			}
			if err := checkRefs(v, v2mdUnitRef, nsyms, false); err != nil {
				return fmt.Errorf("series %d: metadata: %w", idx, err)
			}
			c.Metadata = 1
		}
		b = b[n+m:]
	}
	refs := sc.refs
	if len(refs)%2 != 0 {
		return fmt.Errorf("series %d: labels_refs: odd number of references (%d)", idx, len(refs))
	}
	if len(refs) == 0 {
		return fmt.Errorf("series %d: no labels", idx)
	}
	var prev []byte
	for i := 0; i < len(refs); i += 2 {
		if refs[i] >= nsyms || refs[i+1] >= nsyms {
			return fmt.Errorf("series %d: label %d: reference %d outside the symbol table (%d symbols)", idx, i/2, max(refs[i], refs[i+1]), nsyms)
		}
		name := sc.syms[refs[i]]
		if sc.memo[refs[i]]&memoLabelName == 0 {
			if err := r.names.checkLabelName(name); err != nil {
				return fmt.Errorf("series %d: %w", idx, err)
			}
			sc.memo[refs[i]] |= memoLabelName
		}
		if r.names == NamesLegacy && sc.memo[refs[i+1]]&memoMetricName == 0 && string(name) == metricNameLabel {
			if err := r.names.checkMetricName(sc.syms[refs[i+1]]); err != nil {
				return fmt.Errorf("series %d: %w", idx, err)
			}
			sc.memo[refs[i+1]] |= memoMetricName
		}
		if i > 0 && !less(prev, name) {
			return fmt.Errorf("series %d: labels not sorted or repeated at %q", idx, truncate(name))
		}
		prev = name
	}

	// The final label set (external labels merged, empty values left out)
	// and its hash, which picks the shard as for 1.0.
	sc.lbls = sc.lbls[:0]
	var ident xxhash.Digest
	ident.Reset()
	ei := 0
	addExt := func(k int) {
		sc.lbls = append(sc.lbls, int64(^k), 0)
		hashLabel(&ident, r.ext[k].name, r.ext[k].value)
	}
	for i := 0; i < len(refs); i += 2 {
		name, value := sc.syms[refs[i]], sc.syms[refs[i+1]]
		for ei < len(r.ext) && bytes.Compare(r.ext[ei].name, name) < 0 {
			addExt(ei)
			ei++
		}
		if ei < len(r.ext) && bytes.Equal(r.ext[ei].name, name) {
			ei++ // the series' own label wins
		}
		if len(value) == 0 {
			continue
		}
		sc.lbls = append(sc.lbls, int64(refs[i]), int64(refs[i+1]))
		hashLabel(&ident, name, value)
	}
	for ; ei < len(r.ext); ei++ {
		addExt(ei)
	}
	if len(sc.lbls) == 0 {
		return fmt.Errorf("series %d: no labels with a value", idx)
	}
	total.Series++
	total.Samples += c.Samples
	total.Histograms += c.Histograms
	total.Exemplars += c.Exemplars
	total.Metadata += c.Metadata
	if out == nil {
		return nil
	}
	s := 0
	if r.shards > 1 {
		s = int(ident.Sum64() % uint64(r.shards))
	}
	sh := &out[s]
	sh.Samples += c.Samples + c.Histograms
	sc.packed = sc.packed[:0]
	for i := 0; i < len(sc.lbls); i += 2 {
		if k := sc.lbls[i]; k < 0 {
			sc.packed = protowire.AppendVarint(sc.packed, uint64(sh.extSym(r.ext, int(^k), 0)))
			sc.packed = protowire.AppendVarint(sc.packed, uint64(sh.extSym(r.ext, int(^k), 1)))
			continue
		}
		sc.packed = protowire.AppendVarint(sc.packed, uint64(sh.sym(sc.syms, sc.lbls[i])))
		sc.packed = protowire.AppendVarint(sc.packed, uint64(sh.sym(sc.syms, sc.lbls[i+1])))
	}
	dst := protowire.AppendTag(sc.body[:0], v2tsLabelsRefs, protowire.BytesType)
	dst = protowire.AppendBytes(dst, sc.packed)
	for b := body; len(b) > 0; {
		num, typ, n := consumeTag(b)
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		field := b[:n+m]
		switch num {
		case v2tsLabelsRefs:
		case v2tsExemplars:
			v, _ := protowire.ConsumeBytes(b[n:])
			dst = appendMessage(dst, v2tsExemplars, func(dst []byte) []byte {
				return remapMessage(dst, v, v2exLabelsRefs, -1, -1, func(ref uint64) uint32 { return sh.sym(sc.syms, int64(ref)) })
			})
		case v2tsMetadata:
			v, _ := protowire.ConsumeBytes(b[n:])
			dst = appendMessage(dst, v2tsMetadata, func(dst []byte) []byte {
				return remapMessage(dst, v, -1, v2mdHelpRef, v2mdUnitRef, func(ref uint64) uint32 { return sh.sym(sc.syms, int64(ref)) })
			})
		default:
			dst = append(dst, field...)
		}
		b = b[n+m:]
	}
	sc.body = dst
	sh.series = protowire.AppendTag(sh.series, v2Timeseries, protowire.BytesType)
	sh.series = protowire.AppendBytes(sh.series, dst)
	return nil
}

// appendRefs appends the references of one labels_refs field (packed or a
// single varint).
func appendRefs(refs []uint64, typ protowire.Type, v []byte) ([]uint64, error) {
	if typ == protowire.VarintType {
		x, _ := protowire.ConsumeVarint(v)
		return append(refs, x), nil
	}
	for len(v) > 0 {
		x, n := consumeVarint(v)
		if n < 0 {
			return refs, errors.New("bad protobuf: packed varint")
		}
		refs = append(refs, x)
		v = v[n:]
	}
	return refs, nil
}

// checkRefs checks that every reference field num of message b (already
// checked against its schema) is in the symbol table, and, for a labels
// field (pairs), that there is an even number of them.
func checkRefs(b []byte, num protowire.Number, nsyms uint64, pairs bool) error {
	var refs [16]uint64
	list := refs[:0]
	for len(b) > 0 {
		n, typ, k := consumeTag(b)
		m := protowire.ConsumeFieldValue(n, typ, b[k:])
		if n == num {
			v := b[k : k+m]
			if typ == protowire.BytesType {
				v, _ = protowire.ConsumeBytes(v)
			}
			var err error
			if list, err = appendRefs(list, typ, v); err != nil {
				return err
			}
		}
		b = b[k+m:]
	}
	if pairs && len(list)%2 != 0 {
		return fmt.Errorf("labels_refs: odd number of references (%d)", len(list))
	}
	for _, ref := range list {
		if ref >= nsyms {
			return fmt.Errorf("reference %d outside the symbol table (%d symbols)", ref, nsyms)
		}
	}
	return nil
}

// remapMessage copies message b with its symbol references rewritten by
// sym: the repeated field pairs (a labels_refs, or -1) and the singular
// fields one and two (or -1).
func remapMessage(dst, b []byte, pairs, one, two protowire.Number, sym func(uint64) uint32) []byte {
	var refs [16]uint64
	list := refs[:0]
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		switch num {
		case pairs:
			v := b[n : n+m]
			if typ == protowire.BytesType {
				v, _ = protowire.ConsumeBytes(v)
			}
			list, _ = appendRefs(list, typ, v)
		case one, two:
			x, _ := protowire.ConsumeVarint(b[n:])
			dst = protowire.AppendTag(dst, num, protowire.VarintType)
			dst = protowire.AppendVarint(dst, uint64(sym(x)))
		default:
			dst = append(dst, b[:n+m]...)
		}
		b = b[n+m:]
	}
	if len(list) > 0 {
		dst = appendMessage(dst, pairs, func(dst []byte) []byte {
			for _, ref := range list {
				dst = protowire.AppendVarint(dst, uint64(sym(ref)))
			}
			return dst
		})
	}
	return dst
}

// checkSampleV2 checks a 2.0 sample: value, timestamp, start_timestamp.
func checkSampleV2(b []byte) error {
	if len(b) > 10 && b[0] == sampleValue<<3|1 && b[9] == sampleTimestamp<<3 {
		if _, n := consumeVarint(b[10:]); n > 0 {
			rest := b[10+n:]
			if len(rest) == 0 {
				return nil
			}
			if len(rest) > 1 && rest[0] == v2sampleStart<<3 {
				if _, n := consumeVarint(rest[1:]); n > 0 && 1+n == len(rest) {
					return nil
				}
			}
		}
	}
	return checkMessage(b, sampleV2Desc)
}

// beginV2 prepares s for the series of a request with nsyms symbols.
func (s *Shard) beginV2(nsyms, next int) {
	s.Buf, s.Samples = s.Buf[:0], 0
	s.series, s.syms = s.series[:0], s.syms[:0]
	if cap(s.remap) < nsyms {
		s.remap = make([]uint32, nsyms)
	} else {
		s.remap = s.remap[:nsyms]
		clear(s.remap)
	}
	if cap(s.extRef) < next {
		s.extRef = make([]uint32, next)
	} else {
		s.extRef = s.extRef[:next]
		clear(s.extRef)
	}
}

// sym returns the shard's index of input symbol ref, adding it to the
// shard's table on first use. The empty string is always 0.
func (s *Shard) sym(syms [][]byte, ref int64) uint32 {
	if len(syms[ref]) == 0 {
		return 0
	}
	if x := s.remap[ref]; x != 0 {
		return x
	}
	x := s.addSym(syms[ref])
	s.remap[ref] = x
	return x
}

// extSym is sym for the name (part 0) or value (part 1) of external label k.
func (s *Shard) extSym(ext []extLabel, k, part int) uint32 {
	if x := s.extRef[2*k+part]; x != 0 {
		return x
	}
	str := ext[k].name
	if part == 1 {
		str = ext[k].value
	}
	x := s.addSym(str)
	s.extRef[2*k+part] = x
	return x
}

func (s *Shard) addSym(str []byte) uint32 {
	if len(s.syms) == 0 {
		s.syms = append(s.syms, nil) // the empty string comes first
	}
	s.syms = append(s.syms, str)
	return uint32(len(s.syms) - 1)
}

// endV2 writes the shard's request: its symbols, then its series.
func (s *Shard) endV2() {
	if len(s.series) == 0 {
		return
	}
	dst := s.Buf[:0]
	for _, str := range s.syms {
		dst = protowire.AppendTag(dst, v2Symbols, protowire.BytesType)
		dst = protowire.AppendBytes(dst, str)
	}
	s.Buf = append(dst, s.series...)
}
