package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/master/relay/queue"
	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

// failingAfter consecutive failures turn an upstream's state from
// "retrying" to "failing".
const failingAfter = 5

var userAgent = func() string {
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	return "agent-relay/" + v + " (github.com/agentproj/agent)"
}()

// forwarder delivers one upstream's share of the queue: one goroutine per
// shard, each sending its records in order, one request at a time.
type forwarder struct {
	url, name string
	cfg       stackconfig.Relay
	client    *http.Client
	log       *queue.Log
	cursors   []int
	order     *order
	logger    *slog.Logger

	forwardedC prometheus.Counter
	rejectedC  prometheus.Counter
	retriesC   prometheus.Counter
	duration   prometheus.Observer
	responses  *prometheus.CounterVec

	failures  atomic.Int64
	forwarded atomic.Int64
	dropped   *atomic.Int64
	oldest    []atomic.Int64 // unix ms of each shard's oldest unacknowledged record; 0: none
	mu        sync.Mutex
	lastErr   string
}

func newForwarder(u string, cfg stackconfig.Relay, log *queue.Log, cursors []int, dropped *atomic.Int64, m *metrics, logger *slog.Logger) (*forwarder, error) {
	tlsCfg, err := tlsConfig(cfg.TLS)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tr.MaxIdleConnsPerHost = len(cursors) + 1
	tr.WriteBufferSize = 128 << 10 // a request is ~100 KiB: few write calls
	name := redact(u)
	return &forwarder{
		url: u, name: name, cfg: cfg, log: log, cursors: cursors,
		order:      newOrder(len(cursors), defaultShardLead),
		client:     &http.Client{Transport: tr, Timeout: cfg.RemoteTimeout},
		logger:     logger.With("upstream", name),
		forwardedC: m.forwarded.WithLabelValues(name),
		rejectedC:  m.dropped.WithLabelValues(name, reasonRejected),
		retriesC:   m.retries.WithLabelValues(name),
		duration:   m.duration.WithLabelValues(name),
		responses:  m.responses.MustCurryWith(prometheus.Labels{"upstream": name}),
		dropped:    dropped,
		oldest:     make([]atomic.Int64, len(cursors)),
	}, nil
}

func tlsConfig(c stackconfig.RelayTLS) (*tls.Config, error) {
	cfg := &tls.Config{InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in by config
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: no certificate in %s", c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Run forwards until ctx ends.
func (f *forwarder) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for s := range f.cursors {
		wg.Go(func() { f.runShard(ctx, s) })
	}
	wg.Wait()
	f.client.CloseIdleConnections()
}

// batch is one upstream request being assembled from queue records.
type batch struct {
	rd      *queue.Reader
	order   *order
	shard   int
	blocks  [][]byte // snappy blocks, one per record
	spare   [][]byte // buffers to read records into
	samples int
	end     queue.Position
	first   time.Time
	held    *queue.Record // read but not taken; opens the next batch
	heldAt  queue.Position
}

func (b *batch) buf() []byte {
	if n := len(b.spare); n > 0 {
		x := b.spare[n-1]
		b.spare = b.spare[:n-1]
		return x[:0]
	}
	return nil
}

func (b *batch) add(rec queue.Record, at queue.Position) {
	if len(b.blocks) == 0 {
		b.first = rec.Time
	}
	b.blocks = append(b.blocks, rec.Data)
	b.samples += rec.Samples
	b.end = at
}

// fill starts a new batch: it waits for a first record, and for the shard's
// turn to send it (order), then takes records while they fit in max
// samples and the order allows them, waiting up to deadline after the first
// for more to arrive. With max 0 it takes one record.
func (b *batch) fill(ctx context.Context, max int, deadline time.Duration) error {
	b.spare = append(b.spare, b.blocks...)
	b.blocks, b.samples = b.blocks[:0], 0
	first, at := b.held, b.heldAt
	b.held = nil
	if first == nil {
		x := b.buf()
		rec, pos, wait, err := b.rd.TryNext(x)
		if err == nil && wait != nil {
			b.order.set(b.shard, idle) // nothing to send: others need not wait for us
			rec, pos, err = b.rd.Next(ctx, x)
		}
		if err != nil {
			b.spare = append(b.spare, x)
			return err
		}
		first, at = &rec, pos
	}
	b.order.set(b.shard, first.Time.UnixMilli())
	if err := b.order.wait(ctx, b.shard, first.Time.UnixMilli()); err != nil {
		b.held, b.heldAt = first, at
		return err
	}
	b.add(*first, at)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for b.samples < max {
		x := b.buf()
		rec, at, wait, err := b.rd.TryNext(x)
		if err != nil || wait != nil {
			b.spare = append(b.spare, x)
		}
		if err != nil {
			return nil // send what we have; the error comes back on the next Next
		}
		if wait != nil {
			if timer == nil {
				d := time.Until(b.first.Add(deadline))
				if d <= 0 || deadline == 0 {
					return nil
				}
				timer = time.NewTimer(d)
			}
			select {
			case <-wait:
				continue
			case <-timer.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if lim, _ := b.order.limit(b.shard); b.samples+rec.Samples > max || rec.Time.UnixMilli() > lim {
			b.held, b.heldAt = &rec, at
			return nil
		}
		b.add(rec, at)
	}
	return nil
}

func (f *forwarder) runShard(ctx context.Context, s int) {
	b := &batch{rd: f.log.Reader(f.cursors[s]), order: f.order, shard: s}
	defer b.rd.Close()
	var body, joined []byte
	// After a rejection batches are one record, then grow back to
	// max_samples_per_send with every accepted one: a run of bad records
	// (a restart resending what the upstream has) costs one record each.
	limit := f.cfg.MaxSamplesPerSend
	for {
		if err := b.fill(ctx, limit, f.cfg.FlushDeadline); err != nil {
			if ctx.Err() != nil || errors.Is(err, queue.ErrClosed) {
				return
			}
			f.logger.Error("read queue", "err", err)
			sleep(ctx, f.cfg.MaxBackoff)
			continue
		}
		f.oldest[s].Store(b.first.UnixMilli())
		var err error
		if len(b.blocks) == 1 {
			body = b.blocks[0]
		} else if joined, err = remotewrite.Concat(joined, b.blocks...); err != nil {
			f.logger.Error("join queue records", "err", err) // cannot happen: the queue checked them
			continue
		} else {
			body = joined
		}
		rejected, err := f.deliver(ctx, body, b.samples)
		if err != nil {
			return // ctx ended: the batch is sent again after a restart
		}
		if rejected {
			f.drop(len(b.blocks), b.samples)
			limit = 0
		} else {
			limit = min(f.cfg.MaxSamplesPerSend, 2*max(limit, b.samples))
		}
		b.rd.Ack(b.end, len(b.blocks), b.samples)
		f.oldest[s].Store(0)
	}
}

// drop counts a batch the upstream refused with a 4xx. It is never sent
// again, not even in parts: the upstream may have stored some of it, and
// the remote-write spec forbids retrying on 4xx (429 aside).
func (f *forwarder) drop(records, samples int) {
	f.dropped.Add(int64(samples))
	f.rejectedC.Add(float64(samples))
	f.logger.Warn("upstream rejected batch, dropped", "records", records, "samples", samples, "err", f.lastError())
}

// deliver sends body until the upstream accepts it (rejected false),
// refuses it with a 4xx other than 429 (rejected true), or ctx ends.
func (f *forwarder) deliver(ctx context.Context, body []byte, samples int) (rejected bool, err error) {
	for attempt := 0; ; attempt++ {
		code, retryAfter, err := f.send(ctx, body)
		switch {
		case err == nil && code/100 == 2:
			f.failures.Store(0)
			f.forwarded.Add(int64(samples))
			f.forwardedC.Add(float64(samples))
			return false, nil
		case err == nil && code/100 == 4 && code != http.StatusTooManyRequests:
			f.failures.Store(0) // reachable, just unwilling
			return true, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err != nil {
			f.setErr(err) // a status was recorded by send
		}
		n := f.failures.Add(1)
		f.retriesC.Inc()
		delay := backoff(attempt, f.cfg.MinBackoff, f.cfg.MaxBackoff)
		if retryAfter > 0 {
			delay = retryAfter
		}
		if n == failingAfter {
			f.logger.Warn("upstream failing, retrying", "err", f.lastError(), "attempt", attempt+1)
		}
		if !sleep(ctx, delay) {
			return false, ctx.Err()
		}
	}
}

// send makes one request; it returns the status, the Retry-After delay and
// an error when there was no response.
func (f *forwarder) send(ctx context.Context, body []byte) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, fmt.Errorf("build request: %w", err)
	}
	for k, v := range f.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Encoding", remotewrite.ContentEncoding)
	req.Header.Set("Content-Type", remotewrite.ContentType)
	req.Header.Set(remotewrite.VersionHeader, remotewrite.VersionV1)
	req.Header.Set("User-Agent", userAgent)
	if err := f.authorize(req); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	resp, err := f.client.Do(req)
	f.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		f.responses.WithLabelValues("error").Inc()
		return 0, 0, err
	}
	defer resp.Body.Close()
	f.responses.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		err := fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
		f.setErr(err)
	}
	return resp.StatusCode, retryAfter(resp.Header.Get("Retry-After")), nil
}

// authorize adds credentials, reading the files on every request so that
// rotated secrets are picked up.
func (f *forwarder) authorize(req *http.Request) error {
	if p := f.cfg.BearerTokenFile; p != "" {
		tok, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read bearer_token_file: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	if ba := f.cfg.BasicAuth; ba.Username != "" {
		var pw []byte
		if ba.PasswordFile != "" {
			var err error
			if pw, err = os.ReadFile(ba.PasswordFile); err != nil {
				return fmt.Errorf("read basic_auth.password_file: %w", err)
			}
		}
		req.SetBasicAuth(ba.Username, strings.TrimSpace(string(pw)))
	}
	return nil
}

// retryAfter parses a Retry-After header (seconds or an HTTP date).
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}

// backoff is min doubled per attempt, capped at max, with jitter in
// [d/2, d).
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo << min(attempt, 30)
	if d <= 0 || d > hi {
		d = hi
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (f *forwarder) setErr(err error) {
	f.mu.Lock()
	f.lastErr = err.Error()
	f.mu.Unlock()
}

func (f *forwarder) lastError() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

func (f *forwarder) oldestAge(now time.Time) float64 {
	age := 0.0
	for i := range f.oldest {
		if ms := f.oldest[i].Load(); ms > 0 {
			age = max(age, now.Sub(time.UnixMilli(ms)).Seconds())
		}
	}
	return age
}

func (f *forwarder) stats() UpstreamStats {
	st := UpstreamStats{
		URL:                   f.name,
		State:                 "ok",
		OldestEntryAgeSeconds: f.oldestAge(time.Now()),
		SamplesForwarded:      f.forwarded.Load(),
		SamplesDropped:        f.dropped.Load(),
	}
	switch n := f.failures.Load(); {
	case n >= failingAfter:
		st.State = "failing"
	case n > 0:
		st.State = "retrying"
	}
	st.LastError = f.lastError()
	for _, c := range f.cursors {
		cs := f.log.Stats(c)
		st.QueueBytes = max(st.QueueBytes, cs.Bytes)
		st.QueueEntries += cs.Records
		st.QueueSamples += cs.Samples
	}
	return st
}
