package slave

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Bounds of the read endpoints. An answer is a shared, already rendered
// body, so what a request costs is its connection and the time to write
// it; these keep that bounded whatever the load.
const (
	// maxInFlight answers are written at once; more requests wait.
	maxInFlight = 256
	// maxQueueWait is how long a request waits for a slot before it is
	// answered 503 with Retry-After.
	maxQueueWait = 5 * time.Second
	// answerWriteTimeout bounds the write of one answer, so that slow
	// readers cannot hold the slots.
	answerWriteTimeout = 30 * time.Second
)

// HandleSnapshot adds the read endpoints, answered from snap (never from
// etcd directly): GET /api/v1/status, GET /sd/http (Prometheus http_sd,
// optionally ?job=) and GET /api/v1/targets. Any agent answers them, so
// Prometheus may point at any of them. Answers carry an ETag (a request
// with a matching If-None-Match gets 304), are gzip-encoded for clients
// that accept it, and carry X-Agent-Stale-Since while etcd cannot be
// reached.
func (a *API) HandleSnapshot(snap *Snapshot) {
	slots := make(chan struct{}, maxInFlight)
	serve := func(w http.ResponseWriter, r *http.Request, get func() (*rendered, snapshotMeta, error)) {
		if !acquire(r, slots) {
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusServiceUnavailable, "too many requests in flight; retry")
			return
		}
		defer func() { <-slots }()
		ans, meta, err := get()
		if err != nil {
			WriteError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(answerWriteTimeout))
		writeAnswer(w, r, ans, meta)
	}
	a.mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, func() (*rendered, snapshotMeta, error) {
			v, err := snap.viewState()
			if err != nil {
				return nil, snapshotMeta{}, err
			}
			return v.status, v.meta, nil
		})
	})
	a.mux.HandleFunc("GET /sd/http", func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, func() (*rendered, snapshotMeta, error) {
			st, err := snap.targetState()
			if err != nil {
				return nil, snapshotMeta{}, err
			}
			if job := r.URL.Query().Get("job"); job != "" {
				return st.sdJob(snap, job), st.meta, nil
			}
			return st.all, st.meta, nil
		})
	})
	a.mux.HandleFunc("GET /api/v1/targets", func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, func() (*rendered, snapshotMeta, error) {
			st, err := snap.targetState()
			if err != nil {
				return nil, snapshotMeta{}, err
			}
			return st.listing, st.meta, nil
		})
	})
}

// acquire takes a slot, waiting up to maxQueueWait or the request's end.
func acquire(r *http.Request, slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(maxQueueWait)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return true
	case <-t.C:
	case <-r.Context().Done():
	}
	return false
}

// writeAnswer writes a rendered answer: 304 when If-None-Match names its
// ETag, else the body, gzip-encoded when the client accepts it.
func writeAnswer(w http.ResponseWriter, r *http.Request, ans *rendered, meta snapshotMeta) {
	etag := ans.ETag()
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("Vary", "Accept-Encoding")
	if meta.stale {
		h.Set("X-Agent-Stale-Since", meta.staleSince.UTC().Format(time.RFC3339))
	}
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	var body []byte
	if gz := ans.gzipped(); gz != nil && acceptsGzip(r.Header.Get("Accept-Encoding")) {
		body = gz
		h.Set("Content-Encoding", "gzip")
	} else {
		body = ans.body()
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// etagMatches is the weak comparison of If-None-Match (RFC 9110 13.1.2).
func etagMatches(header, etag string) bool {
	for tag := range strings.SplitSeq(header, ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if tag == "*" || tag == etag {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether Accept-Encoding lists gzip with a non-zero
// weight.
func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q, ok := strings.CutPrefix(strings.ReplaceAll(strings.TrimSpace(params), " ", ""), "q=")
		if !ok {
			return true
		}
		v, err := strconv.ParseFloat(q, 64)
		return err == nil && v > 0
	}
	return false
}
