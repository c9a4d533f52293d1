package relay

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/slave/reload"
	"github.com/agentproj/agent/stackconfig"
)

// Service runs a Relay and replaces it with one built from a reloaded
// [relay] (SIGHUP; see reload.Swap): the running relay stops as at a
// shutdown (everything it acknowledged is in the queue on disk; a request
// under way upstream is sent again), and the new one opens the same
// queue, so what was queued is delivered by the new configuration's
// upstreams and shards exactly as after a restart (an upstream that went
// loses what it had not received, a new one starts with new data, a
// change of concurrency keeps every series in order). While the two
// change places, writes are answered 503, which senders retry. A config
// the relay cannot open is logged and the previous one opened again. The
// relay's counters go on from where they were (a removed upstream's
// series are deleted).
type Service struct {
	*reload.Swap[stackconfig.Relay, *Relay]
}

// Interface guards: the Service stands wherever a Relay is used.
var (
	_ http.Handler = (*Service)(nil)
	_ interface {
		Append(context.Context, *remotewrite.WriteRequest) error
	} = (*Service)(nil)
)

// NewService builds the first relay from cfg (see New).
// The relay's counters are registered on reg once, for the Service's
// lifetime.
func NewService(cfg stackconfig.Relay, logger *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	m := newMetrics()
	if reg != nil {
		if err := registerAll(reg, m.collectors()); err != nil {
			return nil, err
		}
	}
	s, err := reload.New(cfg, func(c stackconfig.Relay) (*Relay, error) { return build(c, logger, reg, m, false) }, (*Relay).unregister, logger)
	if err != nil {
		if reg != nil {
			for _, c := range m.collectors() {
				reg.Unregister(c)
			}
		}
		return nil, err
	}
	return &Service{s}, nil
}

// ServeHTTP is the current relay's.
func (s *Service) ServeHTTP(w http.ResponseWriter, req *http.Request) { s.Current().ServeHTTP(w, req) }

// Append is the current relay's.
func (s *Service) Append(ctx context.Context, wr *remotewrite.WriteRequest) error {
	return s.Current().Append(ctx, wr)
}

// Stats are the current relay's.
func (s *Service) Stats() Stats { return s.Current().Stats() }
