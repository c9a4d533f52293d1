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
// previous one started again. The plugins' counters start again from zero.
type Service struct {
	*reload.Swap[Config, *Manager]
}

// NewService builds the first manager from cfg (see New).
func NewService(cfg Config, app Appender, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	release := func(m *Manager) {
		if reg != nil {
			m.m.unregister(reg)
		}
	}
	s, err := reload.New(cfg, func(c Config) (*Manager, error) { return New(c, app, log, reg) }, release, log)
	if err != nil {
		return nil, err
	}
	return &Service{s}, nil
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
