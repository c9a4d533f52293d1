package relay

import (
	"bytes"
	"context"
	"crypto/tls"
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
	up        stackconfig.RelayUpstream
	escape    remotewrite.Escaping
	cfg       stackconfig.Relay
	client    *http.Client
	log       *queue.Log
	cursors   []int
	order     *order
	logger    *slog.Logger
	proto     protoState

	forwardedC prometheus.Counter
	rejectedC  prometheus.Counter
	retriesC   prometheus.Counter
	convertedC prometheus.Counter // samples of series a conversion left out
	duration   prometheus.Observer
	responses  *prometheus.CounterVec
	fallbacks  *prometheus.CounterVec
	converted  *prometheus.CounterVec

	failures  atomic.Int64
	forwarded atomic.Int64
	dropped   *atomic.Int64
	oldest    []atomic.Int64 // unix ms of each shard's oldest unacknowledged record; 0: none
	mu        sync.Mutex
	lastErr   string
}

func newForwarder(up stackconfig.RelayUpstream, cfg stackconfig.Relay, log *queue.Log, cursors []int, dropped *atomic.Int64, m *metrics, logger *slog.Logger) (*forwarder, error) {
	u := up.URL
	if up.Protocol == "" {
		up.Protocol = stackconfig.ProtocolAuto
	}
	escape := remotewrite.EscapeNone
	switch up.NameEscaping {
	case stackconfig.EscapingUnderscores:
		escape = remotewrite.EscapeUnderscores
	case stackconfig.EscapingValues:
		escape = remotewrite.EscapeValues
	}
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
		url: u, name: name, up: up, escape: escape, cfg: cfg, log: log, cursors: cursors,
		proto:      protoState{retry: protocolRetry},
		order:      newOrder(len(cursors), defaultShardLead),
		client:     &http.Client{Transport: tr, Timeout: cfg.RemoteTimeout},
		logger:     logger.With("upstream", name),
		forwardedC: m.forwarded.WithLabelValues(name),
		rejectedC:  m.dropped.WithLabelValues(name, reasonRejected),
		retriesC:   m.retries.WithLabelValues(name),
		convertedC: m.dropped.WithLabelValues(name, reasonConversion),
		duration:   m.duration.WithLabelValues(name),
		responses:  m.responses.MustCurryWith(prometheus.Labels{"upstream": name}),
		fallbacks:  m.fallbacks.MustCurryWith(prometheus.Labels{"upstream": name}),
		converted:  m.converted.MustCurryWith(prometheus.Labels{"upstream": name}),
		dropped:    dropped,
		oldest:     make([]atomic.Int64, len(cursors)),
	}, nil
}

func tlsConfig(c stackconfig.RelayTLS) (*tls.Config, error) {
	cfg := &tls.Config{InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in by config
	if c.CAFile != "" {
		pool, err := stackconfig.CAPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		cfg.RootCAs = pool
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
	flags   uint16 // of every record in the batch: one remote-write version
	end     queue.Position
	first   time.Time
	held    *queue.Record // read but not taken; opens the next batch
	heldAt  queue.Position
	// joinMax, if set, lowers max for a batch that starts with a record of
	// these flags.
	joinMax func(flags uint16, max int) int
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
		b.first, b.flags = rec.Time, rec.Flags
	}
	b.blocks = append(b.blocks, rec.Data)
	b.samples += rec.Samples
	b.end = at
}

// fill starts a new batch: it waits for a first record, and for the shard's
// turn to send it (order), then takes records of the same remote-write
// version while they fit in max samples and the order allows them, waiting
// up to deadline after the first for more to arrive. With max 0 it takes
// one record.
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
	if b.joinMax != nil {
		max = b.joinMax(first.Flags, max)
	}
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
		if lim, _ := b.order.limit(b.shard); b.samples+rec.Samples > max || rec.Time.UnixMilli() > lim || rec.Flags != b.flags {
			b.held, b.heldAt = &rec, at
			return nil
		}
		b.add(rec, at)
	}
	return nil
}

func (f *forwarder) runShard(ctx context.Context, s int) {
	b := &batch{rd: f.log.Reader(f.cursors[s]), order: f.order, shard: s, joinMax: f.joinMax}
	defer b.rd.Close()
	bb := &bodyBuilder{conv: remotewrite.Converter{Escape: f.escape}}
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
		in := recordVersion(b.flags)
		var res result
		var dropped remotewrite.Dropped
		for fellBack := false; ; fellBack = true {
			out := f.target(in)
			body, d, err := bb.build(b.blocks, in, out)
			if err != nil {
				// Cannot happen: the queue checked the records' CRCs.
				f.logger.Error("build upstream request", "records", len(b.blocks), "err", err)
				res = rejected
				break
			}
			dropped = d
			if res, err = f.deliver(ctx, body, out, b.samples-d.Samples); err != nil {
				return // ctx ended: the batch is sent again after a restart
			}
			if res != unsupported {
				break
			}
			if fellBack || !f.fallback(out, time.Now()) {
				res = rejected // neither version, or not ours to choose
				break
			}
		}
		if res == rejected {
			f.drop(len(b.blocks), b.samples)
			limit = 0
		} else {
			f.count(dropped)
			limit = min(f.cfg.MaxSamplesPerSend, 2*max(limit, b.samples))
		}
		b.rd.Ack(b.end, len(b.blocks), b.samples)
		f.oldest[s].Store(0)
	}
}

// joinMax bounds the batches of 2.0 records sent as 2.0: they cannot be
// joined as they are (each has its own symbol table), and rebuilding one
// table for several costs more CPU than sending them one by one. Records
// with at least a quarter of max_samples_per_send (those of a Prometheus
// batch split over a few shards) go alone; smaller ones are joined.
func (f *forwarder) joinMax(flags uint16, max int) int {
	if recordVersion(flags) == remotewrite.V2 && f.escape == remotewrite.EscapeNone && f.target(remotewrite.V2) == remotewrite.V2 {
		return min(max, f.cfg.MaxSamplesPerSend/4)
	}
	return max
}

// count accounts for what a conversion left out of an accepted batch.
func (f *forwarder) count(d remotewrite.Dropped) {
	for kind, n := range map[string]int{"metadata": d.Metadata, "start_timestamp": d.StartTimestamps, "series": d.Series, "exemplar": d.Exemplars} {
		if n > 0 {
			f.converted.WithLabelValues(kind).Add(float64(n))
		}
	}
	if d.Samples > 0 {
		f.dropped.Add(int64(d.Samples))
		f.convertedC.Add(float64(d.Samples))
	}
}

// bodyBuilder makes the body of an upstream request from a batch's
// records: as they are when they are in the version sent (joined under one
// snappy header for 1.0), else decoded, converted and compressed again.
type bodyBuilder struct {
	conv     remotewrite.Converter
	dec      [][]byte
	payloads []remotewrite.Payload
	raw      []byte
	comp     []byte
}

func (bb *bodyBuilder) build(blocks [][]byte, in, out remotewrite.Version) ([]byte, remotewrite.Dropped, error) {
	if in == out && bb.conv.Escape == remotewrite.EscapeNone {
		switch {
		case len(blocks) == 1:
			return blocks[0], remotewrite.Dropped{}, nil
		case in == remotewrite.V1:
			var err error
			bb.comp, err = remotewrite.Concat(bb.comp, blocks...)
			return bb.comp, remotewrite.Dropped{}, err
		}
	}
	bb.payloads = bb.payloads[:0]
	for i, blk := range blocks {
		if len(bb.dec) <= i {
			bb.dec = append(bb.dec, nil)
		}
		d, err := remotewrite.Decode(bb.dec[i], blk, queue.MaxRecordBytes)
		if err != nil {
			return nil, remotewrite.Dropped{}, err
		}
		bb.dec[i] = d
		bb.payloads = append(bb.payloads, remotewrite.Payload{Version: in, Data: d})
	}
	raw, dropped, err := bb.conv.Convert(bb.raw, out, bb.payloads)
	if err != nil {
		return nil, dropped, err
	}
	bb.raw = raw
	bb.comp = remotewrite.Encode(bb.comp, raw)
	return bb.comp, dropped, nil
}

// drop counts a batch the upstream refused with a 4xx. It is never sent
// again, not even in parts: the upstream may have stored some of it, and
// the remote-write spec forbids retrying on 4xx (429 aside).
func (f *forwarder) drop(records, samples int) {
	f.dropped.Add(int64(samples))
	f.rejectedC.Add(float64(samples))
	f.logger.Warn("upstream rejected batch, dropped", "records", records, "samples", samples, "err", f.lastError())
}

// result is how an upstream answered a batch.
type result int

const (
	accepted    result = iota
	rejected           // a 4xx other than 429: never sent again
	unsupported        // the upstream does not take this version (protocol auto)
)

// deliver sends body, a request of version v carrying samples samples and
// histograms, until the upstream accepts it, refuses it (4xx other than
// 429), says it does not take v (see unsupported), or ctx ends.
func (f *forwarder) deliver(ctx context.Context, body []byte, v remotewrite.Version, samples int) (result, error) {
	for attempt := 0; ; attempt++ {
		code, h, err := f.send(ctx, body, v)
		if err == nil && code/100 != 5 && code != http.StatusTooManyRequests {
			f.failures.Store(0) // reachable
			res := f.judge(v, code, h, samples)
			if res == accepted {
				f.forwarded.Add(int64(samples))
				f.forwardedC.Add(float64(samples))
			}
			return res, nil
		}
		if ctx.Err() != nil {
			return accepted, ctx.Err()
		}
		if err != nil {
			f.setErr(err) // a status was recorded by send
		}
		n := f.failures.Add(1)
		f.retriesC.Inc()
		delay := backoff(attempt, f.cfg.MinBackoff, f.cfg.MaxBackoff)
		if ra := retryAfter(h.Get("Retry-After")); ra > 0 {
			delay = ra
		}
		if n == failingAfter {
			f.logger.Warn("upstream failing, retrying", "err", f.lastError(), "attempt", attempt+1)
		}
		if !sleep(ctx, delay) {
			return accepted, ctx.Err()
		}
	}
}

// judge reads a final (not retried) answer to a request of version v.
func (f *forwarder) judge(v remotewrite.Version, code int, h http.Header, samples int) result {
	auto := f.up.Protocol == stackconfig.ProtocolAuto
	written := h.Get(remotewrite.SamplesWrittenHeader) != "" || h.Get(remotewrite.HistogramsWrittenHeader) != "" ||
		h.Get(remotewrite.ExemplarsWrittenHeader) != ""
	switch {
	case code/100 == 2 && v == remotewrite.V2 && !written && samples > 0:
		// A 1.0 receiver that does not look at the Content-Type reads a 2.0
		// body as an empty 1.0 one and answers 2xx: the 2.0 spec says to
		// take that as 415.
		f.setErr(fmt.Errorf("HTTP %d without X-Prometheus-Remote-Write-*-Written headers to a remote-write 2.0 request: the upstream does not take 2.0 (it read an empty request)", code))
		if auto {
			return unsupported
		}
		return rejected
	case code/100 == 2:
		if v == remotewrite.V2 && written {
			f.proto.confirm()
		}
		return accepted
	case code == http.StatusUnsupportedMediaType && auto:
		return unsupported
	case code == http.StatusBadRequest && auto && v == remotewrite.V2 && !written && !f.proto.confirmed():
		// 1.x receivers may answer 2.0 with 400 (the 2.0 spec says to
		// expect it); once the upstream has answered 2.0 as a 2.0 receiver,
		// a 400 is about the data.
		return unsupported
	}
	return rejected
}

// send makes one request of version v; it returns the status and headers,
// and an error when there was no response.
func (f *forwarder) send(ctx context.Context, body []byte, v remotewrite.Version) (int, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range f.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Encoding", remotewrite.ContentEncoding)
	if v == remotewrite.V2 {
		req.Header.Set("Content-Type", remotewrite.ContentTypeV2)
		req.Header.Set(remotewrite.VersionHeader, remotewrite.VersionV2)
	} else {
		req.Header.Set("Content-Type", remotewrite.ContentType)
		req.Header.Set(remotewrite.VersionHeader, remotewrite.VersionV1)
	}
	req.Header.Set("User-Agent", userAgent)
	if err := f.authorize(req); err != nil {
		return 0, nil, err
	}
	start := time.Now()
	resp, err := f.client.Do(req)
	f.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		f.responses.WithLabelValues("error").Inc()
		return 0, http.Header{}, err
	}
	defer resp.Body.Close()
	f.responses.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		err := fmt.Errorf("HTTP %d to remote-write %s: %s", resp.StatusCode, v, strings.TrimSpace(string(msg)))
		f.setErr(err)
	}
	return resp.StatusCode, resp.Header, nil
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
		Protocol:              f.up.Protocol,
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
	st.SendingV2, st.SendingV1 = f.sending()
	for _, c := range f.cursors {
		cs := f.log.Stats(c)
		st.QueueBytes = max(st.QueueBytes, cs.Bytes)
		st.QueueEntries += cs.Records
		st.QueueSamples += cs.Samples
	}
	return st
}
