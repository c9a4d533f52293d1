package plugins

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/slave/reload"
)

// Service runs a Manager and replaces it with one built from a reloaded
// [[plugins]] (SIGHUP; see reload.Swap). The running manager stops as at
// a shutdown (runs under way are killed; a disabled plugin stays disabled,
// its state is on disk), and the new one starts its schedules at once. A
// list New refuses (a user that does not exist, say) is logged and the
// previous one started again. The plugins' counters go on from where they
// were (a removed plugin's series are deleted).
type Service struct {
	*reload.Swap[Config, *Manager]
}

// NewService builds the first manager from cfg (see New).
// The metrics are registered on reg once, for the Service's lifetime.
func NewService(cfg Config, app Appender, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	s := &Service{}
	mt := newMetrics(func() *Manager { return s.Current() })
	sw, err := reload.New(cfg, func(c Config) (*Manager, error) { return build(c, app, log, mt) }, nil, log)
	if err != nil {
		return nil, err
	}
	s.Swap = sw
	if reg != nil {
		if err := mt.register(reg); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Routes are the plugin API's handlers (Manager.Routes) of the current
// manager.
func (s *Service) Routes() map[string]http.Handler {
	routes := map[string]http.Handler{}
	for pattern := range s.Current().Routes() {
		routes[pattern] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.Current().Routes()[pattern].ServeHTTP(w, r)
		})
	}
	return routes
}
