package slave

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// API is the node HTTP API. Other components add their routes with Handle
// before Run.
type API struct {
	mux *http.ServeMux
	srv *http.Server
	ln  net.Listener
	log *slog.Logger

	handshakes prometheus.Counter // failed TLS handshakes
}

// NewAPI listens on addr at once, so that /-/healthy answers while the agent
// is still joining, and installs the health, readiness and metrics
// endpoints; HandleSnapshot adds the cluster's read endpoints. With a
// non-nil tlsConf (stackconfig.API.ServerTLS) it serves HTTPS only.
func NewAPI(addr string, tlsConf *tls.Config, node *Node, reg *prometheus.Registry, log *slog.Logger) (*API, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, listenError(addr, err)
	}
	a := &API{mux: http.NewServeMux(), ln: ln, log: log}
	a.handshakes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "agent_api_tls_handshake_errors_total",
		Help: "TLS handshakes of the API that failed (a client that does not trust the certificate, plain HTTP, a scanner); the first is logged.",
	})
	reg.MustRegister(a.handshakes)
	if tlsConf != nil && tlsConf.GetCertificate != nil {
		// Alert on it: a renewal that did not reach the files shows here.
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "agent_api_tls_certificate_expiry_timestamp_seconds",
			Help: "When the certificate the API serves expires (its NotAfter), as the files hold it now.",
		}, func() float64 {
			cert, err := tlsConf.GetCertificate(&tls.ClientHelloInfo{})
			if err != nil || cert == nil || cert.Leaf == nil {
				return math.NaN()
			}
			return float64(cert.Leaf.NotAfter.Unix())
		}))
	}
	a.srv = &http.Server{
		Handler: a, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog:  stdlog.New(&serverErrors{log: log, handshakes: a.handshakes}, "", 0),
		TLSConfig: tlsConf,
	}
	a.mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("Healthy.\n"))
	})
	a.mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !node.Ready() {
			WriteError(w, http.StatusServiceUnavailable, "not joined: no live etcd session")
			return
		}
		_, _ = w.Write([]byte("Ready.\n"))
	})
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return a, nil
}

// serverErrors takes what net/http logs. A failed TLS handshake is network
// input the agent cannot help (anyone may connect): it is counted, and only
// the first is logged, so that a scanner or a client without the CA does
// not fill the log. Everything else is logged as a warning.
type serverErrors struct {
	log        *slog.Logger
	handshakes prometheus.Counter
	logged     atomic.Bool
}

func (e *serverErrors) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if !strings.HasPrefix(msg, "http: TLS handshake error") {
		e.log.Warn(msg)
		return len(p), nil
	}
	e.handshakes.Inc()
	if !e.logged.Swap(true) {
		e.log.Warn(msg + " (further ones are counted in agent_api_tls_handshake_errors_total, not logged)")
	}
	return len(p), nil
}

// listenError names the setting to change and why it failed, "listen:
// cannot listen on 127.0.0.1:9464: address already in use", rather than
// net's "listen tcp 127.0.0.1:9464: bind: address already in use". The
// cause stays wrapped (errors.Is(err, syscall.EADDRINUSE)).
func listenError(addr string, err error) error {
	var sys *os.SyscallError
	var op *net.OpError
	switch {
	case errors.As(err, &sys):
		err = sys.Err
	case errors.As(err, &op):
		err = op.Err
	}
	return fmt.Errorf("listen: cannot listen on %s: %w", addr, err)
}

// ServeHTTP routes r. What no route matches (404) or no route allows
// (405, with Allow) is answered as every API error is, JSON, instead of
// ServeMux's plain text.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := a.mux.Handler(r); pattern == "" {
		w = &jsonErrors{ResponseWriter: w, r: r}
	}
	a.mux.ServeHTTP(w, r)
}

// jsonErrors turns ServeMux's own error answers into WriteError's; other
// answers (its redirects) pass through.
type jsonErrors struct {
	http.ResponseWriter
	r       *http.Request
	written bool
}

func (j *jsonErrors) WriteHeader(code int) {
	if code < 400 {
		j.ResponseWriter.WriteHeader(code)
		return
	}
	j.written = true
	msg := fmt.Sprintf("no such endpoint: %s %s", j.r.Method, j.r.URL.Path)
	if code == http.StatusMethodNotAllowed {
		msg = fmt.Sprintf("method %s not allowed on %s; allowed: %s", j.r.Method, j.r.URL.Path, j.Header().Get("Allow"))
	}
	j.Header().Del("X-Content-Type-Options")
	WriteError(j.ResponseWriter, code, msg)
}

func (j *jsonErrors) Write(b []byte) (int, error) {
	if j.written {
		return len(b), nil // ServeMux's plain-text body, replaced
	}
	return j.ResponseWriter.Write(b)
}

// Addr is the address the API listens on.
func (a *API) Addr() string { return a.ln.Addr().String() }

// Handle adds a route; pattern is a net/http ServeMux pattern such as
// "GET /sd/http".
func (a *API) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// Run serves until ctx ends, then shuts down gracefully.
func (a *API) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		if a.srv.TLSConfig != nil {
			errc <- a.srv.ServeTLS(a.ln, "", "") // the certificate comes from TLSConfig
		} else {
			errc <- a.srv.Serve(a.ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve the HTTP API on %s: %w", a.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := a.srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// WriteJSON writes v as JSON with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes {"error": msg} with status code: every API error has
// this shape.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, map[string]string{"error": msg})
}
