package relay

import (
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

// httpError is an error with the status it is answered with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func fail(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP handles POST /api/v1/write (remote-write 1.0). It answers 204
// once the request is durable, 400 for a request that can never be
// accepted, 413 above max_request_bytes, 415 for another protocol or
// encoding, and 503/500 for trouble that may pass. Never 429.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	err := r.ingest(req)
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
		if code >= 500 {
			r.logger.Warn("remote-write request failed", "code", code, "err", he.msg)
		} else {
			r.logger.Debug("remote-write request refused", "code", code, "err", he.msg)
		}
	} else {
		w.WriteHeader(code)
	}
	r.m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}

func (r *Relay) ingest(req *http.Request) error {
	if req.Method != http.MethodPost {
		return fail(http.StatusMethodNotAllowed, "method %s not allowed: use POST", req.Method)
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || mt != remotewrite.ContentType {
			return fail(http.StatusUnsupportedMediaType, "content type %q not supported: send remote-write 1.0 (%s)", ct, remotewrite.ContentType)
		}
		if p := params["proto"]; p != "" && p != "prometheus.WriteRequest" {
			return fail(http.StatusUnsupportedMediaType, "remote-write 2.0 (proto=%s) is not supported: send remote-write 1.0 (protobuf_message: prometheus.WriteRequest)", p)
		}
	}
	if enc := req.Header.Get("Content-Encoding"); enc != remotewrite.ContentEncoding {
		return fail(http.StatusUnsupportedMediaType, "content encoding %q not supported: want snappy", enc)
	}
	if !r.running.Load() {
		return fail(http.StatusServiceUnavailable, "relay not running")
	}
	limit := int(r.cfg.MaxRequestBytes)
	bodyLimit := int64(snappy.MaxEncodedLen(limit))
	if req.ContentLength > bodyLimit {
		return fail(http.StatusRequestEntityTooLarge, "body of %d bytes exceeds max_request_bytes (%d)", req.ContentLength, limit)
	}
	select {
	case r.sem <- struct{}{}:
	case <-req.Context().Done():
		return fail(http.StatusServiceUnavailable, "request cancelled: %v", req.Context().Err())
	}
	hold, _ := r.hold.Get().(*holdBufs)
	if hold == nil {
		hold = &holdBufs{}
	}
	defer r.hold.Put(hold)
	samples, err := r.decode(req, hold, limit, bodyLimit)
	<-r.sem
	// Decoding is CPU-bound: let the forwarders, which need the CPU only
	// briefly per request, run before the next request is decoded, or a
	// busy relay on one core starves them and its queue only grows.
	runtime.Gosched()
	if err != nil || len(hold.recs) == 0 {
		return err
	}
	switch err := r.log.Append(req.Context(), hold.recs); {
	case errors.Is(err, queue.ErrClosed):
		return fail(http.StatusServiceUnavailable, "relay shutting down")
	case err != nil && req.Context().Err() != nil:
		return fail(http.StatusServiceUnavailable, "request cancelled: %v", err)
	case err != nil:
		return fail(http.StatusInternalServerError, "queue: %v", err)
	}
	r.m.received.Add(float64(samples))
	return nil
}

// decode reads, checks and rewrites the body into hold.recs.
func (r *Relay) decode(req *http.Request, hold *holdBufs, limit int, bodyLimit int64) (int, error) {
	if n := req.ContentLength; n > 0 && int64(cap(hold.body)) <= n {
		hold.body = make([]byte, 0, n+1) // +1: the read that sees EOF needs room
	}
	body, err := readAll(req.Body, hold.body[:0], bodyLimit)
	hold.body = body
	if err != nil {
		return 0, err
	}
	work, _ := r.work.Get().(*workBufs)
	if work == nil {
		work = &workBufs{shards: make([]remotewrite.Shard, r.rw.Shards())}
	}
	defer r.work.Put(work)
	dec, err := remotewrite.Decode(work.dec, body, limit)
	if cap(dec) > cap(work.dec) {
		work.dec = dec[:0]
	}
	if errors.Is(err, remotewrite.ErrTooLarge) {
		return 0, fail(http.StatusRequestEntityTooLarge, "%v (max_request_bytes)", err)
	}
	if err != nil {
		return 0, fail(http.StatusBadRequest, "%v", err)
	}
	hold.recs = hold.recs[:0]
	if r.rw.Identity() {
		c, err := r.rw.Rewrite(dec, nil)
		if err != nil {
			return 0, fail(http.StatusBadRequest, "%v", err)
		}
		if c.Series+c.Metadata > 0 {
			hold.recs = append(hold.recs, queue.Record{Samples: c.Samples + c.Histograms, Data: body})
		}
		return c.Samples + c.Histograms, nil
	}
	for i := range work.shards {
		work.shards[i] = remotewrite.Shard{Buf: work.shards[i].Buf[:0]}
	}
	c, err := r.rw.Rewrite(dec, work.shards)
	if err != nil {
		return 0, fail(http.StatusBadRequest, "%v", err)
	}
	for len(hold.comp) < len(work.shards) {
		hold.comp = append(hold.comp, nil)
	}
	for i, s := range work.shards {
		if len(s.Buf) == 0 {
			continue
		}
		hold.comp[i] = remotewrite.Encode(hold.comp[i], s.Buf)
		hold.recs = append(hold.recs, queue.Record{Shard: i, Samples: s.Samples, Data: hold.comp[i]})
	}
	return c.Samples + c.Histograms, nil
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
