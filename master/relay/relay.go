package relay

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/master/relay/queue"
	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

// ErrNoUpstream is returned by New for a config without upstream: the relay
// is disabled.
var ErrNoUpstream = errors.New("relay: no upstream configured")

// Relay receives remote-write, queues it on disk and forwards it.
type Relay struct {
	cfg        stackconfig.Relay
	logger     *slog.Logger
	m          *metrics
	log        *queue.Log
	rw         *remotewrite.Rewriter
	fwds       []*forwarder
	dropped    []atomic.Int64 // samples dropped, by upstream
	sem        chan struct{}  // bounds requests being decoded at once
	running    atomic.Bool
	reg        prometheus.Registerer // where registered is (nil: nowhere)
	registered []prometheus.Collector
	work       sync.Pool // *workBufs
	hold       sync.Pool // *holdBufs
}

// New validates cfg (QueueDir must be set: see
// stackconfig.Relay.WithAgentDefaults), opens the queue and registers the
// relay's metrics on reg (nil: not registered).
func New(cfg stackconfig.Relay, logger *slog.Logger, reg prometheus.Registerer) (*Relay, error) {
	return build(cfg, logger, reg, newMetrics(), true)
}

// build is New with the counters given: when own is false they belong to
// the caller (a Service, whose counters outlive each relay it runs), and
// only the relay's per-upstream gauges are registered on reg.
func build(cfg stackconfig.Relay, logger *slog.Logger, reg prometheus.Registerer, m *metrics, own bool) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, ErrNoUpstream
	}
	if cfg.QueueDir == "" {
		return nil, errors.New("relay.queue_dir: must be set, got \"\"")
	}
	names := remotewrite.NamesUTF8
	if cfg.NameValidation == stackconfig.NamesLegacy {
		names = remotewrite.NamesLegacy
	}
	rw, err := remotewrite.NewRewriter(cfg.ExternalLabels, cfg.Concurrency, names)
	if err != nil {
		return nil, fmt.Errorf("relay.external_labels: %w", err)
	}
	r := &Relay{
		cfg:    cfg,
		logger: logger,
		m:      m,
		rw:     rw,
		sem:    make(chan struct{}, 2*runtime.GOMAXPROCS(0)),
	}
	r.dropped = make([]atomic.Int64, len(cfg.Upstream))
	shards := cfg.Concurrency
	var cursors []queue.Cursor
	for _, u := range cfg.Upstream {
		sum := sha256.Sum256([]byte(u.URL))
		stream := fmt.Sprintf("%x", sum[:8])
		for s := range shards {
			cursors = append(cursors, queue.Cursor{Name: fmt.Sprintf("%s-%d", stream, s), Shard: s, Stream: stream})
		}
	}
	r.log, err = queue.Open(queue.Options{
		Dir:          cfg.QueueDir,
		MaxBytes:     cfg.QueueMaxBytes,
		MinFreeBytes: cfg.QueueMinFreeBytes,
		IdleSeal:     time.Second,
		// A reload opens the queue right after the previous relay closed
		// it, maybe while a workload being started still shares the lock.
		LockWait: 5 * time.Second,
		Shards:   shards,
		Cursors:  cursors,
		Logger:   logger,
		OnDrop: func(cursor, _, samples int) {
			i := cursor / shards
			r.dropped[i].Add(int64(samples))
			r.m.dropped.WithLabelValues(redact(cfg.Upstream[i].URL), reasonQueueFull).Add(float64(samples))
		},
		OnCorrupt: func(int) { r.m.corrupt.Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("open queue: %w", err)
	}
	var collectors []prometheus.Collector
	if own {
		collectors = r.m.collectors()
	}
	for i, u := range cfg.Upstream {
		f, err := newForwarder(u, cfg, r.log, cursorRange(i*shards, shards), &r.dropped[i], r.m, logger)
		if err != nil {
			r.log.Close()
			return nil, fmt.Errorf("relay.upstream[%d]: %w", i, err)
		}
		r.fwds = append(r.fwds, f)
		labels := prometheus.Labels{"upstream": f.name}
		collectors = append(collectors,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "relay_queue_bytes", Help: "Queue bytes an upstream has not acknowledged yet.", ConstLabels: labels,
			}, func() float64 { return float64(f.stats().QueueBytes) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "relay_queue_oldest_entry_age_seconds", Help: "Age of the oldest entry an upstream has not acknowledged yet.", ConstLabels: labels,
			}, func() float64 { return f.oldestAge(time.Now()) }),
		)
	}
	if reg != nil {
		if err := registerAll(reg, collectors); err != nil {
			r.log.Close()
			return nil, err
		}
	}
	upstreams := make([]string, len(r.fwds))
	for i, f := range r.fwds {
		upstreams[i] = f.name
	}
	r.m.useUpstreams(upstreams)
	r.reg, r.registered = reg, collectors
	return r, nil
}

// unregister removes the relay's metrics from its registerer, so that a
// relay built from a reloaded config can register its own.
func (r *Relay) unregister() {
	if r.reg == nil {
		return
	}
	for _, c := range r.registered {
		r.reg.Unregister(c)
	}
}

func cursorRange(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

// redact hides credentials in a URL for logs, metrics and status.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Redacted()
}

// Run runs the queue and the forwarders until ctx ends. Requests arriving
// before or after are answered 503. It returns once every goroutine has
// exited and the queue files are closed.
func (r *Relay) Run(ctx context.Context) error {
	qctx, qcancel := context.WithCancel(context.Background())
	defer qcancel()
	qdone := make(chan error, 1)
	go func() { qdone <- r.log.Run(qctx) }()

	r.running.Store(true)
	var wg sync.WaitGroup
	for _, f := range r.fwds {
		wg.Go(func() { f.Run(ctx) })
	}
	r.logger.Info("relay running", "upstreams", len(r.fwds), "shards", r.cfg.Concurrency, "queue_dir", r.cfg.QueueDir)
	<-ctx.Done()
	r.running.Store(false)
	wg.Wait()
	qcancel()
	if err := <-qdone; err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// Stats is the relay's state for `agent status`.
type Stats struct {
	QueueBytes int64           `json:"queue_bytes"` // on disk, shared by all upstreams
	Upstreams  []UpstreamStats `json:"upstreams"`
}

// UpstreamStats is one upstream's delivery state.
type UpstreamStats struct {
	URL      string `json:"url"`
	State    string `json:"state"`    // ok, retrying or failing
	Protocol string `json:"protocol"` // configured: auto, 1.0 or 2.0
	// SendingV2 and SendingV1 are the versions data that came in as 2.0
	// and as 1.0 is sent in now (they differ from it after a fallback).
	SendingV2             string  `json:"sending_2_0_as"`
	SendingV1             string  `json:"sending_1_0_as"`
	LastError             string  `json:"last_error,omitempty"`
	QueueBytes            int64   `json:"queue_bytes"`
	QueueEntries          int64   `json:"queue_entries"`
	QueueSamples          int64   `json:"queue_samples"`
	OldestEntryAgeSeconds float64 `json:"oldest_entry_age_seconds"`
	SamplesForwarded      int64   `json:"samples_forwarded"`
	SamplesDropped        int64   `json:"samples_dropped"`
}

// Stats reports the queue and every upstream.
func (r *Relay) Stats() Stats {
	st := Stats{QueueBytes: r.log.Bytes()}
	for _, f := range r.fwds {
		st.Upstreams = append(st.Upstreams, f.stats())
	}
	return st
}
