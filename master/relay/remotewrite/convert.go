package remotewrite

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// Converting between the versions, on the way out. What each version can
// carry of the other:
//
//   - samples, native histograms (integer, float, custom buckets),
//     exemplars and their labels, and names (UTF-8 or not) are the same in
//     both and pass unchanged;
//   - 2.0 start (created) timestamps of samples and histograms do not
//     exist in 1.0: left out and counted (as is a release candidate's
//     TimeSeries.created_timestamp);
//   - 2.0 metadata is per series: in 1.0 it becomes one metadata entry per
//     metric family (the series name without the _bucket, _sum, _count
//     suffix its type implies), once per request;
//   - 1.0 metadata is per family and travels apart from samples: 2.0 has no
//     place for it, so it is left out and counted;
//   - labels with an empty value are left out of 2.0 (receivers read them
//     as absent in both);
//   - unknown fields of a series are kept only within one version (their
//     numbers mean other things in the other).
//
// Escaping (for upstreams that take only legacy names) rewrites metric and
// label names, exemplar label names and 1.0 metric family names; a series
// or exemplar whose escaped label names repeat is left out and counted.

// Payload is one request as the queue holds it, decoded.
type Payload struct {
	Version Version
	Data    []byte
}

// Dropped counts what a conversion could not carry.
type Dropped struct {
	Metadata        int // 1.0 metadata entries sent to 2.0
	StartTimestamps int // 2.0 start timestamps sent to 1.0
	Series          int // series left out: escaped label names repeat, or no label has a value (2.0)
	Samples         int // samples and histograms of those series
	Exemplars       int // exemplars whose escaped label names repeat
}

// Add adds o to d.
func (d *Dropped) Add(o Dropped) {
	d.Metadata += o.Metadata
	d.StartTimestamps += o.StartTimestamps
	d.Series += o.Series
	d.Samples += o.Samples
	d.Exemplars += o.Exemplars
}

// Converter writes one request of a target version from payloads of either
// version. Its buffers are reused: it is not safe for concurrent use.
type Converter struct {
	// Escape is applied to every name written.
	Escape Escaping

	dropped Dropped
	to      Version
	out     []byte   // series (2.0) or the whole request (1.0)
	body    []byte   // the series being written
	ser     cSeries  // the series being read
	syms    [][]byte // 2.0 source symbols
	series  [][]byte // 2.0 source series
	table   map[string]uint32
	symList [][]byte // 2.0 output symbols
	mdSeen  map[string]struct{}
	mdKey   []byte   // familyMetadata's
	mdMemo  []mdMemo // per symbol of the 2.0 payload being read, as a metric name
	scratch []byte
}

// mdMemo is the metadata last written for a metric name symbol.
type mdMemo struct {
	set             bool
	typ, help, unit uint64
}

// cSeries is one series read from either version, as slices of the source.
type cSeries struct {
	from      Version
	labels    []cLabel
	samples   [][]byte // message bodies
	hists     [][]byte
	exemplars []cExemplar
	exLabels  []cLabel
	meta      bool
	mdType    uint64
	mdHelp    []byte
	mdUnit    []byte
	unknown   [][]byte // whole fields
	created   bool     // a 2.0 release candidate's created_timestamp
	// 2.0: the symbols of the metric name and the metadata, so that a
	// family's metadata is looked up by index, not by string, per request.
	refs                      bool
	nameRef, helpRef, unitRef uint64
}

type cLabel struct{ name, value []byte }

type cExemplar struct {
	lo, hi int    // its labels in exLabels
	rest   []byte // its value and timestamp fields (numbers 2 and 3 in both versions)
}

// Convert appends to dst[:0] one request of version to holding every payload,
// and says what it could not carry.
func (c *Converter) Convert(dst []byte, to Version, in []Payload) ([]byte, Dropped, error) {
	c.dropped, c.to = Dropped{}, to
	c.out = dst[:0]
	if c.table == nil {
		c.table = map[string]uint32{}
		c.mdSeen = map[string]struct{}{}
	}
	clear(c.table)
	clear(c.mdSeen)
	c.symList = append(c.symList[:0], nil)
	c.table[""] = 0
	for _, p := range in {
		var err error
		switch p.Version {
		case V1:
			err = c.readV1(p.Data)
		case V2:
			err = c.readV2(p.Data)
		default:
			err = fmt.Errorf("unknown version %d", p.Version)
		}
		if err != nil {
			return dst, c.dropped, err
		}
	}
	if to == V1 {
		return c.out, c.dropped, nil
	}
	series := c.out
	// The symbols go first: the series are moved behind them once.
	size := 0
	for _, s := range c.symList {
		size += 1 + protowire.SizeVarint(uint64(len(s))) + len(s)
	}
	c.scratch = append(c.scratch[:0], series...)
	out := slices.Grow(series[:0], size+len(series))
	for _, s := range c.symList {
		out = protowire.AppendTag(out, v2Symbols, protowire.BytesType)
		out = protowire.AppendBytes(out, s)
	}
	out = append(out, c.scratch...)
	return out, c.dropped, nil
}

var errCorrupt = errors.New("corrupt payload")

// fields calls fn for each field of b.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v, field []byte) error) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errCorrupt
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return errCorrupt
		}
		v := b[n : n+m]
		if typ == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(v)
		}
		if err := fn(num, typ, v, b[:n+m]); err != nil {
			return err
		}
		b = b[n+m:]
	}
	return nil
}

func (c *Converter) reset(from Version) *cSeries {
	s := &c.ser
	*s = cSeries{from: from, labels: s.labels[:0], samples: s.samples[:0], hists: s.hists[:0],
		exemplars: s.exemplars[:0], exLabels: s.exLabels[:0], unknown: s.unknown[:0]}
	return s
}

func (c *Converter) readV1(b []byte) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, v, field []byte) error {
		switch {
		case num == fieldTimeseries && typ == protowire.BytesType:
			s := c.reset(V1)
			err := fields(v, func(num protowire.Number, typ protowire.Type, v, field []byte) error {
				switch num {
				case tsLabels:
					name, value, err := parseLabel(v)
					if err != nil {
						return err
					}
					s.labels = append(s.labels, cLabel{name, value})
				case tsSamples:
					s.samples = append(s.samples, v)
				case tsHistograms:
					s.hists = append(s.hists, v)
				case tsExemplars:
					e := cExemplar{lo: len(s.exLabels)}
					rest := len(c.scratch)
					err := fields(v, func(num protowire.Number, _ protowire.Type, v, field []byte) error {
						if num == 1 {
							name, value, err := parseLabel(v)
							s.exLabels = append(s.exLabels, cLabel{name, value})
							return err
						}
						c.scratch = append(c.scratch, field...)
						return nil
					})
					if err != nil {
						return err
					}
					e.hi = len(s.exLabels)
					e.rest = c.scratch[rest:len(c.scratch):len(c.scratch)]
					s.exemplars = append(s.exemplars, e)
				default:
					s.unknown = append(s.unknown, field)
				}
				return nil
			})
			if err != nil {
				return err
			}
			c.write()
		case num == fieldMetadata && typ == protowire.BytesType:
			if c.to == V2 {
				c.dropped.Metadata++
				return nil
			}
			if c.Escape == EscapeNone {
				c.out = append(c.out, field...)
				return nil
			}
			c.out = appendMessage(c.out, fieldMetadata, func(dst []byte) []byte {
				_ = fields(v, func(num protowire.Number, _ protowire.Type, v, field []byte) error {
					if num == mdFamily {
						dst = protowire.AppendTag(dst, mdFamily, protowire.BytesType)
						esc := c.Escape.escape(nil, v, true)
						dst = protowire.AppendBytes(dst, esc)
						return nil
					}
					dst = append(dst, field...)
					return nil
				})
				return dst
			})
		default:
			if c.to == V1 {
				c.out = append(c.out, field...) // unknown to us, kept for the upstream
			}
		}
		return nil
	})
}

func (c *Converter) readV2(b []byte) error {
	c.syms = c.syms[:0]
	series := c.series[:0]
	// Fast path: symbols, then series, as the relay writes a shard's
	// record; anything else is read by fields.
	for len(b) > 2 && (b[0] == v2Symbols<<3|2 || b[0] == v2Timeseries<<3|2) {
		l, n := consumeVarint(b[1:])
		if n < 0 || l > uint64(len(b)-1-n) {
			return errCorrupt
		}
		v := b[1+n : 1+n+int(l)]
		if b[0] == v2Symbols<<3|2 {
			c.syms = append(c.syms, v)
		} else {
			series = append(series, v)
		}
		b = b[1+n+int(l):]
	}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v, _ []byte) error {
		switch {
		case num == v2Symbols && typ == protowire.BytesType:
			c.syms = append(c.syms, v)
		case num == v2Timeseries && typ == protowire.BytesType:
			series = append(series, v)
		}
		return nil
	})
	c.series = series
	if err != nil {
		return err
	}
	sym := func(ref uint64) ([]byte, error) {
		if ref >= uint64(len(c.syms)) {
			return nil, errCorrupt
		}
		return c.syms[ref], nil
	}
	pairs := func(dst []cLabel, typ protowire.Type, v []byte) ([]cLabel, error) {
		var buf [32]uint64
		refs, err := appendRefs(buf[:0], typ, v)
		if err != nil || len(refs)%2 != 0 {
			return dst, errCorrupt
		}
		for i := 0; i < len(refs); i += 2 {
			name, err1 := sym(refs[i])
			value, err2 := sym(refs[i+1])
			if err1 != nil || err2 != nil {
				return dst, errCorrupt
			}
			dst = append(dst, cLabel{name, value})
		}
		return dst, nil
	}
	if cap(c.mdMemo) < len(c.syms) {
		c.mdMemo = make([]mdMemo, len(c.syms))
	} else {
		c.mdMemo = c.mdMemo[:len(c.syms)]
		clear(c.mdMemo)
	}
	for _, body := range series {
		if c.readPlainV2(body) {
			c.write()
			continue
		}
		s := c.reset(V2)
		err := fields(body, func(num protowire.Number, typ protowire.Type, v, field []byte) error {
			var err error
			switch num {
			case v2tsLabelsRefs:
				s.labels, err = pairs(s.labels, typ, v)
			case v2tsSamples:
				s.samples = append(s.samples, v)
			case v2tsHistograms:
				s.hists = append(s.hists, v)
			case v2tsExemplars:
				e := cExemplar{lo: len(s.exLabels)}
				rest := len(c.scratch)
				err = fields(v, func(num protowire.Number, typ protowire.Type, v, field []byte) error {
					if num == v2exLabelsRefs {
						var err error
						s.exLabels, err = pairs(s.exLabels, typ, v)
						return err
					}
					c.scratch = append(c.scratch, field...)
					return nil
				})
				e.hi = len(s.exLabels)
				e.rest = c.scratch[rest:len(c.scratch):len(c.scratch)]
				s.exemplars = append(s.exemplars, e)
			case v2tsMetadata:
				s.meta = true
				err = fields(v, func(num protowire.Number, _ protowire.Type, v, _ []byte) error {
					x, _ := protowire.ConsumeVarint(v)
					var err error
					switch num {
					case v2mdType:
						s.mdType = x
					case v2mdHelpRef:
						s.mdHelp, err = sym(x)
					case v2mdUnitRef:
						s.mdUnit, err = sym(x)
					}
					return err
				})
			case v2tsCreated:
				if x, _ := protowire.ConsumeVarint(v); typ == protowire.VarintType && x != 0 {
					s.created = true
				}
				s.unknown = append(s.unknown, field)
			default:
				s.unknown = append(s.unknown, field)
			}
			return err
		})
		if err != nil {
			return err
		}
		c.write()
	}
	return nil
}

// readPlainV2 reads a series as Prometheus encodes it (labels_refs packed
// first, then samples or histograms, then plain metadata) without the
// general field walk; it reports false, having read nothing, for any
// other shape.
func (c *Converter) readPlainV2(body []byte) bool {
	if len(body) < 2 || body[0] != v2tsLabelsRefs<<3|2 {
		return false
	}
	l, n := consumeVarint(body[1:])
	if n < 0 || l > uint64(len(body)-1-n) {
		return false
	}
	var buf [64]uint64
	refs, err := appendRefs(buf[:0], protowire.BytesType, body[1+n:1+n+int(l)])
	nsyms := uint64(len(c.syms))
	if err != nil || len(refs)%2 != 0 {
		return false
	}
	s := c.reset(V2)
	s.refs = true
	s.nameRef = ^uint64(0)
	for i := 0; i < len(refs); i += 2 {
		if refs[i] >= nsyms || refs[i+1] >= nsyms {
			return false
		}
		name := c.syms[refs[i]]
		if string(name) == metricNameLabel {
			s.nameRef = refs[i+1]
		}
		s.labels = append(s.labels, cLabel{name, c.syms[refs[i+1]]})
	}
	for b := body[1+n+int(l):]; len(b) > 0; {
		t := b[0]
		l, n := consumeVarint(b[1:])
		if n < 0 || l > uint64(len(b)-1-n) || t&7 != 2 {
			return false
		}
		v := b[1+n : 1+n+int(l)]
		switch t >> 3 {
		case v2tsSamples:
			s.samples = append(s.samples, v)
		case v2tsHistograms:
			s.hists = append(s.hists, v)
		case v2tsMetadata:
			if 1+n+int(l) != len(b) || !plainMetadata(v, nsyms) {
				return false
			}
			s.meta = true
			for m := v; len(m) > 0; {
				x, k := consumeVarint(m[1:])
				switch m[0] >> 3 {
				case v2mdType:
					s.mdType = x
				case v2mdHelpRef:
					s.helpRef, s.mdHelp = x, c.syms[x]
				case v2mdUnitRef:
					s.unitRef, s.mdUnit = x, c.syms[x]
				}
				m = m[1+k:]
			}
		default:
			return false
		}
		b = b[1+n+int(l):]
	}
	return true
}

// write writes c.ser in the target version and then frees the scratch
// space the series used.
func (c *Converter) write() {
	s := &c.ser
	switch {
	case c.Escape != EscapeNone && !c.escapeLabels(s.labels):
		c.dropSeries(s)
	case c.to == V1:
		c.writeV1(s)
	default:
		c.writeV2(s)
	}
	c.scratch = c.scratch[:0]
}

func (c *Converter) dropSeries(s *cSeries) {
	c.dropped.Series++
	c.dropped.Samples += len(s.samples) + len(s.hists)
}

// escapeLabels escapes names in place (into new memory), sorts them again
// and reports whether the names are still unique.
func (c *Converter) escapeLabels(ls []cLabel) bool {
	changed := false
	for i := range ls {
		name := c.Escape.escape(nil, ls[i].name, false)
		if !bytes.Equal(name, ls[i].name) {
			ls[i].name, changed = name, true
		}
		if string(ls[i].name) == metricNameLabel {
			if v := c.Escape.escape(nil, ls[i].value, true); !bytes.Equal(v, ls[i].value) {
				ls[i].value = v
			}
		}
	}
	if changed {
		slices.SortStableFunc(ls, func(a, b cLabel) int { return bytes.Compare(a.name, b.name) })
	}
	for i := 1; i < len(ls); i++ {
		if bytes.Equal(ls[i-1].name, ls[i].name) {
			return false
		}
	}
	return true
}

func (c *Converter) writeV1(s *cSeries) {
	b := c.body[:0]
	for _, l := range s.labels {
		b = appendLabelMsg(b, tsLabels, l)
	}
	for _, smp := range s.samples {
		if s.from == V2 && !plainSample(smp) {
			smp = c.strip(smp, v2sampleStart)
		}
		b = protowire.AppendTag(b, tsSamples, protowire.BytesType)
		b = protowire.AppendBytes(b, smp)
	}
	for _, e := range s.exemplars {
		ls := s.exLabels[e.lo:e.hi]
		if c.Escape != EscapeNone && !c.escapeLabels(ls) {
			c.dropped.Exemplars++
			continue
		}
		size := len(e.rest)
		for _, l := range ls {
			size += labelFieldSize(1, l)
		}
		b = protowire.AppendTag(b, tsExemplars, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
		for _, l := range ls {
			b = appendLabelMsg(b, 1, l)
		}
		b = append(b, e.rest...)
	}
	for _, h := range s.hists {
		if s.from == V2 {
			h = c.strip(h, v2hStart)
		}
		b = protowire.AppendTag(b, tsHistograms, protowire.BytesType)
		b = protowire.AppendBytes(b, h)
	}
	if s.from == V1 {
		for _, f := range s.unknown {
			b = append(b, f...)
		}
	} else if s.created {
		c.dropped.StartTimestamps++
	}
	c.body = b
	c.out = protowire.AppendTag(c.out, fieldTimeseries, protowire.BytesType)
	c.out = protowire.AppendBytes(c.out, b)
	if s.meta {
		c.familyMetadata(s)
	}
}

// strip returns msg without field num (a start timestamp), counting it when
// it was set.
func (c *Converter) strip(msg []byte, num protowire.Number) []byte {
	set := false
	out := c.filter(msg, func(n protowire.Number, v []byte) bool {
		if n != num {
			return true
		}
		if x, _ := protowire.ConsumeVarint(v); x != 0 {
			set = true
		}
		return false
	})
	if set {
		c.dropped.StartTimestamps++
	}
	return out
}

// upTo returns msg with only its fields numbered at most top: a 1.0 field
// unknown to 1.0 may be a known one, of another type, in 2.0.
func (c *Converter) upTo(msg []byte, top protowire.Number) []byte {
	return c.filter(msg, func(n protowire.Number, _ []byte) bool { return n <= top })
}

// filter returns msg with only the fields keep returns true for; msg itself
// when that is all of them.
func (c *Converter) filter(msg []byte, keep func(num protowire.Number, v []byte) bool) []byte {
	all := true
	_ = fields(msg, func(n protowire.Number, _ protowire.Type, v, _ []byte) error {
		if !keep(n, v) {
			all = false
		}
		return nil
	})
	if all {
		return msg
	}
	start := len(c.scratch)
	_ = fields(msg, func(n protowire.Number, _ protowire.Type, v, field []byte) error {
		if keep(n, v) {
			c.scratch = append(c.scratch, field...)
		}
		return nil
	})
	return c.scratch[start:len(c.scratch):len(c.scratch)]
}

// familyMetadata writes a 2.0 series' metadata as the 1.0 metadata of its
// family, once per request.
func (c *Converter) familyMetadata(s *cSeries) {
	var name []byte
	for _, l := range s.labels {
		if string(l.name) == metricNameLabel {
			name = l.value
		}
	}
	if name == nil || (s.mdType == 0 && len(s.mdHelp) == 0 && len(s.mdUnit) == 0) {
		return
	}
	if s.refs && s.nameRef < uint64(len(c.mdMemo)) {
		m := &c.mdMemo[s.nameRef]
		memo := mdMemo{set: true, typ: s.mdType, help: s.helpRef, unit: s.unitRef}
		if *m == memo {
			return // this request has it already
		}
		*m = memo
	}
	family := metricFamily(name, s.mdType)
	key := protowire.AppendVarint(c.mdKey[:0], s.mdType)
	key = protowire.AppendBytes(key, family)
	key = protowire.AppendBytes(key, s.mdHelp)
	key = protowire.AppendBytes(key, s.mdUnit)
	c.mdKey = key
	if _, ok := c.mdSeen[string(key)]; ok {
		return
	}
	c.mdSeen[string(key)] = struct{}{}
	c.out = appendMessage(c.out, fieldMetadata, func(b []byte) []byte {
		b = appendVarint(b, mdType, s.mdType)
		b = appendBytesField(b, mdFamily, family)
		b = appendBytesField(b, mdHelp, s.mdHelp)
		return appendBytesField(b, mdUnit, s.mdUnit)
	})
}

// metricFamily is the family a series of type typ (2.0 / 1.0 enum) belongs
// to: its name without the suffix of a classic histogram's or summary's
// series.
func metricFamily(name []byte, typ uint64) []byte {
	var suffixes []string
	switch typ {
	case 3, 4: // histogram, gauge histogram
		suffixes = []string{"_bucket", "_sum", "_count", "_gsum", "_gcount"}
	case 5: // summary
		suffixes = []string{"_sum", "_count"}
	}
	for _, s := range suffixes {
		if f, ok := bytes.CutSuffix(name, []byte(s)); ok && len(f) > 0 {
			return f
		}
	}
	return name
}

func (c *Converter) writeV2(s *cSeries) {
	b := c.body[:0]
	refs := c.scratch[len(c.scratch):] // behind the exemplars' fields, which stay
	for _, l := range s.labels {
		if len(l.value) == 0 {
			continue
		}
		refs = protowire.AppendVarint(refs, uint64(c.symbol(l.name)))
		refs = protowire.AppendVarint(refs, uint64(c.symbol(l.value)))
	}
	if len(refs) == 0 {
		c.dropSeries(s) // only empty values: no series in 2.0
		return
	}
	b = protowire.AppendTag(b, v2tsLabelsRefs, protowire.BytesType)
	b = protowire.AppendBytes(b, refs)
	for _, smp := range s.samples {
		if s.from == V1 && !plainSample(smp) {
			smp = c.upTo(smp, sampleTimestamp)
		}
		b = protowire.AppendTag(b, v2tsSamples, protowire.BytesType)
		b = protowire.AppendBytes(b, smp)
	}
	for _, h := range s.hists {
		if s.from == V1 {
			h = c.upTo(h, hCustomValues)
		}
		b = protowire.AppendTag(b, v2tsHistograms, protowire.BytesType)
		b = protowire.AppendBytes(b, h)
	}
	for _, e := range s.exemplars {
		ls := s.exLabels[e.lo:e.hi]
		if c.Escape != EscapeNone && !c.escapeLabels(ls) {
			c.dropped.Exemplars++
			continue
		}
		b = appendMessage(b, v2tsExemplars, func(b []byte) []byte {
			if len(ls) > 0 {
				b = appendMessage(b, v2exLabelsRefs, func(b []byte) []byte {
					for _, l := range ls {
						b = protowire.AppendVarint(b, uint64(c.symbol(l.name)))
						b = protowire.AppendVarint(b, uint64(c.symbol(l.value)))
					}
					return b
				})
			}
			return append(b, e.rest...)
		})
	}
	if s.meta {
		b = appendMessage(b, v2tsMetadata, func(b []byte) []byte {
			b = appendVarint(b, v2mdType, s.mdType)
			b = appendVarint(b, v2mdHelpRef, uint64(c.symbol(s.mdHelp)))
			return appendVarint(b, v2mdUnitRef, uint64(c.symbol(s.mdUnit)))
		})
	}
	if s.from == V2 {
		for _, f := range s.unknown {
			b = append(b, f...)
		}
	}
	c.body = b
	c.out = protowire.AppendTag(c.out, v2Timeseries, protowire.BytesType)
	c.out = protowire.AppendBytes(c.out, b)
}

// symbol returns str's index in the output symbol table, adding it on first
// use. The table's keys alias the payloads, which outlive one Convert.
func (c *Converter) symbol(str []byte) uint32 {
	if len(str) == 0 {
		return 0
	}
	key := unsafe.String(unsafe.SliceData(str), len(str))
	if i, ok := c.table[key]; ok {
		return i
	}
	i := uint32(len(c.symList))
	c.table[key] = i
	c.symList = append(c.symList, str)
	return i
}

func appendLabelMsg(b []byte, num protowire.Number, l cLabel) []byte {
	if 4+len(l.name)+len(l.value) < 0x80 && len(l.name) > 0 && len(l.value) > 0 {
		// Short strings, as labels are: one-byte lengths.
		b = append(b, byte(num)<<3|2, byte(4+len(l.name)+len(l.value)), labelName<<3|2, byte(len(l.name)))
		b = append(b, l.name...)
		b = append(b, labelValue<<3|2, byte(len(l.value)))
		return append(b, l.value...)
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(labelBodySize(l)))
	b = appendBytesField(b, labelName, l.name)
	return appendBytesField(b, labelValue, l.value)
}

func labelBodySize(l cLabel) int {
	n := 0
	if len(l.name) > 0 {
		n += 1 + protowire.SizeBytes(len(l.name))
	}
	if len(l.value) > 0 {
		n += 1 + protowire.SizeBytes(len(l.value))
	}
	return n
}

func labelFieldSize(_ protowire.Number, l cLabel) int {
	n := labelBodySize(l)
	return 1 + protowire.SizeVarint(uint64(n)) + n
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// plainSample reports whether a sample is a value and a timestamp, encoded
// as everyone encodes them, and nothing else: the same in both versions.
func plainSample(b []byte) bool {
	if len(b) > 10 && b[0] == sampleValue<<3|1 && b[9] == sampleTimestamp<<3 {
		_, n := consumeVarint(b[10:])
		return n > 0 && 10+n == len(b)
	}
	return len(b) == 0
}
