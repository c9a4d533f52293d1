package slave

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"hash/fnv"
	"io"
	"sync"
)

// rendered is one answer of the read endpoints, rendered once on first use
// and shared by every request of its generation. Most clients (Prometheus,
// Go clients) accept gzip, so the answer is written once straight into
// gzip and only the compressed form is kept: the identity body of 10,000
// target groups (3.4 MB; 70 kB compressed) is never built for them. It is
// rendered again, once, and kept only when a client without gzip asks for
// it. Bodies too small to gain from gzip are kept as they are.
type rendered struct {
	write func(w io.Writer) // writes the body; the same bytes every call

	once sync.Once
	etag string
	size int    // bytes of the identity body
	gz   []byte // nil: not compressed, see plain

	plainOnce sync.Once
	plain     []byte
}

// emptyList answers a job that has no groups.
var emptyList = func() *rendered {
	r := &rendered{write: func(w io.Writer) { _, _ = io.WriteString(w, "[]\n") }}
	r.init()
	return r
}()

func (s *Snapshot) newRendered(endpoint string, write func(w io.Writer)) *rendered {
	return &rendered{write: func(w io.Writer) {
		s.m.renders.WithLabelValues(endpoint).Inc()
		write(w)
	}}
}

// minGzip is the smallest body worth compressing.
const minGzip = 1024

// gzipWriters keeps the compressors between renders: one allocates about
// 1.2 MB of tables.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return zw
}}

func (r *rendered) init() {
	r.once.Do(func() {
		var gz bytes.Buffer
		zw := gzipWriters.Get().(*gzip.Writer)
		defer gzipWriters.Put(zw)
		zw.Reset(&gz)
		h := fnv.New64a()
		head := &headWriter{max: minGzip}
		bw := bufio.NewWriterSize(io.MultiWriter(h, zw, head), 32<<10)
		r.write(bw)
		_ = bw.Flush()
		_ = zw.Close()
		r.etag = fmt.Sprintf(`"%016x"`, h.Sum64())
		r.size = head.n
		if head.n < minGzip {
			r.plainOnce.Do(func() { r.plain = head.buf })
			return
		}
		r.gz = bytes.Clone(gz.Bytes())
	})
}

// headWriter counts what is written and keeps the first max bytes.
type headWriter struct {
	max int
	n   int
	buf []byte
}

func (h *headWriter) Write(p []byte) (int, error) {
	if keep := h.max - len(h.buf); keep > 0 {
		h.buf = append(h.buf, p[:min(keep, len(p))]...)
	}
	h.n += len(p)
	return len(p), nil
}

// ETag is the answer's entity tag.
func (r *rendered) ETag() string {
	r.init()
	return r.etag
}

// gzipped is the compressed body, or nil for a body kept uncompressed.
func (r *rendered) gzipped() []byte {
	r.init()
	return r.gz
}

// body is the uncompressed body.
func (r *rendered) body() []byte {
	r.init()
	r.plainOnce.Do(func() {
		buf := bytes.NewBuffer(make([]byte, 0, r.size))
		r.write(buf)
		r.plain = buf.Bytes()
	})
	return r.plain
}
