package relay

import (
	"bytes"
	"context"
	"net/http"

	"github.com/agentproj/agent/master/relay/remotewrite"
)

// Append makes wr durable in the queue exactly as if it had arrived as a
// remote-write 1.0 request on ServeHTTP: the request is encoded in memory
// and goes through the same ingest (validation, external labels, sharding,
// group commit, fdatasync). It returns nil only once the data is durable.
// An error carries the status ServeHTTP would have answered
// (StatusCode(): 400, 413, 503, 500). It is how the push API and plugins
// put their samples in the queue without an HTTP round trip.
func (r *Relay) Append(ctx context.Context, wr *remotewrite.WriteRequest) error {
	body := remotewrite.Encode(nil, wr.Append(nil))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/api/v1/write", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", remotewrite.ContentType)
	req.Header.Set("Content-Encoding", remotewrite.ContentEncoding)
	if err := r.ingest(req); err != nil {
		return err
	}
	return nil
}

// StatusCode is the HTTP status of the error, for callers of Append.
func (e *httpError) StatusCode() int { return e.code }
