package remotewrite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

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
	changed bool     // the request has what RewriteV2 leaves out
	syms    [][]byte // its symbols, slices of the request
	info    []symInfo
	series  [][]byte
	refs    []uint64
	lbls    []uint32 // the final label set: pairs of symbol indexes; an external label k is extFlag|k
	packed  []byte
	body    []byte
}

// symInfo is what one request learned about one of its symbols, kept
// together so a label costs one memory access per string. Every symbol is
// hashed as it is read when the hash picks shards (it is UTF-8-checked
// then anyway, and nearly every symbol is used by a label).
type symInfo struct {
	hash  uint64
	after uint32 // as a label name: 1 + a label name ref known to sort before it (series repeat the same pairs); 0: none yet
	ext   uint16 // as a label name, when memoName: how many external labels sort before it; extSame when one has this name
	memo  uint8
}

const (
	memoName       = 1 << iota // a valid label name; ext is set
	memoMetricName             // a valid metric name
	memoEmpty                  // the empty string
)

// extFlag marks an external label's index in v2Scratch.lbls.
const extFlag = 1 << 31

// RewriteV2 validates src, a decoded io.prometheus.write.v2.Request. When out
// is not nil (it must have Shards() entries) the Buf of each shard that gets
// series is set to a complete 2.0 request of them, with external labels
// merged in, labels with an empty value left out (the spec does not allow
// them, and receivers read them as absent), and a symbol table of its own.
// Unknown top-level fields are dropped; unknown fields of a series are kept.
// An error means the request can never be accepted.
func (r *Rewriter) RewriteV2(src []byte, out []Shard) (Counts, error) {
	c, _, err := r.rewriteV2(src, out)
	return c, err
}

// CheckV2 validates src as RewriteV2 does and reports whether RewriteV2
// would forward the request's series as they are: the Rewriter adds
// nothing (Identity) and src has no label with an empty value and no
// unknown top-level field. Such a request may be queued as it came (its
// own symbol table kept, unused strings and all).
func (r *Rewriter) CheckV2(src []byte) (Counts, bool, error) {
	c, changed, err := r.rewriteV2(src, nil)
	return c, err == nil && r.Identity() && !changed, err
}

// rewriteV2 is RewriteV2; it also reports whether src has what RewriteV2
// leaves out (a label with an empty value, an unknown top-level field).
func (r *Rewriter) rewriteV2(src []byte, out []Shard) (Counts, bool, error) {
	var c Counts
	sc, _ := r.v2.Get().(*v2Scratch)
	if sc == nil {
		sc = &v2Scratch{}
	}
	defer r.v2.Put(sc)
	sc.syms, sc.series, sc.info, sc.changed = sc.syms[:0], sc.series[:0], sc.info[:0], false
	hash := r.shards > 1 // strings are hashed only to pick a series' shard
	for b := src; len(b) > 0; {
		// Fast path: a symbol shorter than 128 bytes, as nearly all are.
		if len(b) > 1 && b[0] == v2Symbols<<3|byte(protowire.BytesType) && b[1] < 0x80 && int(b[1]) <= len(b)-2 {
			v := b[2 : 2+b[1]]
			var h uint64
			var ascii bool
			if hash {
				h, ascii = strHashASCII(v)
			} else {
				ascii = isASCII(v)
			}
			if !ascii && !utf8.Valid(v) {
				return c, false, fmt.Errorf("symbol %d: not UTF-8", len(sc.syms))
			}
			sc.syms = append(sc.syms, v)
			sc.info = append(sc.info, symInfo{hash: h, memo: emptyMemo(v)})
			b = b[2+len(v):]
			continue
		}
		num, typ, n := consumeTag(b)
		if n < 0 {
			return c, false, errors.New("bad protobuf: request field tag")
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return c, false, fmt.Errorf("bad protobuf: request field %d", num)
		}
		switch {
		case num <= 3:
			return c, false, fmt.Errorf("request field %d is reserved in %s: is this a remote-write 1.0 body? send it with Content-Type %s", num, ProtoV2, ContentType)
		case (num == v2Symbols || num == v2Timeseries) && typ != protowire.BytesType:
			return c, false, fmt.Errorf("bad protobuf: request field %d has wire type %s, want bytes", num, wireName(typ))
		case num == v2Symbols:
			v, _ := protowire.ConsumeBytes(b[n:])
			if !validUTF8(v) {
				return c, false, fmt.Errorf("symbol %d: not UTF-8", len(sc.syms))
			}
			var h uint64
			if hash {
				h = strHash(v)
			}
			sc.syms = append(sc.syms, v)
			sc.info = append(sc.info, symInfo{hash: h, memo: emptyMemo(v)})
		case num == v2Timeseries:
			v, _ := protowire.ConsumeBytes(b[n:])
			sc.series = append(sc.series, v)
		default:
			sc.changed = true // an unknown field, left out
		}
		b = b[n+m:]
	}
	nsyms := len(sc.syms)
	if nsyms >= extFlag {
		// Cannot be: a snappy block decodes to less than 4 GiB.
		return c, false, fmt.Errorf("%d symbols: too many", nsyms)
	}
	for i := range out {
		out[i].beginV2(nsyms, 2*len(r.ext))
	}
	for i, body := range sc.series {
		if err := r.seriesV2(sc, i, body, out, &c); err != nil {
			return c, false, err
		}
	}
	for i := range out {
		out[i].endV2()
	}
	return c, sc.changed, nil
}

// seriesV2 checks one series and, when out is set, appends it to its shard.
func (r *Rewriter) seriesV2(sc *v2Scratch, idx int, body []byte, out []Shard, total *Counts) error {
	var c Counts
	nsyms := uint64(len(sc.syms))
	sc.refs = sc.refs[:0]
	simple := true // fields: labels_refs, then samples or histograms only, then at most a plain metadata
	var md []byte  // that metadata's body
	for b := body; len(b) > 0; {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad protobuf: series %d: field tag", idx)
		}
		if typ == protowire.BytesType && num >= v2tsLabelsRefs && num <= v2tsMetadata {
			l, m := consumeVarint(b[n:])
			if m < 0 || l > uint64(len(b)-n-m) {
				return fmt.Errorf("bad protobuf: series %d: field %d", idx, num)
			}
			v := b[n+m : n+m+int(l)]
			switch num {
			case v2tsLabelsRefs:
				var err error
				if len(sc.refs) > 0 || len(b) != len(body) {
					simple = false // a second labels field, or not the first field
				}
				if sc.refs, err = appendRefs(sc.refs, protowire.BytesType, v); err != nil {
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
				simple = false
				if err := checkMessage(v, exemplarV2Desc); err != nil {
					return fmt.Errorf("series %d: exemplar %d: %w", idx, c.Exemplars, err)
				}
				if err := checkRefs(v, v2exLabelsRefs, nsyms, true); err != nil {
					return fmt.Errorf("series %d: exemplar %d: %w", idx, c.Exemplars, err)
				}
				c.Exemplars++
			case v2tsMetadata:
				c.Metadata = 1
				if plainMetadata(v, nsyms) {
					if md != nil || n+m+int(l) != len(b) {
						simple = false // not the last field, or twice
					}
					md = v
					break
				}
				simple = false
				if err := checkMessage(v, metadataV2Desc); err != nil {
					return fmt.Errorf("series %d: metadata: %w", idx, err)
				}
				if err := checkRefs(v, v2mdHelpRef, nsyms, false); err != nil {
					return fmt.Errorf("series %d: metadata: %w", idx, err)
				}
				if err := checkRefs(v, v2mdUnitRef, nsyms, false); err != nil {
					return fmt.Errorf("series %d: metadata: %w", idx, err)
				}
			}
			b = b[n+m+int(l):]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return fmt.Errorf("bad protobuf: series %d: field %d", idx, num)
		}
		switch {
		case num == v2tsLabelsRefs && typ == protowire.VarintType:
			x, _ := protowire.ConsumeVarint(b[n:])
			sc.refs = append(sc.refs, x)
			simple = false
		case num >= v2tsLabelsRefs && num <= v2tsMetadata:
			return fmt.Errorf("bad protobuf: series %d: field %d has wire type %s, want bytes", idx, num, wireName(typ))
		default:
			simple = false
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
	// One pass over the labels: check them, and build the final label set
	// (external labels merged, empty values left out) and its identity,
	// which picks the shard as for 1.0.
	lbls := sc.lbls[:0]
	info, syms := sc.info, sc.syms
	ident := identSeed
	ei := 0
	prev := uint32(0)
	for i := 0; i+1 < len(refs); i += 2 {
		nr, vr := refs[i], refs[i+1]
		if nr >= nsyms || vr >= nsyms {
			return fmt.Errorf("series %d: label %d: reference %d outside the symbol table (%d symbols)", idx, i/2, max(nr, vr), nsyms)
		}
		ni, vi := &info[nr], &info[vr]
		if ni.memo&memoName == 0 {
			if err := r.names.checkLabelName(syms[nr]); err != nil {
				return fmt.Errorf("series %d: %w", idx, err)
			}
			if len(r.ext) > 0 {
				ni.ext = r.extRank(syms[nr])
			}
			ni.memo |= memoName
		}
		if r.names == NamesLegacy && vi.memo&memoMetricName == 0 && string(syms[nr]) == metricNameLabel {
			if err := r.names.checkMetricName(syms[vr]); err != nil {
				return fmt.Errorf("series %d: %w", idx, err)
			}
			vi.memo |= memoMetricName
		}
		// Sorted: series of a request repeat the same pairs of label
		// names, so each name remembers the last one found before it.
		if i > 0 && ni.after != prev+1 {
			if !less(syms[prev], syms[nr]) {
				return fmt.Errorf("series %d: labels not sorted or repeated at %q", idx, truncate(syms[nr]))
			}
			ni.after = prev + 1
		}
		prev = uint32(nr)
		if len(r.ext) > 0 {
			for before := int(ni.ext &^ extSame); ei < before; ei++ {
				lbls = append(lbls, extFlag|uint32(ei), 0)
				ident = identMix(ident, r.ext[ei].nameHash, r.ext[ei].valueHash)
			}
			if ni.ext&extSame != 0 && ei == int(ni.ext&^extSame) {
				ei++ // the series' own label wins
			}
		}
		if vi.memo&memoEmpty != 0 {
			sc.changed = true // left out
			continue
		}
		lbls = append(lbls, uint32(nr), uint32(vr))
		ident = identMix(ident, ni.hash, vi.hash)
	}
	for ; ei < len(r.ext); ei++ {
		lbls = append(lbls, extFlag|uint32(ei), 0)
		ident = identMix(ident, r.ext[ei].nameHash, r.ext[ei].valueHash)
	}
	sc.lbls = lbls
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
		s = int(identSum(ident) % uint64(r.shards))
	}
	sh := &out[s]
	sh.Samples += c.Samples + c.Histograms
	packed := sc.packed[:0]
	for i := 0; i+1 < len(lbls); i += 2 {
		n, v := lbls[i], lbls[i+1]
		if n&extFlag != 0 {
			packed = appendRef(packed, sh.extSym(r.ext, int(n&^extFlag), 0))
			packed = appendRef(packed, sh.extSym(r.ext, int(n&^extFlag), 1))
			continue
		}
		// Names and values here are not empty. References of up to two
		// bytes (shard tables of up to 16384 symbols) inline.
		if x, y := sh.symNE(syms, n), sh.symNE(syms, v); x|y < 0x4000 {
			if x < 0x80 {
				packed = append(packed, byte(x))
			} else {
				packed = append(packed, byte(x)|0x80, byte(x>>7))
			}
			if y < 0x80 {
				packed = append(packed, byte(y))
			} else {
				packed = append(packed, byte(y)|0x80, byte(y>>7))
			}
		} else {
			packed = appendRef(appendRef(packed, x), y)
		}
	}
	sc.packed = packed
	labelsField := 1 + protowire.SizeVarint(uint64(len(packed))) + len(packed)
	if simple {
		// The common case (as Prometheus encodes series): labels_refs
		// first, samples or histograms copied as they are behind the new
		// labels, metadata last.
		_, _, n := consumeTag(body)
		l, m := consumeVarint(body[n:])
		rest := body[n+m+int(l):]
		var mdBuf [40]byte
		newMD := mdBuf[:0]
		if md != nil {
			rest = rest[:len(rest)-2-len(md)] // a plain metadata is shorter than 128 bytes
			newMD = remapPlainMetadata(newMD, md, sh, sc.syms)[1:]
		}
		size := labelsField + len(rest)
		if md != nil {
			size += 2 + len(newMD)
		}
		dst := appendLen(sh.series, v2Timeseries, size)
		dst = appendLen(dst, v2tsLabelsRefs, len(packed))
		dst = append(dst, packed...)
		dst = append(dst, rest...)
		if md != nil {
			dst = append(dst, v2tsMetadata<<3|2, byte(len(newMD)))
			dst = append(dst, newMD...)
		}
		sh.series = dst
		return nil
	}
	// Exemplars and metadata refer to symbols too: rewrite them first to
	// know the series' length.
	parts := sc.body[:0]
	size := labelsField
	for b := body; len(b) > 0; {
		num, nm := nextField(b)
		switch num {
		case v2tsLabelsRefs:
		case v2tsExemplars, v2tsMetadata:
			v, _ := protowire.ConsumeBytes(b[1:])
			at := len(parts)
			switch {
			case num == v2tsExemplars:
				parts = remapMessage(parts, v, v2exLabelsRefs, -1, -1, sh, sc.syms)
			case plainMetadata(v, nsyms):
				parts = remapPlainMetadata(parts, v, sh, sc.syms)
			default:
				parts = remapMessage(parts, v, -1, v2mdHelpRef, v2mdUnitRef, sh, sc.syms)
			}
			l := remappedLen(parts[at:]).n
			size += 1 + protowire.SizeVarint(uint64(l)) + l
		default:
			size += nm
		}
		b = b[nm:]
	}
	sc.body = parts
	dst := appendLen(sh.series, v2Timeseries, size)
	dst = appendLen(dst, v2tsLabelsRefs, len(packed))
	dst = append(dst, packed...)
	for b := body; len(b) > 0; {
		num, nm := nextField(b)
		switch num {
		case v2tsLabelsRefs:
		case v2tsExemplars, v2tsMetadata:
			// The rewritten messages, in the same order.
			l := remappedLen(parts)
			dst = appendLen(dst, num, l.n)
			dst = append(dst, parts[l.k:l.k+l.n]...)
			parts = parts[l.k+l.n:]
		default:
			dst = append(dst, b[:nm]...)
		}
		b = b[nm:]
	}
	sh.series = dst
	return nil
}

// plainMetadata reports whether b is metadata as encoders write it: type,
// help_ref and unit_ref as varints in field order, each at most once,
// references inside the table. Anything else takes the general path.
func plainMetadata(b []byte, nsyms uint64) bool {
	last := byte(0)
	for len(b) > 0 {
		t := b[0]
		if t <= last || (t != v2mdType<<3 && t != v2mdHelpRef<<3 && t != v2mdUnitRef<<3) {
			return false
		}
		x, n := consumeVarint(b[1:])
		if n < 0 || (t != v2mdType<<3 && x >= nsyms) {
			return false
		}
		last, b = t, b[1+n:]
	}
	return true
}

// remapPlainMetadata is remapMessage for plainMetadata.
func remapPlainMetadata(parts, b []byte, sh *Shard, syms [][]byte) []byte {
	var buf [32]byte
	msg := buf[:0]
	for len(b) > 0 {
		t := b[0]
		x, n := consumeVarint(b[1:])
		msg = append(msg, t)
		if t == v2mdType<<3 {
			msg = protowire.AppendVarint(msg, x)
		} else {
			msg = appendRef(msg, sh.sym(syms, int64(x)))
		}
		b = b[1+n:]
	}
	parts = append(parts, byte(len(msg)))
	return append(parts, msg...)
}

// nextField returns the number of b's first field and its length (tag
// included); b was checked.
func nextField(b []byte) (protowire.Number, int) {
	num, typ, n := consumeTag(b)
	if typ == protowire.BytesType {
		l, m := consumeVarint(b[n:])
		return num, n + m + int(l)
	}
	return num, n + protowire.ConsumeFieldValue(num, typ, b[n:])
}

const extSame = 1 << 15

// extRank says where label name goes among the external labels (fewer
// than 2^15): how many sort before it, plus extSame when one has this name.
func (r *Rewriter) extRank(name []byte) uint16 {
	k := 0
	for k < len(r.ext) && bytes.Compare(r.ext[k].name, name) < 0 {
		k++
	}
	if k < len(r.ext) && bytes.Equal(r.ext[k].name, name) {
		return uint16(k) | extSame
	}
	return uint16(k)
}

func appendRef(b []byte, x uint32) []byte {
	if x < 0x80 {
		return append(b, byte(x))
	}
	if x < 0x4000 {
		return append(b, byte(x)|0x80, byte(x>>7))
	}
	return protowire.AppendVarint(b, uint64(x))
}

func appendLen(b []byte, num protowire.Number, n int) []byte {
	b = append(b, byte(num)<<3|byte(protowire.BytesType))
	if n < 0x80 {
		return append(b, byte(n))
	}
	return protowire.AppendVarint(b, uint64(n))
}

// appendRefs appends the references of one labels_refs field (packed or a
// single varint).
func appendRefs(refs []uint64, typ protowire.Type, v []byte) ([]uint64, error) {
	if typ == protowire.VarintType {
		x, _ := protowire.ConsumeVarint(v)
		return append(refs, x), nil
	}
	refs = slices.Grow(refs, len(v))
	// References of up to two bytes (tables of up to 16384 symbols) inline.
	for len(v) > 1 {
		if v[0] < 0x80 {
			refs = append(refs, uint64(v[0]))
			v = v[1:]
		} else if v[1] < 0x80 {
			refs = append(refs, uint64(v[0]&0x7f)|uint64(v[1])<<7)
			v = v[2:]
		} else {
			break
		}
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

// remapMessage appends to parts message b with its symbol references
// rewritten into sh's table, prefixed by its length (remappedLen reads
// it): the repeated field pairs (a labels_refs, or -1) and the singular
// fields one and two (or -1).
func remapMessage(parts, b []byte, pairs, one, two protowire.Number, sh *Shard, syms [][]byte) []byte {
	var buf [64]byte
	msg := buf[:0]
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
			msg = protowire.AppendTag(msg, num, protowire.VarintType)
			msg = protowire.AppendVarint(msg, uint64(sh.sym(syms, int64(x))))
		default:
			msg = append(msg, b[:n+m]...)
		}
		b = b[n+m:]
	}
	if len(list) > 0 {
		var pb [64]byte
		packed := pb[:0]
		for _, ref := range list {
			packed = appendRef(packed, sh.sym(syms, int64(ref)))
		}
		msg = appendLen(msg, pairs, len(packed))
		msg = append(msg, packed...)
	}
	parts = protowire.AppendVarint(parts, uint64(len(msg)))
	return append(parts, msg...)
}

type remapped struct{ k, n int }

// remappedLen reads the length remapMessage put before a message.
func remappedLen(parts []byte) remapped {
	x, k := protowire.ConsumeVarint(parts)
	return remapped{k, int(x)}
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

// symNE is sym for a symbol that is not the empty string.
func (s *Shard) symNE(syms [][]byte, ref uint32) uint32 {
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
	size := len(s.series)
	for _, str := range s.syms {
		size += 1 + protowire.SizeVarint(uint64(len(str))) + len(str)
	}
	dst := slices.Grow(s.Buf[:0], size)
	for _, str := range s.syms {
		dst = appendLen(dst, v2Symbols, len(str))
		dst = append(dst, str...)
	}
	s.Buf = append(dst, s.series...)
}

// isASCII reports whether b is ASCII, 8 bytes at a time.
func isASCII(b []byte) bool {
	var or uint64
	for len(b) >= 8 {
		or |= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	for _, c := range b {
		or |= uint64(c)
	}
	return or&0x8080808080808080 == 0
}

func emptyMemo(b []byte) uint8 {
	if len(b) == 0 {
		return memoEmpty
	}
	return 0
}
