package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/agentproj/agent/stackconfig"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ClientConfig says how to reach etcd.
type ClientConfig struct {
	Endpoints          []string
	DialTimeout        time.Duration
	Username           string
	PasswordFile       string
	CAFile             string
	CertFile           string
	KeyFile            string
	InsecureSkipVerify bool
}

// NewClient returns a client for cfg. It does not wait for a connection:
// callers retry their first request, so an etcd that is down at start is a
// logged retry, not a crash.
func NewClient(cfg ClientConfig) (*clientv3.Client, error) {
	cc := clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
		DialOptions:          []grpc.DialOption{grpc.WithConnectParams(reconnect)},
	}
	if cfg.PasswordFile != "" {
		pw, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("etcd password: %w", err)
		}
		cc.Username, cc.Password = cfg.Username, strings.TrimSpace(string(pw))
	}
	t, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}
	cc.TLS = t
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return cli, nil
}

// reconnect is how the client dials etcd again after losing it: gRPC's
// default backoff grows to two minutes, so after a long outage an agent
// would come back long after etcd, and its targets would leave Prometheus
// although it lives. Capped so that a delay, jitter included, stays within
// RejoinMax, the time RemovalHold gives the agents to re-register.
var reconnect = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  time.Second,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   RejoinMax * 5 / 6, // +20% jitter: RejoinMax
	},
	MinConnectTimeout: 20 * time.Second,
}

// TLSConfig is the client's TLS config; nil when it sets no TLS option.
func (cfg ClientConfig) TLSConfig() (*tls.Config, error) {
	if cfg.CAFile == "" && cfg.CertFile == "" && !cfg.InsecureSkipVerify {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // opt-in, documented as testing only
	if cfg.CAFile != "" {
		pool, err := stackconfig.CAPool(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		t.RootCAs = pool
	}
	if cfg.CertFile != "" {
		// Read again when renewed, so that the new certificate is shown
		// from the next connection on without a restart.
		pair, err := stackconfig.LoadKeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		t.GetClientCertificate = pair.GetClientCertificate
	}
	return t, nil
}

// Explain turns the error of a request that etcd did not answer (the
// client only reports "context deadline exceeded": it waits for a
// connection until the deadline) into one a person can act on: it dials
// every endpoint and names each with the reason it cannot be reached,
// "connection refused" or "no answer within 2s (timeout)". When some
// endpoint does accept connections, the trouble is past the network (TLS,
// not an etcd, no quorum), and the error says so, naming the endpoints.
// An https:// endpoint is also asked for a TLS handshake with tlsConf (the
// client's; nil: no client certificate, the system's CAs), and a refusal
// is named ("it asks for a client certificate"). Errors etcd answered with
// (auth, permissions) and nil are returned as they are; so is err when ctx
// is done (a shutdown, not an outage).
func Explain(ctx context.Context, endpoints []string, tlsConf *tls.Config, timeout time.Duration, err error) error {
	if err == nil || ctx.Err() != nil || !unanswered(err) {
		return err
	}
	reasons := make([]string, len(endpoints)) // "" once an endpoint accepts
	done := make(chan struct{}, len(endpoints))
	for i, ep := range endpoints {
		go func() { reasons[i] = probe(ctx, ep, tlsConf, timeout); done <- struct{}{} }()
	}
	for range endpoints {
		<-done
	}
	var down []string
	for i, r := range reasons {
		if r == "" {
			return fmt.Errorf("etcd at %s accepts connections but did not answer: %w", strings.Join(endpoints, ", "), err)
		}
		down = append(down, endpoints[i]+": "+r)
	}
	switch len(down) {
	case 0:
		return err
	case 1:
		return fmt.Errorf("etcd at %s is unreachable: %s", endpoints[0], reasons[0])
	}
	return fmt.Errorf("etcd is unreachable: %s", strings.Join(down, "; "))
}

// unanswered reports whether err means that no etcd server answered.
func unanswered(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		}
	}
	return false
}

// probe dials endpoint's host:port and returns "" when it accepts a
// connection (and, for https://, a TLS session), else why not.
func probe(ctx context.Context, endpoint string, tlsConf *tls.Config, timeout time.Duration) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return "not a URL with a host"
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return dialReason(err, timeout)
	}
	defer conn.Close()
	if u.Scheme != "https" {
		return ""
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if tlsConf != nil {
		conf = tlsConf.Clone()
	}
	if conf.ServerName == "" {
		conf.ServerName = u.Hostname()
	}
	conf.NextProtos = []string{"h2"}
	tc := tls.Client(conn, conf)
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		if errors.Is(err, io.EOF) { // hung up on a ClientHello
			return noTLS
		}
		return tlsReason(err)
	}
	// With TLS 1.3 the server judges the client's certificate after the
	// handshake: its refusal is what the first read gets.
	_ = tc.SetReadDeadline(time.Now().Add(min(timeout, 500*time.Millisecond)))
	var netErr net.Error
	if _, err := tc.Read(make([]byte, 1)); err != nil && (!errors.As(err, &netErr) || !netErr.Timeout()) {
		return tlsReason(err)
	}
	return ""
}

const noTLS = "TLS: it does not answer a TLS handshake (an http:// endpoint?)"

// tlsReason says in a few words why etcd refused a TLS session, and which
// setting is about it.
func tlsReason(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	msg := err.Error()
	switch {
	case errors.As(err, &unknownCA):
		return "TLS: its certificate is not signed by a CA this client trusts (etcd.ca_file)"
	case errors.As(err, &hostErr):
		return "TLS: its certificate is not for this address: " + hostErr.Error()
	case errors.As(err, &recErr):
		return noTLS
	case strings.Contains(msg, "certificate required"):
		return "TLS: it asks for a client certificate (etcd.cert_file and etcd.key_file)"
	case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "unknown certificate authority"):
		return "TLS: it refused this client's certificate (not signed by a CA it trusts?)"
	}
	return "TLS: " + msg
}

// dialReason says in a few words why a TCP dial failed.
func dialReason(err error, timeout time.Duration) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (nothing listens there)"
	case errors.As(err, &dnsErr):
		return "host " + dnsErr.Name + " not found"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to host"
	case errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("no answer within %s (timeout)", timeout)
	}
	return err.Error()
}
