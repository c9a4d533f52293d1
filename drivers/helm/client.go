package helm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/drivers/workload"
)

// Name is the driver's name, as states and stack.driver show it.
const Name = "helm"

// ErrNotManaged is returned for a release, namespace or pod that exists
// without the agent's managed label: the driver never changes or removes
// it.
var ErrNotManaged = errors.New("helm: exists but is not managed by the agent")

// ErrNoAPI is New's error outside a pod without a kubeconfig.
var ErrNoAPI = errors.New("helm driver: no Kubernetes API to install into: the agent is not in a pod " +
	"(KUBERNETES_SERVICE_HOST is not set or no service account token is mounted) and no kubeconfig is given " +
	"(set stack.helm.kubeconfig, AGENT_STACK_HELM_KUBECONFIG or KUBECONFIG)")

// Config says how to reach the Kubernetes API and how Helm actions run.
type Config struct {
	// Kubeconfig is a kubeconfig file; empty: $KUBECONFIG, else the pod's
	// service account.
	Kubeconfig string
	// Namespace is the default namespace of objects a chart does not place.
	Namespace string
	// Timeout bounds one Helm action; default 5m.
	Timeout time.Duration
	// MaxHistory is how many revisions a release keeps; default 5.
	MaxHistory int
	// ChartCache is where charts from repositories are downloaded.
	ChartCache string
	// PingTimeout bounds the API check New makes; default 10s.
	PingTimeout time.Duration
}

// Client is the helm driver: one per agent, safe for concurrent use.
type Client struct {
	cfg    Config
	getter *restGetter
	kube   kubernetes.Interface
	host   string
	log    *slog.Logger

	chartMu sync.Mutex
	charts  map[ChartRef]string // downloaded archives
}

// Option configures a Client.
type Option func(*Client)

// WithLogger sets the logger; Helm's own messages go to it at debug level.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// New returns a client of the Kubernetes API cfg names, once the API has
// answered. Outside a pod and without a kubeconfig it fails at once,
// saying so: there is no API to install into.
func New(ctx context.Context, cfg Config, opts ...Option) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.MaxHistory <= 0 {
		cfg.MaxHistory = 5
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 10 * time.Second
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	c := &Client{cfg: cfg, log: slog.New(slog.DiscardHandler), charts: map[ChartRef]string{}}
	for _, o := range opts {
		o(c)
	}
	kubeconfig := cfg.Kubeconfig
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	if kubeconfig == "" && !state.InCluster() {
		return nil, ErrNoAPI
	}
	if kubeconfig != "" {
		if _, err := os.Stat(kubeconfig); err != nil {
			return nil, fmt.Errorf("helm driver: kubeconfig %s: %w", kubeconfig, errors.Unwrap(err))
		}
	}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig},
		&clientcmd.ConfigOverrides{Context: clientcmdapi.Context{Namespace: cfg.Namespace}})
	rc, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("helm driver: kubeconfig %s: %w", kubeconfig, err)
	}
	// Charts such as kube-prometheus-stack create hundreds of objects;
	// client-go's default of 5 requests/s would make an install take
	// minutes.
	rc.QPS, rc.Burst = 50, 100
	c.getter = &restGetter{cfg: rc, loader: loader}
	c.host = rc.Host
	if c.kube, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, fmt.Errorf("helm driver: %w", err)
	}
	if err := c.Ping(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Ping asks the API for its version, within Config.PingTimeout.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PingTimeout)
	defer cancel()
	_, err := c.kube.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return fmt.Errorf("helm driver: the Kubernetes API at %s does not answer: %w", c.host, err)
	}
	return nil
}

// Name is the driver's name.
func (c *Client) Name() string { return Name }

// Host is the API server's URL.
func (c *Client) Host() string { return c.host }

// Kubernetes is the typed client of the same API, for callers that read
// objects the driver does not own (pods of a node).
func (c *Client) Kubernetes() kubernetes.Interface { return c.kube }

// action returns a Helm action configuration whose releases are stored
// (as Secrets) in namespace and whose objects default to it; "" stores
// nothing and reads releases of every namespace.
func (c *Client) action(namespace string) (*action.Configuration, error) {
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(debugHandler{c.log.Handler()}))
	if err := cfg.Init(c.getter, namespace, "secret"); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	if kc, ok := cfg.KubeClient.(*kube.Client); ok && namespace != "" {
		kc.Namespace = namespace
	}
	return cfg, nil
}

// restGetter gives Helm the API's REST config, a discovery client cached
// in memory (invalidated by Helm after it installs CRDs) and a REST mapper
// over it.
type restGetter struct {
	cfg    *rest.Config
	loader clientcmd.ClientConfig

	once   sync.Once
	disc   discovery.CachedDiscoveryInterface
	mapper meta.RESTMapper
	err    error
}

func (g *restGetter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.cfg), nil }

func (g *restGetter) init() {
	g.once.Do(func() {
		d, err := discovery.NewDiscoveryClientForConfig(rest.CopyConfig(g.cfg))
		if err != nil {
			g.err = err
			return
		}
		g.disc = memory.NewMemCacheClient(d)
		g.mapper = restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(g.disc), g.disc, nil)
	})
}

func (g *restGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	g.init()
	return g.disc, g.err
}

func (g *restGetter) ToRESTMapper() (meta.RESTMapper, error) {
	g.init()
	return g.mapper, g.err
}

func (g *restGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig { return g.loader }

// debugHandler passes Helm's messages below warning on at debug level:
// Helm reports every object it creates at info.
type debugHandler struct{ slog.Handler }

func (h debugHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		r.Level = slog.LevelDebug
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h debugHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h debugHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return debugHandler{h.Handler.WithAttrs(as)}
}

func (h debugHandler) WithGroup(name string) slog.Handler {
	return debugHandler{h.Handler.WithGroup(name)}
}

// managed reports whether labels carry the agent's managed label.
func managed(labels map[string]string) bool { return workload.IsManaged(labels) }
