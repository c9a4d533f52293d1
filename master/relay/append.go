package relay

import (
	"context"

	"github.com/agentproj/agent/master/relay/remotewrite"
)

// Append makes wr durable in the queue exactly as if it had arrived as a
// remote-write 1.0 request on ServeHTTP: it goes through Write, the same
// validation, external labels, sharding, group commit and fdatasync. It
// returns nil only once the data is durable. An error carries the status
// ServeHTTP would have answered (StatusCode(): 400, 413, 503, 500). It is
// how the push API and plugins put their samples in the queue without an
// HTTP round trip.
func (r *Relay) Append(ctx context.Context, wr *remotewrite.WriteRequest) error {
	_, err := r.Write(ctx, remotewrite.V1, wr.Append(nil))
	return err
}

// StatusCode is the HTTP status of the error, for callers of Append.
func (e *httpError) StatusCode() int { return e.code }
