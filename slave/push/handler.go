package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/slave"
	"github.com/agentproj/agent/slave/samples"
	"github.com/agentproj/agent/stackconfig"
)

// Appender puts a remote-write request into the relay's queue and returns
// nil only once it is durable; an error may carry the HTTP status to
// answer (StatusCode() int). *relay.Relay implements it.
type Appender interface {
	Append(ctx context.Context, wr *remotewrite.WriteRequest) error
}

// Config is what the handler needs of the agent's configuration.
type Config struct {
	Node, Cluster string
	MaxBodyBytes  int64
}

// Handler serves POST /api/v1/push.
type Handler struct {
	cfg     Config
	maxBody atomic.Int64 // cfg.MaxBodyBytes, or a reloaded one
	app     Appender
	log     *slog.Logger
	m       metrics
	now     func() time.Time
}

type metrics struct {
	requests *prometheus.CounterVec
	samples  prometheus.Counter
	replaced prometheus.Counter
}

// NewHandler returns the push handler. app nil means this agent has no
// relay (no relay.upstream): every push is answered 503 saying so.
func NewHandler(cfg Config, app Appender, log *slog.Logger, reg prometheus.Registerer) *Handler {
	h := &Handler{cfg: cfg, app: app, log: log, now: time.Now, m: metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_push_requests_total", Help: "Push API requests, by answer.",
		}, []string{"code"}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_push_samples_total", Help: "Pushed samples made durable in the relay's queue.",
		}),
		replaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_push_timestamps_replaced_total", Help: "Pushed JSON timestamps that were not seconds and were taken as the time of arrival.",
		}),
	}}
	if reg != nil {
		reg.MustRegister(h.m.requests, h.m.samples, h.m.replaced)
	}
	h.SetMaxBodyBytes(cfg.MaxBodyBytes)
	return h
}

// SetMaxBodyBytes applies a reloaded push.max_body_bytes to the requests
// from now on.
func (h *Handler) SetMaxBodyBytes(n int64) { h.maxBody.Store(n) }

// pushError is an answer other than 204.
type pushError struct {
	code int
	msg  string
}

func (e *pushError) Error() string { return e.msg }

func fail(code int, format string, args ...any) error {
	return &pushError{code: code, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP answers 204 once every sample of the request is durable; 400
// naming the line for a body that can never be accepted (nothing of it is
// kept); 405, 413, 415; 503 without a relay or while it does not run; 500
// when the queue cannot be written.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, err := h.push(r)
	code := http.StatusNoContent
	if err != nil {
		var pe *pushError
		if !errors.As(err, &pe) {
			pe = &pushError{code: http.StatusInternalServerError, msg: err.Error()}
		}
		code = pe.code
		if code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		slave.WriteError(w, code, pe.msg)
		if code >= 500 {
			h.log.Warn("push failed", "code", code, "err", pe.msg)
		} else {
			h.log.Debug("push refused", "code", code, "err", pe.msg)
		}
	} else {
		w.WriteHeader(code)
		h.m.samples.Add(float64(n))
	}
	h.m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}

func (h *Handler) push(r *http.Request) (int, error) {
	if r.Method != http.MethodPost {
		return 0, fail(http.StatusMethodNotAllowed, "method %s not allowed: use POST", r.Method)
	}
	if h.app == nil {
		return 0, fail(http.StatusServiceUnavailable, "push needs the relay, and this agent has none: set relay.upstream (docs/push.md)")
	}
	q := r.URL.Query()
	for k := range q {
		if k != "ns" {
			return 0, fail(http.StatusBadRequest, "unknown query parameter %q: only ns is taken", k)
		}
	}
	ns := q.Get("ns")
	if len(q["ns"]) != 1 || !stackconfig.ValidNamespace(ns) {
		return 0, fail(http.StatusBadRequest, "ns: must be given once and be %s, got %q", stackconfig.NamespaceRule, q["ns"])
	}
	format, err := samples.ContentFormat(r.Header.Get("Content-Type"))
	if err != nil {
		return 0, fail(http.StatusUnsupportedMediaType, "%v", err)
	}
	if enc := r.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		return 0, fail(http.StatusUnsupportedMediaType, "content encoding %q not supported: send the body uncompressed", enc)
	}
	maxBody := h.maxBody.Load()
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return 0, fail(http.StatusRequestEntityTooLarge, "body exceeds %d bytes (push.max_body_bytes)", maxBody)
		}
		return 0, fail(http.StatusBadRequest, "read body: %v", err)
	}
	res, err := samples.Parse(body, format, samples.Options{
		Now:    h.now(),
		Labels: map[string]string{"ns": ns, "node": h.cfg.Node, "cluster": h.cfg.Cluster},
	})
	if err != nil {
		return 0, fail(http.StatusBadRequest, "%v; nothing of this request was kept", err)
	}
	h.m.replaced.Add(float64(res.TimestampsReplaced))
	if res.Samples == 0 {
		return 0, nil
	}
	if err := h.app.Append(r.Context(), res.WriteRequest()); err != nil {
		code := http.StatusInternalServerError
		var sc interface{ StatusCode() int }
		if errors.As(err, &sc) {
			code = sc.StatusCode()
		}
		if code < 500 {
			return 0, fail(code, "the relay refused the samples: %v; nothing of this request was kept", err)
		}
		return 0, fail(code, "relay: %v", err)
	}
	return res.Samples, nil
}

var _ http.Handler = (*Handler)(nil)
