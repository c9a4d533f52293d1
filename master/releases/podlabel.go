package releases

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/master"
)

// LabelMaster marks the master's pod; the agent chart's Service selects it,
// so the relay and the API behind that Service are always the master's.
const LabelMaster = workload.LabelPrefix + "master"

// PodLabeler sets or removes one label of a pod; *helm.Client is one.
type PodLabeler interface {
	LabelPod(ctx context.Context, namespace, pod, key, value string) error
}

// MasterLabel is the duty that labels this agent's own pod while it is
// master: set at the start of the term (fenced like every master write),
// removed when the term ends.
type MasterLabel struct {
	drv       PodLabeler
	namespace string
	pod       string
	log       *slog.Logger
	// Retry spaces the attempts to set the label while the API refuses;
	// default 1s, doubling up to 30s.
	Retry time.Duration
}

// NewMasterLabel returns the duty for pod in namespace.
func NewMasterLabel(drv PodLabeler, namespace, pod string, log *slog.Logger) *MasterLabel {
	return &MasterLabel{drv: drv, namespace: namespace, pod: pod, log: log, Retry: time.Second}
}

// Run sets the label, retrying until it is set or the term ends, then
// holds it until the term ends and removes it (within 5 s, on a context
// of its own: the term's is over). A refused fence ends the term.
func (m *MasterLabel) Run(ctx context.Context, lead etcd.Leader) error {
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := m.drv.LabelPod(rctx, m.namespace, m.pod, LabelMaster, ""); err != nil {
			m.log.Warn("remove the master label from this pod", "pod", m.pod, "err", err)
		} else {
			m.log.Info("master label removed from this pod", "pod", m.pod)
		}
	}()
	wait := m.Retry
	for {
		_, err := lead.Revision(ctx) // the fence, right before the write
		if err == nil {
			err = m.drv.LabelPod(ctx, m.namespace, m.pod, LabelMaster, "true")
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, etcd.ErrFenced):
			return err
		case err == nil:
			m.log.Info("master label set on this pod: the agent Service routes here", "pod", m.pod, "namespace", m.namespace)
			<-ctx.Done()
			return nil
		}
		m.log.Warn("label this pod as master, retrying", "pod", m.pod, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// Clear removes the label, for an agent that starts: an earlier process
// that crashed while master may have left it.
func (m *MasterLabel) Clear(ctx context.Context) error {
	return m.drv.LabelPod(ctx, m.namespace, m.pod, LabelMaster, "")
}

var _ master.Duty = (*MasterLabel)(nil)
