package remotewrite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Remote-write 1.0 protocol constants.
const (
	ContentType     = "application/x-protobuf"
	ContentEncoding = "snappy"
	VersionHeader   = "X-Prometheus-Remote-Write-Version"
	VersionV1       = "0.1.0"
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

// Shard is one output of Rewrite (RewriteV2): the time series whose label
// hash fell into it, as the body of a WriteRequest (a Request), and how many
// samples and histograms they carry.
type Shard struct {
	Buf     []byte
	Samples int

	// RewriteV2's work: the shard's symbol table being built.
	remap  []uint32 // request symbol -> index in syms; 0: not yet
	extRef []uint32 // the same for the external labels' names and values
	syms   [][]byte
	series []byte
}

// Reset empties s for the next request, keeping its buffers.
func (s *Shard) Reset() { s.Buf, s.Samples = s.Buf[:0], 0 }

// Rewriter validates requests and rewrites them with external labels into
// shards. It is immutable and safe for concurrent use.
type Rewriter struct {
	ext    []extLabel // sorted by name
	shards int
	names  Names
	cache  *labelCache
	v2     sync.Pool // *v2Scratch
}

type extLabel struct {
	name, value         []byte
	nameHash, valueHash uint64
	field               []byte // the encoded Label message, tag and length included
}

// NewRewriter returns a Rewriter that adds external (a series' own label of
// the same name wins, as in Prometheus), splits series into shards and
// checks names as names says.
func NewRewriter(external map[string]string, shards int, names Names) (*Rewriter, error) {
	if shards < 1 {
		return nil, fmt.Errorf("shards: must be >= 1, got %d", shards)
	}
	r := &Rewriter{shards: shards, names: names, cache: newLabelCache(labelCacheBytes)}
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
		r.ext = append(r.ext, extLabel{name: []byte(name), value: []byte(value), field: field,
			nameHash: strHash([]byte(name)), valueHash: strHash([]byte(value))})
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
		num, typ, n := consumeTag(b)
		if n < 0 {
			return c, errors.New("bad protobuf: write request field tag")
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return c, fmt.Errorf("bad protobuf: write request field %d", num)
		}
		field := b[:n+m]
		switch {
		case (num == fieldTimeseries || num == fieldMetadata) && typ != protowire.BytesType:
			return c, fmt.Errorf("bad protobuf: write request field %d has wire type %s, want bytes", num, wireName(typ))
		case num == v2Symbols || num == v2Timeseries:
			// Not in prometheus.WriteRequest: every 1.0 receiver would read
			// this body as empty, and so would the relay's upstreams.
			return c, fmt.Errorf("write request field %d is a remote-write 2.0 field: send 2.0 with Content-Type %s", num, ContentTypeV2)
		case num == fieldTimeseries:
			body, _ := protowire.ConsumeBytes(b[n:])
			if err := r.series(body, c.Series, out, &c, true); err != nil {
				return c, err
			}
			c.Series++
		case num == fieldMetadata:
			body, _ := protowire.ConsumeBytes(b[n:])
			if err := checkMessage(body, metadataDesc); err != nil {
				return c, fmt.Errorf("metadata %d: %w", c.Metadata, err)
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
		// The shard is a hash of the final label set (external labels
		// merged, empty values left out as receivers do), not of the bytes
		// as received: a series sent with an explicit external label, or
		// encoded another way, is still the same series in the same shard.
		ident   = identSeed
		identOn = r.shards > 1
		identOf uint64
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
			// merge plan and the shard hash, and check only the rest.
			fromCache, off, lStart, nLabels, addLen, ei = true, lEnd, 0, e.n, e.addLen, len(r.ext)
			ins = append(ins, e.ins...)
			identOn, identOf = false, e.ident
		}
	}
	for off < len(body) {
		b := body[off:]
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad protobuf: series %d: field tag", idx)
		}
		if typ != protowire.BytesType {
			if num >= tsLabels && num <= tsHistograms {
				return fmt.Errorf("bad protobuf: series %d: field %d has wire type %s, want bytes", idx, num, wireName(typ))
			}
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
			if err := r.names.checkName(name, value); err != nil {
				return fmt.Errorf("series %d: %w", idx, err)
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
				if identOn {
					ident = identMix(ident, r.ext[ei].nameHash, r.ext[ei].valueHash)
				}
				ei++
			}
			if ei < len(r.ext) && bytes.Equal(r.ext[ei].name, name) {
				ins = append(ins, -1)
				ei++
			}
			if identOn && len(value) > 0 {
				ident = identMix(ident, strHash(name), strHash(value))
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
		case tsExemplars:
			if err := checkMessage(v, exemplarDesc); err != nil {
				return fmt.Errorf("series %d: exemplar %d: %w", idx, c.Exemplars, err)
			}
			c.Exemplars++
		case tsHistograms:
			if err := checkHistogram(v, histogramDesc); err != nil {
				return fmt.Errorf("series %d: histogram %d: %w", idx, c.Histograms, err)
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
		if identOn {
			ident = identMix(ident, r.ext[ei].nameHash, r.ext[ei].valueHash)
		}
	}
	if identOn {
		identOf = identSum(ident)
	}
	if !fromCache && lStart == 0 && contiguous && lEnd == runEnd {
		r.cache.put(hash, body[:lEnd], ins, addLen, nLabels, identOf)
	}
	if out == nil {
		return nil
	}
	s := 0
	if r.shards > 1 {
		s = int(identOf % uint64(r.shards))
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

// The identity of a series, which picks its shard, is a fold of the
// hashes of its final labels' names and values, in order. It is made of
// per-string hashes so that 2.0, whose strings come from a symbol table,
// hashes each string of a request once, and gets the same identity as 1.0.
const identSeed uint64 = 0x9e3779b97f4a7c15

// strHash hashes a name or value for identMix: short strings are the rule,
// so it reads 8 bytes at a time and mixes with 128-bit products (as wyhash
// does); it is fixed, so shards stay the same across restarts.
func strHash(b []byte) uint64 {
	const m1, m2 = 0xa0761d6478bd642f, 0xe7037ed1a0b428db
	h := uint64(len(b)) * m1
	for len(b) >= 8 {
		hi, lo := bits.Mul64(h^binary.LittleEndian.Uint64(b), m2)
		h = hi ^ lo
		b = b[8:]
	}
	if len(b) > 0 {
		var t uint64
		for i, c := range b {
			t |= uint64(c) << (8 * i)
		}
		hi, lo := bits.Mul64(h^t, m2)
		h = hi ^ lo
	}
	hi, lo := bits.Mul64(h, m1)
	return hi ^ lo
}

// strHashASCII is strHash(b) and whether b is ASCII, in one pass.
func strHashASCII(b []byte) (uint64, bool) {
	const m1, m2 = 0xa0761d6478bd642f, 0xe7037ed1a0b428db
	const high = 0x8080808080808080
	h := uint64(len(b)) * m1
	var or uint64
	for len(b) >= 8 {
		w := binary.LittleEndian.Uint64(b)
		or |= w
		hi, lo := bits.Mul64(h^w, m2)
		h = hi ^ lo
		b = b[8:]
	}
	if len(b) > 0 {
		var t uint64
		for i, c := range b {
			t |= uint64(c) << (8 * i)
		}
		or |= t
		hi, lo := bits.Mul64(h^t, m2)
		h = hi ^ lo
	}
	hi, lo := bits.Mul64(h, m1)
	return hi ^ lo, or&high == 0
}

func identMix(h, name, value uint64) uint64 {
	h = bits.RotateLeft64((h^name)*0xc2b2ae3d27d4eb4f, 31)
	return bits.RotateLeft64((h^value)*0x9e3779b185ebca87, 27)
}

func identSum(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	return h ^ h>>33
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

// consumeTag is protowire.ConsumeTag with a fast path for one-byte tags. It
// refuses field numbers beyond the protobuf range (2^29-1), which the
// receivers' parsers refuse.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	if len(b) > 0 && b[0] < 0x80 {
		if b[0]>>3 == 0 {
			return 0, 0, -1
		}
		return protowire.Number(b[0] >> 3), protowire.Type(b[0] & 7), 1
	}
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && !num.IsValid() {
		return 0, 0, -1
	}
	return num, typ, n
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
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, nil, errors.New("bad protobuf: label field tag")
		}
		if (num == labelName || num == labelValue) && typ != protowire.BytesType {
			return nil, nil, fmt.Errorf("bad protobuf: label field %d has wire type %s, want bytes", num, wireName(typ))
		}
		if num == labelName || num == labelValue {
			v, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return nil, nil, errors.New("bad protobuf: label string")
			}
			// The last occurrence counts, but each must be a string.
			if !utf8.Valid(v) {
				return nil, nil, fmt.Errorf("label field %d: not UTF-8", num)
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

func checkSample(b []byte) error {
	// Fast path: value then timestamp, as every encoder writes them.
	if len(b) > 10 && b[0] == sampleValue<<3|1 && b[9] == sampleTimestamp<<3 {
		if _, n := consumeVarint(b[10:]); n > 0 && 10+n == len(b) {
			return nil
		}
	}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
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
