package slave

import (
	"context"
	"net/http"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/stackconfig"
)

// TargetReader reads the cluster's targets; etcd.Registry implements it.
type TargetReader interface {
	Targets(ctx context.Context) (etcd.TargetSet, error)
}

// HandleTargets adds GET /sd/http (Prometheus http_sd, optionally ?job=)
// and GET /api/v1/targets. Any agent answers from etcd, so Prometheus may
// point at any of them.
func (a *API) HandleTargets(r TargetReader) {
	read := func(w http.ResponseWriter, req *http.Request) (etcd.TargetSet, bool) {
		ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
		defer cancel()
		set, err := r.Targets(ctx)
		if err != nil {
			WriteError(w, http.StatusServiceUnavailable, err.Error())
			return set, false
		}
		return set, true
	}
	a.mux.HandleFunc("GET /sd/http", func(w http.ResponseWriter, req *http.Request) {
		set, ok := read(w, req)
		if !ok {
			return
		}
		ts := set.Targets
		if job := req.URL.Query().Get("job"); job != "" {
			ts = ts[:0:0]
			for _, t := range set.Targets {
				if t.Job == job {
					ts = append(ts, t)
				}
			}
		}
		// Registry.Targets validated every group, so rendering cannot fail.
		b, err := stackconfig.RenderFileSD(etcd.Groups(ts))
		if err != nil {
			WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	a.mux.HandleFunc("GET /api/v1/targets", func(w http.ResponseWriter, req *http.Request) {
		if set, ok := read(w, req); ok {
			WriteJSON(w, http.StatusOK, set)
		}
	})
}
