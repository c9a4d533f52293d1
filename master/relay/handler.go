package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"runtime"
	"strconv"

	"github.com/golang/snappy"

	"github.com/agentproj/agent/master/relay/queue"
	"github.com/agentproj/agent/master/relay/remotewrite"
)

// workBufs are needed while a request is decoded; holdBufs until the queue
// has committed it.
type workBufs struct {
	dec    []byte
	shards []remotewrite.Shard
}

type holdBufs struct {
	body []byte
	comp [][]byte
	recs []queue.Record
}

// Errors of Write, for callers that are not HTTP handlers (a push API).
var (
	// ErrInvalid wraps why a request can never be accepted (400).
	ErrInvalid = errors.New("invalid remote-write request")
	// ErrUnavailable means the relay is not running, is shutting down, or
	// the caller went away while waiting (503): try again.
	ErrUnavailable = errors.New("relay unavailable")
)

// httpError is an error with the status it is answered with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func (e *httpError) Unwrap() error {
	switch e.code {
	case http.StatusBadRequest:
		return ErrInvalid
	case http.StatusServiceUnavailable:
		return ErrUnavailable
	}
	return nil
}

func fail(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// Flags of a queue record.
const recordV2 uint16 = 1 // Data holds an io.prometheus.write.v2.Request

func recordVersion(flags uint16) remotewrite.Version {
	if flags&recordV2 != 0 {
		return remotewrite.V2
	}
	return remotewrite.V1
}

// ServeHTTP handles POST /api/v1/write: remote-write 1.0
// (prometheus.WriteRequest) and 2.0 (io.prometheus.write.v2.Request, by
// its Content-Type). It answers 204 once the request is durable, 400 for a
// request that can never be accepted, 413 above max_request_bytes, 415 for
// another protocol or encoding, and 503/500 for trouble that may pass.
// Never 429. A 2.0 answer carries the X-Prometheus-Remote-Write-*-Written
// headers: everything on 204, nothing otherwise (the relay takes a request
// whole or not at all).
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	v, c, err := r.ingest(req)
	if v == remotewrite.V2 {
		if err != nil {
			c = remotewrite.Counts{}
		}
		h := w.Header()
		h.Set(remotewrite.SamplesWrittenHeader, strconv.Itoa(c.Samples))
		h.Set(remotewrite.HistogramsWrittenHeader, strconv.Itoa(c.Histograms))
		h.Set(remotewrite.ExemplarsWrittenHeader, strconv.Itoa(c.Exemplars))
	}
	code := http.StatusNoContent
	if err != nil {
		var he *httpError
		if !errors.As(err, &he) {
			he = &httpError{code: http.StatusInternalServerError, msg: err.Error()}
		}
		code = he.code
		if code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		body, _ := json.Marshal(map[string]string{"error": he.msg})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write(append(body, '\n'))
		switch {
		case req.Context().Err() != nil:
			// The sender went away (it stopped, or timed out and will
			// resend): nothing of the relay's own failed.
			r.logger.Debug("remote-write request cancelled by its sender", "code", code, "protocol", protoLabel(v), "err", he.msg)
		case code >= 500:
			r.logger.Warn("remote-write request failed", "code", code, "protocol", protoLabel(v), "err", he.msg)
		default:
			r.logger.Debug("remote-write request refused", "code", code, "protocol", protoLabel(v), "err", he.msg)
		}
	} else {
		w.WriteHeader(code)
	}
	r.m.requests.WithLabelValues(strconv.Itoa(code), protoLabel(v)).Inc()
}

func protoLabel(v remotewrite.Version) string {
	if v == 0 {
		return "unknown"
	}
	return v.String()
}

// version reads the remote-write version from a Content-Type: no type or
// no proto parameter is 1.0.
func version(ct string) (remotewrite.Version, error) {
	if ct == "" {
		return remotewrite.V1, nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != remotewrite.ContentType {
		return 0, fail(http.StatusUnsupportedMediaType, "content type %q not supported: send remote-write 1.0 (%s) or 2.0 (%s)", ct, remotewrite.ContentType, remotewrite.ContentTypeV2)
	}
	switch p := params["proto"]; p {
	case "", remotewrite.ProtoV1:
		return remotewrite.V1, nil
	case remotewrite.ProtoV2:
		return remotewrite.V2, nil
	default:
		return 0, fail(http.StatusUnsupportedMediaType, "protobuf message %q not supported: send %s (remote-write 1.0) or %s (2.0)", p, remotewrite.ProtoV1, remotewrite.ProtoV2)
	}
}

func (r *Relay) ingest(req *http.Request) (remotewrite.Version, remotewrite.Counts, error) {
	var c remotewrite.Counts
	if req.Method != http.MethodPost {
		return 0, c, fail(http.StatusMethodNotAllowed, "method %s not allowed: use POST", req.Method)
	}
	v, err := version(req.Header.Get("Content-Type"))
	if err != nil {
		return 0, c, err
	}
	if enc := req.Header.Get("Content-Encoding"); enc != remotewrite.ContentEncoding {
		return v, c, fail(http.StatusUnsupportedMediaType, "content encoding %q not supported: want snappy", enc)
	}
	if !r.running.Load() {
		return v, c, fail(http.StatusServiceUnavailable, "relay not running")
	}
	limit := int(r.cfg.MaxRequestBytes)
	bodyLimit := int64(snappy.MaxEncodedLen(limit))
	if req.ContentLength > bodyLimit {
		return v, c, fail(http.StatusRequestEntityTooLarge, "body of %d bytes exceeds max_request_bytes (%d)", req.ContentLength, limit)
	}
	if err := r.acquire(req.Context()); err != nil {
		return v, c, err
	}
	hold := r.holdBufs()
	defer r.hold.Put(hold)
	c, err = r.decode(req, v, hold, limit, bodyLimit)
	r.release()
	if err != nil {
		return v, c, err
	}
	return v, c, r.commit(req.Context(), hold.recs, c)
}

// Write makes one decoded remote-write request of version v durable in the
// queue, as ServeHTTP does with a request's body: the way in for callers in
// the same process (a push API), without an HTTP round trip. It returns
// what the request held once it is fdatasync'd. Errors wrap ErrInvalid (the
// request can never be accepted; the message says why) or ErrUnavailable,
// or are I/O errors of the queue.
func (r *Relay) Write(ctx context.Context, v remotewrite.Version, req []byte) (remotewrite.Counts, error) {
	var c remotewrite.Counts
	if !r.running.Load() {
		return c, fail(http.StatusServiceUnavailable, "relay not running")
	}
	if len(req) > int(r.cfg.MaxRequestBytes) {
		return c, fail(http.StatusRequestEntityTooLarge, "request of %d bytes exceeds max_request_bytes (%d)", len(req), r.cfg.MaxRequestBytes)
	}
	if err := r.acquire(ctx); err != nil {
		return c, err
	}
	hold := r.holdBufs()
	defer r.hold.Put(hold)
	work := r.workBufs()
	c, err := r.prepare(v, req, nil, hold, work)
	r.work.Put(work)
	r.release()
	if err != nil {
		return c, err
	}
	return c, r.commit(ctx, hold.recs, c)
}

func (r *Relay) acquire(ctx context.Context) error {
	select {
	case r.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fail(http.StatusServiceUnavailable, "request cancelled: %v", ctx.Err())
	}
}

func (r *Relay) release() {
	<-r.sem
	// Decoding is CPU-bound: let the forwarders, which need the CPU only
	// briefly per request, run before the next request is decoded, or a
	// busy relay on one core starves them and its queue only grows.
	runtime.Gosched()
}

func (r *Relay) workBufs() *workBufs {
	work, _ := r.work.Get().(*workBufs)
	if work == nil {
		work = &workBufs{shards: make([]remotewrite.Shard, r.rw.Shards())}
	}
	return work
}

func (r *Relay) holdBufs() *holdBufs {
	hold, _ := r.hold.Get().(*holdBufs)
	if hold == nil {
		hold = &holdBufs{}
	}
	hold.recs = hold.recs[:0]
	return hold
}

// commit appends recs to the queue and waits for the fdatasync.
func (r *Relay) commit(ctx context.Context, recs []queue.Record, c remotewrite.Counts) error {
	if len(recs) == 0 {
		return nil
	}
	switch err := r.log.Append(ctx, recs); {
	case errors.Is(err, queue.ErrClosed):
		return fail(http.StatusServiceUnavailable, "relay shutting down")
	case err != nil && ctx.Err() != nil:
		return fail(http.StatusServiceUnavailable, "request cancelled: %v", err)
	case err != nil:
		return fail(http.StatusInternalServerError, "queue: %v", err)
	}
	r.m.received.Add(float64(c.Samples + c.Histograms))
	return nil
}

// decode reads and decompresses the body and prepares its records.
func (r *Relay) decode(req *http.Request, v remotewrite.Version, hold *holdBufs, limit int, bodyLimit int64) (remotewrite.Counts, error) {
	if n := req.ContentLength; n > 0 && int64(cap(hold.body)) <= n {
		hold.body = make([]byte, 0, n+1) // +1: the read that sees EOF needs room
	}
	body, err := readAll(req.Body, hold.body[:0], bodyLimit)
	hold.body = body
	if err != nil {
		return remotewrite.Counts{}, err
	}
	work := r.workBufs()
	defer r.work.Put(work)
	dec, err := remotewrite.Decode(work.dec, body, limit)
	if cap(dec) > cap(work.dec) {
		work.dec = dec[:0]
	}
	if errors.Is(err, remotewrite.ErrTooLarge) {
		return remotewrite.Counts{}, fail(http.StatusRequestEntityTooLarge, "%v (max_request_bytes)", err)
	}
	if err != nil {
		return remotewrite.Counts{}, fail(http.StatusBadRequest, "%v", err)
	}
	return r.prepare(v, dec, body, hold, work)
}

// prepare checks and rewrites the decoded request dec into hold.recs, one
// compressed record per shard. body is dec compressed, if the caller has
// it: a request the rewrite would not change (no external labels, one
// shard, and for 2.0 nothing the rewrite leaves out) is queued as it came,
// neither rebuilt nor compressed again.
func (r *Relay) prepare(v remotewrite.Version, dec, body []byte, hold *holdBufs, work *workBufs) (remotewrite.Counts, error) {
	var c remotewrite.Counts
	var err error
	if v == remotewrite.V1 && r.rw.Identity() && body != nil {
		if c, err = r.rw.Rewrite(dec, nil); err != nil {
			return c, fail(http.StatusBadRequest, "%v", err)
		}
		if c.Series+c.Metadata > 0 {
			hold.recs = append(hold.recs, queue.Record{Samples: c.Samples + c.Histograms, Data: body})
		}
		return c, nil
	}
	if v == remotewrite.V2 && r.rw.Identity() && body != nil {
		c, same, err := r.rw.CheckV2(dec)
		if err != nil {
			return c, fail(http.StatusBadRequest, "%v", err)
		}
		if same {
			if c.Series > 0 {
				hold.recs = append(hold.recs, queue.Record{Flags: recordV2, Samples: c.Samples + c.Histograms, Data: body})
			}
			return c, nil
		}
		// Rare: labels with an empty value or unknown fields to leave out.
	}
	for i := range work.shards {
		work.shards[i].Reset()
	}
	var flags uint16
	if v == remotewrite.V2 {
		c, err = r.rw.RewriteV2(dec, work.shards)
		flags = recordV2
	} else {
		c, err = r.rw.Rewrite(dec, work.shards)
	}
	if err != nil {
		return c, fail(http.StatusBadRequest, "%v", err)
	}
	for len(hold.comp) < len(work.shards) {
		hold.comp = append(hold.comp, nil)
	}
	for i, s := range work.shards {
		if len(s.Buf) == 0 {
			continue
		}
		hold.comp[i] = remotewrite.Encode(hold.comp[i], s.Buf)
		hold.recs = append(hold.recs, queue.Record{Shard: i, Flags: flags, Samples: s.Samples, Data: hold.comp[i]})
	}
	return c, nil
}

// readAll reads r into buf, failing with 413 beyond limit bytes.
func readAll(r io.Reader, buf []byte, limit int64) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return buf, fail(http.StatusRequestEntityTooLarge, "body exceeds %d bytes (max_request_bytes, compressed)", limit)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, fail(http.StatusBadRequest, "read body: %v", err)
		}
	}
}

var _ http.Handler = (*Relay)(nil)
