// Command relayload measures the metric relay. It has three modes:
//
//	relayload -url http://127.0.0.1:P/api/v1/write [-proto 1.0|2.0 -series 1000 -labels 9 -samples 2000 -concurrency 4 -duration 10s]
//	    sends remote-write (2.0 as Prometheus 3 sends it: metadata with
//	    every series) as fast as the target acknowledges and prints
//	    acknowledged samples/s;
//	relayload -sink 127.0.0.1:P
//	    is a counting remote-write receiver of both versions: it decodes
//	    every request, counts its samples and answers 204 (with the 2.0
//	    Written headers to 2.0); GET /count says how many so far;
//	relayload -serve 127.0.0.1:P -queue-dir DIR -upstream URL [-upstream-protocol auto|1.0|2.0]
//	    runs just the relay (relay.New, Run, ServeHTTP), for benchmarks.
//
// Everything it opens is on the addresses given; it never contacts anything
// else.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentproj/agent/master/relay"
	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
	"google.golang.org/protobuf/encoding/protowire"
)

func main() {
	var (
		url         = flag.String("url", "", "load mode: remote-write URL to send to")
		sink        = flag.String("sink", "", "sink mode: address to receive remote-write on")
		serve       = flag.String("serve", "", "serve mode: address to run the relay on")
		queueDir    = flag.String("queue-dir", "", "serve mode: queue directory")
		upstream    = flag.String("upstream", "", "serve mode: upstream remote-write URL")
		upProto     = flag.String("upstream-protocol", stackconfig.ProtocolAuto, "serve mode: the upstream's protocol (auto, 1.0, 2.0)")
		proto       = flag.String("proto", "1.0", "load mode: remote-write version to send (1.0 or 2.0)")
		shards      = flag.Int("shards", stackconfig.DefaultRelay.Concurrency, "serve mode: relay concurrency (shards)")
		external    = flag.String("external-labels", "cluster=bench", "serve mode: external labels, k=v,k=v")
		series      = flag.Int("series", 1000, "load mode: distinct series")
		labels      = flag.Int("labels", 9, "load mode: labels per series, __name__ included")
		samples     = flag.Int("samples", 2000, "load mode: samples per request (one per time series entry)")
		concurrency = flag.Int("concurrency", 4, "load mode: requests in flight")
		duration    = flag.Duration("duration", 10*time.Second, "load mode: how long to send")
		validate    = flag.Bool("validate", false, "sink mode: validate every request fully (costs about as much CPU as the relay)")
		cpuprofile  = flag.String("cpuprofile", "", "write a CPU profile of this process to the file")
	)
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "relayload:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var err error
	switch {
	case *url != "":
		err = load(ctx, *url, *proto, *series, *labels, *samples, *concurrency, *duration)
	case *sink != "":
		err = runSink(ctx, *sink, *validate)
	case *serve != "":
		err = runRelay(ctx, logger, *serve, *queueDir, stackconfig.RelayUpstream{URL: *upstream, Protocol: *upProto}, *shards, *external)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "relayload:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// requests pre-encodes n compressed requests of version v so the
// generator spends its time sending, not encoding. Both versions carry the
// same series and samples; 2.0 ones also carry metadata per series, as
// Prometheus 3 sends it.
func requests(v string, n, series, labels, samples int) [][]byte {
	out := make([][]byte, n)
	next := 0
	for i := range out {
		var wr remotewrite.WriteRequest
		var wr2 remotewrite.RequestV2
		for range samples {
			s := next % series
			next++
			name := fmt.Sprintf("relayload_metric_%d", s%50)
			ls := []remotewrite.Label{{Name: "__name__", Value: name}}
			for l := 1; l < labels; l++ {
				ls = append(ls, remotewrite.Label{Name: fmt.Sprintf("label_%02d", l), Value: fmt.Sprintf("value-%d-%06d", l, s)})
			}
			smp := []remotewrite.Sample{{Value: float64(next), Timestamp: 1_700_000_000_000 + int64(next)}}
			wr.Timeseries = append(wr.Timeseries, remotewrite.TimeSeries{Labels: ls, Samples: smp})
			wr2.Timeseries = append(wr2.Timeseries, remotewrite.TimeSeriesV2{Labels: ls, Samples: smp,
				Metadata: remotewrite.MetadataV2{Type: 2, Help: "A gauge of the relay load generator, " + name + "."}})
		}
		if v == "2.0" {
			out[i] = remotewrite.Encode(nil, wr2.Append(nil))
		} else {
			out[i] = remotewrite.Encode(nil, wr.Append(nil))
		}
	}
	return out
}

func load(ctx context.Context, url, proto string, series, labels, samples, concurrency int, duration time.Duration) error {
	if proto != "1.0" && proto != "2.0" {
		return fmt.Errorf("-proto: must be 1.0 or 2.0, got %q", proto)
	}
	reqs := requests(proto, 64, series, labels, samples)
	fmt.Fprintf(os.Stderr, "relayload: remote-write %s, %d series x %d labels, %d samples/request (%d bytes compressed), concurrency %d, %s\n",
		proto, series, labels, samples, len(reqs[0]), concurrency, duration)
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}
	var acked, failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i += concurrency {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(reqs[i%len(reqs)]))
				req.Header.Set("Content-Encoding", "snappy")
				if proto == "2.0" {
					req.Header.Set("Content-Type", remotewrite.ContentTypeV2)
					req.Header.Set(remotewrite.VersionHeader, remotewrite.VersionV2)
				} else {
					req.Header.Set("Content-Type", remotewrite.ContentType)
					req.Header.Set(remotewrite.VersionHeader, remotewrite.VersionV1)
				}
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					acked.Add(int64(samples))
				} else {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, msg))
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	fmt.Printf("acked_samples=%d seconds=%.2f acked_samples_per_second=%.0f failed_requests=%d\n", acked.Load(), secs, float64(acked.Load())/secs, failed.Load())
	if e := firstErr.Load(); e != nil {
		fmt.Fprintln(os.Stderr, "relayload: first failure:", e)
	}
	return nil
}

func runSink(ctx context.Context, addr string, validate bool) error {
	rw, err := remotewrite.NewRewriter(nil, 1, remotewrite.NamesUTF8)
	if err != nil {
		return err
	}
	var total, reqs atomic.Int64
	pool := sync.Pool{New: func() any { return new([2][]byte) }}
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/count" {
			fmt.Fprintln(w, total.Load()) // for the benchmark script: samples received so far
			return
		}
		b := pool.Get().(*[2][]byte)
		defer pool.Put(b)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		dec, err := remotewrite.Decode(b[1], body, 64<<20)
		b[1] = dec[:0]
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		v2 := strings.Contains(r.Header.Get("Content-Type"), "proto="+remotewrite.ProtoV2)
		var n int
		switch {
		case validate && v2:
			var c remotewrite.Counts
			if c, err = rw.RewriteV2(dec, nil); err == nil {
				n = c.Samples + c.Histograms
			}
		case validate:
			var c remotewrite.Counts
			if c, err = rw.Rewrite(dec, nil); err == nil {
				n = c.Samples + c.Histograms
			}
		default:
			n, err = countSamples(dec, v2)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		total.Add(int64(n))
		reqs.Add(1)
		if v2 {
			w.Header().Set(remotewrite.SamplesWrittenHeader, strconv.Itoa(n))
			w.Header().Set(remotewrite.HistogramsWrittenHeader, "0")
			w.Header().Set(remotewrite.ExemplarsWrittenHeader, "0")
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		last := int64(0)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n := total.Load()
				fmt.Fprintf(os.Stderr, "sink: %d samples (%.0f/s)\n", n, float64(n-last)/5)
				last = n
			}
		}
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	fmt.Printf("sink_samples=%d sink_requests=%d\n", total.Load(), reqs.Load())
	return nil
}

func runRelay(ctx context.Context, logger *slog.Logger, addr, dir string, upstream stackconfig.RelayUpstream, shards int, external string) error {
	cfg := stackconfig.DefaultRelay
	cfg.Upstream = []stackconfig.RelayUpstream{upstream}
	cfg.QueueDir = dir
	cfg.Concurrency = shards
	cfg.ExternalLabels = map[string]string{}
	for _, kv := range strings.Split(external, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			cfg.ExternalLabels[k] = v
		}
	}
	r, err := relay.New(cfg, logger, nil)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: addr, Handler: r, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	st := r.Stats()
	fmt.Printf("relay_forwarded=%d relay_queue_bytes=%d\n", st.Upstreams[0].SamplesForwarded, st.QueueBytes)
	return nil
}

// countSamples counts the samples of a decoded WriteRequest (or 2.0
// Request), checking only the framing, so the sink stays cheap next to the
// load generator.
func countSamples(b []byte, v2 bool) (int, error) {
	seriesField, samplesField, histField := protowire.Number(1), protowire.Number(2), protowire.Number(4)
	if v2 {
		seriesField, samplesField, histField = 5, 2, 3
	}
	n := 0
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return 0, protowire.ParseError(k)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[k:])
		if m < 0 {
			return 0, protowire.ParseError(m)
		}
		if num == seriesField && typ == protowire.BytesType {
			ts, _ := protowire.ConsumeBytes(b[k:])
			for len(ts) > 0 {
				num, typ, k := protowire.ConsumeTag(ts)
				if k < 0 {
					return 0, protowire.ParseError(k)
				}
				m := protowire.ConsumeFieldValue(num, typ, ts[k:])
				if m < 0 {
					return 0, protowire.ParseError(m)
				}
				if num == samplesField || num == histField {
					n++
				}
				ts = ts[k+m:]
			}
		}
		b = b[k+m:]
	}
	return n, nil
}
