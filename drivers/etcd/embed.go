package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EmbedConfig describes the etcd member an agent runs: the first member of
// a new cluster when it is given no endpoints, or a member it added to the
// cluster it joined (see Grower).
type EmbedConfig struct {
	Name      string // member name (the node name)
	Dir       string // data directory
	ClientURL string // e.g. http://127.0.0.1:2379
	PeerURL   string // empty: the client URL's port + 1
	// InitialCluster lists every member as name=peerURL,... when this one
	// was added to a running cluster; empty: a new one-member cluster.
	// Either is ignored once Dir holds member data.
	InitialCluster string
	// CertFile and KeyFile turn TLS on for the client and peer URLs
	// (https://): the member serves this certificate, shows it to the other
	// members, and accepts only clients and members whose certificate
	// TrustedCAFile signs.
	CertFile, KeyFile, TrustedCAFile string
}

// Embedded is a running embedded etcd server.
type Embedded struct {
	etcd   *embed.Etcd
	scheme string
	level  zap.AtomicLevel
	close  sync.Once
}

// StartEmbedded starts the server and waits until it serves clients or ctx
// ends. An existing data directory is reused, so the cluster's keys survive
// an agent restart.
func StartEmbedded(ctx context.Context, cfg EmbedConfig) (*Embedded, error) {
	curl, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client URL %q: %w", cfg.ClientURL, err)
	}
	purlStr, err := cfg.peerURL()
	if err != nil {
		return nil, err
	}
	purl, err := url.Parse(purlStr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd peer URL %q: %w", purlStr, err)
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*curl}, []url.URL{*curl}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*purl}, []url.URL{*purl}
	if cfg.CertFile != "" {
		tls := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.TrustedCAFile, ClientCertAuth: true}
		ec.ClientTLSInfo, ec.PeerTLSInfo = tls, tls
	}
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	if cfg.InitialCluster != "" {
		ec.InitialCluster, ec.ClusterState = cfg.InitialCluster, embed.ClusterStateFlagExisting
	}
	// etcd logs through zap. Errors go to stderr until Close, which would
	// otherwise report every listener it shuts down as an error.
	level := zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	zc := zap.NewProductionConfig()
	zc.Level = level
	zc.Sampling = nil
	zc.DisableStacktrace = true
	lg, err := zc.Build()
	if err != nil {
		return nil, fmt.Errorf("embedded etcd logger: %w", err)
	}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	// Keep a long-running single host small: compact history hourly.
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "1h"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd (data %s, client %s, peer %s): %w", cfg.Dir, curl, purl, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Embedded{etcd: e, scheme: curl.Scheme, level: level}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s not ready after 60s", filepath.Clean(cfg.Dir))
	}
}

// HasMemberData reports whether dir holds the data of an etcd member, which
// then starts from it (StartEmbedded) whatever the endpoints configured.
func HasMemberData(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "member", "wal"))
	return err == nil
}

// peerURL is the peer URL the member advertises (cfg.PeerURL, or the
// client URL's port + 1).
func (cfg EmbedConfig) peerURL() (string, error) {
	if cfg.PeerURL != "" {
		return cfg.PeerURL, nil
	}
	curl, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return "", fmt.Errorf("embedded etcd client URL %q: %w", cfg.ClientURL, err)
	}
	return nextPortURL(curl)
}

// WarnIfExposed says that the member's URLs reach beyond loopback
// without TLS: anyone who reaches them can read and write the cluster's
// keys (the agent's config allows it only when asked to).
func WarnIfExposed(log *slog.Logger, cfg EmbedConfig) {
	peer, _ := cfg.peerURL()
	if cfg.CertFile == "" && (!isLoopback(cfg.ClientURL) || !isLoopback(peer)) {
		log.Warn("the embedded etcd listens beyond loopback without TLS (etcd.embedded_insecure): keep its ports on a private network",
			"client_url", cfg.ClientURL, "peer_url", peer)
	}
}

// Endpoints are the client URLs of the server.
func (e *Embedded) Endpoints() []string {
	var out []string
	for _, l := range e.etcd.Clients {
		out = append(out, e.scheme+"://"+l.Addr().String())
	}
	return out
}

// Err reports a fatal server error.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the server and waits for it; once stopped, it does nothing.
func (e *Embedded) Close() {
	e.close.Do(func() {
		e.level.SetLevel(zapcore.FatalLevel)
		e.etcd.Close()
	})
}

func nextPortURL(u *url.URL) (string, error) {
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", fmt.Errorf("embedded etcd client URL %q: %w", u, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("embedded etcd client URL %q: port: %w", u, err)
	}
	if p == 0 {
		return u.Scheme + "://" + net.JoinHostPort(host, "0"), nil
	}
	return u.Scheme + "://" + net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}

// RestartMember starts the member whose data is in cfg.Dir: an agent that
// became a member of the etcd it joined, started again. When the member
// cannot start and the etcd at the agent's endpoints (cc) has no member
// with its peer URL any more (removed, or replaced while the agent was
// down), its data is set aside in <dir>.removed-<unix time> and RestartMember
// returns nil, nil: the agent goes on as a client, and may become a
// member again (Grower). Any other failure is returned.
func RestartMember(ctx context.Context, cfg EmbedConfig, cc ClientConfig, log *slog.Logger) (*Embedded, error) {
	srv, startErr := StartEmbedded(ctx, cfg)
	if startErr == nil || len(cc.Endpoints) == 0 || ctx.Err() != nil {
		return srv, startErr
	}
	peer, err := cfg.peerURL()
	if err != nil {
		return nil, startErr
	}
	cli, err := NewClient(cc)
	if err != nil {
		return nil, startErr
	}
	defer cli.Close()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	list, err := cli.MemberList(lctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w (and the etcd at %s could not say whether it is still a member: %w)", startErr, strings.Join(cc.Endpoints, ","), err)
	}
	for _, m := range list.Members {
		if slices.Contains(m.PeerURLs, peer) {
			return nil, startErr
		}
	}
	aside := fmt.Sprintf("%s.removed-%d", filepath.Clean(cfg.Dir), time.Now().Unix())
	if err := os.Rename(cfg.Dir, aside); err != nil {
		return nil, fmt.Errorf("%w; it is no longer a member of the etcd, and its data could not be set aside: %w", startErr, err)
	}
	log.Warn("this agent's etcd member was removed from the etcd (or replaced while the agent was down): its data is set aside and the agent goes on as a client",
		"peer_url", peer, "data", aside, "start_err", startErr)
	return nil, nil
}
