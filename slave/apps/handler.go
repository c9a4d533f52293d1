package apps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/slave"
	"github.com/agentproj/agent/stackconfig"
)

// HandlerConfig configures the apps API.
type HandlerConfig struct {
	Keys etcd.Keys
	// AllowedImages is api.allowed_images; empty refuses every image.
	AllowedImages []string
	// Charts are the names of stack.helm.app_charts an app may name;
	// empty refuses every app that names a chart.
	Charts []string
	// MaxBodyBytes bounds a request body; zero means
	// stackconfig.DefaultAPI.MaxBodyBytes.
	MaxBodyBytes int64
}

// Handler serves the manager's apps API from etcd; any agent answers it.
type Handler struct {
	kv     clientv3.KV
	cfg    HandlerConfig
	limits atomic.Pointer[limits]
	log    *slog.Logger
	m      *apiMetrics
	bad    *invalidRecords
}

// limits are what a reload may change (SetLimits).
type limits struct {
	policy  ImagePolicy
	maxBody int64
}

// NewHandler returns the API over kv. A nil reg registers no metrics.
func NewHandler(kv clientv3.KV, cfg HandlerConfig, log *slog.Logger, reg prometheus.Registerer) *Handler {
	m := newAPIMetrics(reg)
	h := &Handler{kv: kv, cfg: cfg, log: log, m: m, bad: newInvalidRecords(log, m.invalid)}
	h.SetLimits(cfg.AllowedImages, cfg.MaxBodyBytes)
	return h
}

// SetLimits applies a reloaded api.allowed_images and api.max_body_bytes
// (zero: the default) to the requests from now on.
func (h *Handler) SetLimits(allowedImages []string, maxBodyBytes int64) {
	if maxBodyBytes <= 0 {
		maxBodyBytes = stackconfig.DefaultAPI.MaxBodyBytes
	}
	h.limits.Store(&limits{policy: ImagePolicy(allowedImages), maxBody: maxBodyBytes})
}

// Mux is where routes go; *slave.API and *http.ServeMux are ones.
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Routes returns the API's routes by net/http pattern. The two patterns
// without a method answer every other method and path below
// /api/v1/apps with a JSON error, as every API error is.
func (h *Handler) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /api/v1/apps":          http.HandlerFunc(h.create),
		"GET /api/v1/apps":           http.HandlerFunc(h.list),
		"GET /api/v1/apps/{guid}":    http.HandlerFunc(h.get),
		"DELETE /api/v1/apps/{guid}": http.HandlerFunc(h.delete),
		"/api/v1/apps":               h.other("GET, POST"),
		"/api/v1/apps/":              h.other("GET, DELETE"),
	}
}

// Register adds the routes to mux, each behind RequireToken(tok) unless
// tok is nil (a loopback-only agent without api.token_file); refused
// requests count in agent_apps_requests_rejected_total{code="401"}.
func (h *Handler) Register(mux Mux, tok *Token) {
	refused := h.m.rejected.WithLabelValues(strconv.Itoa(http.StatusUnauthorized))
	for pattern, handler := range h.Routes() {
		if tok != nil {
			handler = requireToken(tok, handler, refused.Inc)
		}
		mux.Handle(pattern, handler)
	}
}

// AppView is an app as the API shows it: the record and what its node
// last reported (null before the first report, or while no node runs it).
type AppView struct {
	GUID string `json:"guid"`
	Record
	Status *Status `json:"status"`
}

// SkippedRecord is a key whose value was left out, with the reason.
type SkippedRecord struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// AppList is the answer of GET /api/v1/apps.
type AppList struct {
	Apps     []AppView       `json:"apps"`
	Skipped  []SkippedRecord `json:"skipped,omitempty"`
	Revision int64           `json:"revision"`
}

const etcdTimeout = 5 * time.Second

func (h *Handler) fail(w http.ResponseWriter, code int, msg string) {
	h.m.rejected.WithLabelValues(strconv.Itoa(code)).Inc()
	slave.WriteError(w, code, msg)
}

func (h *Handler) etcdFail(w http.ResponseWriter, err error) {
	h.log.Warn("apps api: etcd request failed", "err", err)
	h.fail(w, http.StatusServiceUnavailable, err.Error())
}

// create is POST /api/v1/apps.
func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		h.fail(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type: must be application/json, got %q", r.Header.Get("Content-Type")))
		return
	}
	lim := h.limits.Load()
	spec, err := DecodeApp(http.MaxBytesReader(w, r.Body, lim.maxBody), lim.policy)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than api.max_body_bytes (%d bytes)", tooBig.Limit))
			return
		}
		h.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := CheckChart(spec.Chart, h.cfg.Charts); err != nil {
		h.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), etcdTimeout)
	defer cancel()
	key := h.cfg.Keys.App(spec.GUID)

	// Read the members and the apps, place, and create the record only if
	// neither changed since the read (else read and place again), so that
	// concurrent creations of other guids never pick the same node out of
	// turn: the placement is exact, whatever arrives at once.
	rec, out := h.tryCreate(ctx, w, spec, key)
	for ; out == stale; rec, out = h.tryCreate(ctx, w, spec, key) {
		h.m.placementRetries.Inc()
	}
	if out == answered {
		return
	}
	h.m.created.Inc()
	h.log.Info("app created", "guid", spec.GUID, "image", spec.Image, "assigned", rec.Node, "pinned", rec.Pinned)
	w.Header().Set("Location", "/api/v1/apps/"+spec.GUID)
	slave.WriteJSON(w, http.StatusCreated, AppView{GUID: spec.GUID, Record: rec})
}

// outcome is how a round of create ended.
type outcome int

const (
	answered outcome = iota // the request is answered (the app exists, a bad node, etcd failed)
	written                 // the record is written
	stale                   // the members or the apps changed since the read: again
)

// tryCreate is one round of create: the consistent read, the placement
// and the conditional write.
func (h *Handler) tryCreate(ctx context.Context, w http.ResponseWriter, spec AppSpec, key string) (Record, outcome) {
	resp, err := h.kv.Txn(ctx).Then(
		clientv3.OpGet(h.cfg.Keys.Members(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(h.cfg.Keys.Apps(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		h.etcdFail(w, fmt.Errorf("read members and apps: %w", err))
		return Record{}, answered
	}
	live := MemberNodes(h.cfg.Keys, resp.Responses[0].GetResponseRange().Kvs)
	counts := map[string]int{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		rec, err := ParseRecord(h.cfg.Keys, kv.Key, kv.Value)
		if string(kv.Key) == key {
			h.exists(w, spec, rec, err)
			return Record{}, answered
		}
		if err != nil {
			h.bad.report(string(kv.Key), kv.ModRevision, err)
			continue
		}
		counts[rec.Node]++
	}

	rec := Record{Spec: spec, Node: spec.Node, Pinned: spec.Node != "", Created: time.Now().UTC().Truncate(time.Millisecond)}
	if rec.Pinned {
		if !contains(live, spec.Node) {
			h.fail(w, http.StatusBadRequest, fmt.Sprintf("node: must name a live member, got %q (live: %s)", spec.Node, strings.Join(live, ", ")))
			return Record{}, answered
		}
	} else if rec.Node = LeastLoaded(live, counts); rec.Node == "" {
		h.fail(w, http.StatusServiceUnavailable, "no live member to place the app on")
		return Record{}, answered
	}
	val, err := json.Marshal(rec)
	if err != nil {
		h.fail(w, http.StatusInternalServerError, err.Error())
		return Record{}, answered
	}
	if len(val) > MaxRecordBytes {
		// Only reachable with api.max_body_bytes raised: nodes would skip it.
		h.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: the app record would be %d bytes, larger than the %d bytes an app record may have", len(val), MaxRecordBytes))
		return Record{}, answered
	}
	// Only the first of concurrent creations of one guid succeeds, and
	// only while the read is current (a deleted key does not count: one
	// app fewer never makes the placement worse than it was).
	read := resp.Header.Revision
	tx, err := h.kv.Txn(ctx).
		If(
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.ModRevision(h.cfg.Keys.Apps()), "<", read+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(h.cfg.Keys.Members()), "<", read+1).WithPrefix(),
		).
		Then(clientv3.OpPut(key, string(val))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		h.etcdFail(w, fmt.Errorf("create %s: %w", key, err))
		return Record{}, answered
	}
	if tx.Succeeded {
		return rec, written
	}
	if kvs := tx.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		existing, err := ParseRecord(h.cfg.Keys, kvs[0].Key, kvs[0].Value)
		h.exists(w, spec, existing, err)
		return Record{}, answered
	}
	return Record{}, stale
}

// exists answers a POST for a guid that has a record already: 200 with it
// when the specs are the same (a retried request), else 409.
func (h *Handler) exists(w http.ResponseWriter, spec AppSpec, rec Record, parseErr error) {
	switch {
	case parseErr != nil:
		h.fail(w, http.StatusConflict, fmt.Sprintf("app %q exists with a record that does not validate (%v); delete it first", spec.GUID, parseErr))
	case !rec.Spec.Equal(spec):
		h.fail(w, http.StatusConflict, fmt.Sprintf("app %q exists with a different spec; delete it first to change it", spec.GUID))
	default:
		slave.WriteJSON(w, http.StatusOK, AppView{GUID: spec.GUID, Record: rec})
	}
}

// list is GET /api/v1/apps.
func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), etcdTimeout)
	defer cancel()
	resp, err := h.kv.Txn(ctx).Then(
		clientv3.OpGet(h.cfg.Keys.Apps(), clientv3.WithPrefix()),
		clientv3.OpGet(h.cfg.Keys.AppStatuses(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		h.etcdFail(w, fmt.Errorf("read apps: %w", err))
		return
	}
	statuses := map[string]*Status{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if st, ok := parseStatus(kv.Value); ok {
			statuses[strings.TrimPrefix(string(kv.Key), h.cfg.Keys.AppStatuses())] = st
		}
	}
	out := AppList{Apps: []AppView{}, Revision: resp.Header.Revision}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		rec, err := ParseRecord(h.cfg.Keys, kv.Key, kv.Value)
		if err != nil {
			h.bad.report(string(kv.Key), kv.ModRevision, err)
			out.Skipped = append(out.Skipped, SkippedRecord{Key: string(kv.Key), Reason: err.Error()})
			continue
		}
		out.Apps = append(out.Apps, AppView{GUID: rec.Spec.GUID, Record: rec, Status: statuses[rec.Spec.GUID]})
	}
	sort.Slice(out.Apps, func(i, j int) bool { return out.Apps[i].GUID < out.Apps[j].GUID })
	slave.WriteJSON(w, http.StatusOK, out)
}

// get is GET /api/v1/apps/{guid}.
func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	guid, resp, ok := h.appTxn(w, r, clientv3.OpGet, "read app")
	if !ok {
		return
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		h.fail(w, http.StatusNotFound, fmt.Sprintf("app %q not found", guid))
		return
	}
	rec, err := ParseRecord(h.cfg.Keys, kvs[0].Key, kvs[0].Value)
	if err != nil {
		h.bad.report(string(kvs[0].Key), kvs[0].ModRevision, err)
		h.fail(w, http.StatusInternalServerError, fmt.Sprintf("app %q: stored record does not validate: %v", guid, err))
		return
	}
	view := AppView{GUID: guid, Record: rec}
	if st := resp.Responses[1].GetResponseRange().Kvs; len(st) > 0 {
		view.Status, _ = parseStatus(st[0].Value)
	}
	slave.WriteJSON(w, http.StatusOK, view)
}

// delete is DELETE /api/v1/apps/{guid}. The status goes in the same
// transaction; the assigned node stops the app when its watch sees it.
func (h *Handler) delete(w http.ResponseWriter, r *http.Request) {
	guid, resp, ok := h.appTxn(w, r, clientv3.OpDelete, "delete app")
	if !ok {
		return
	}
	if resp.Responses[0].GetResponseDeleteRange().Deleted == 0 {
		h.fail(w, http.StatusNotFound, fmt.Sprintf("app %q not found", guid))
		return
	}
	h.m.deleted.Inc()
	h.log.Info("app deleted", "guid", guid)
	w.WriteHeader(http.StatusNoContent)
}

// appTxn applies op (clientv3.OpGet or OpDelete) to the record and the
// status of the app the path names, in one transaction. On a bad guid or an
// etcd error ("<what>: <error>") it has answered the request itself and
// reports false.
func (h *Handler) appTxn(w http.ResponseWriter, r *http.Request, op func(string, ...clientv3.OpOption) clientv3.Op, what string) (string, *clientv3.TxnResponse, bool) {
	guid, ok := h.guid(w, r)
	if !ok {
		return "", nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), etcdTimeout)
	defer cancel()
	resp, err := h.kv.Txn(ctx).Then(
		op(h.cfg.Keys.App(guid)),
		op(h.cfg.Keys.AppStatus(guid)),
	).Commit()
	if err != nil {
		h.etcdFail(w, fmt.Errorf("%s: %w", what, err))
		return "", nil, false
	}
	return guid, resp, true
}

func (h *Handler) guid(w http.ResponseWriter, r *http.Request) (string, bool) {
	guid := r.PathValue("guid")
	if !stackconfig.ValidDNSLabel(guid) {
		h.fail(w, http.StatusBadRequest, (&FieldError{Field: "guid", Msg: fmt.Sprintf("must be a DNS label (%s), got %q", stackconfig.DNSLabelRule, guid)}).Error())
		return "", false
	}
	return guid, true
}

// other answers what the method routes do not: a wrong method on a known
// path (405) or a path below /api/v1/apps/ that names no app (404).
func (h *Handler) other(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(r.URL.Path, "/api/v1/apps")
		if rest == "" || (strings.Count(rest, "/") == 1 && len(rest) > 1) {
			w.Header().Set("Allow", allow)
			h.fail(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; allowed: %s", r.Method, allow))
			return
		}
		h.fail(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s", r.URL.Path))
	})
}

func parseStatus(b []byte) (*Status, bool) {
	var st Status
	if json.Unmarshal(b, &st) != nil || st.Status == "" {
		return nil, false
	}
	return &st, true
}

func contains(sorted []string, s string) bool {
	i := sort.SearchStrings(sorted, s)
	return i < len(sorted) && sorted[i] == s
}

var (
	_ Mux = (*slave.API)(nil)
	_ Mux = (*http.ServeMux)(nil)
)
