package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/spf13/cobra"
)

// The read commands (getJSON) and the apps and plugins commands
// (appsClient.do) turn an answer of the agent API into the same errors,
// named by the URL, and by the method too for the commands that write.
func TestAPIAnswerErrors(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/message", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error": "app \"shop-web\" not found"}`))
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "upstream down", http.StatusBadGateway)
	})
	mux.HandleFunc("/garbled", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"nodes": [`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	cmd := &cobra.Command{}
	cmd.SetContext(context.Background())

	for _, tc := range []struct{ path, get, do string }{
		{"/message", srv.URL + `/message: app "shop-web" not found (HTTP 404)`, "GET " + srv.URL + `/message: app "shop-web" not found (HTTP 404)`},
		{"/plain", srv.URL + "/plain: HTTP 502", "GET " + srv.URL + "/plain: HTTP 502"},
		{"/garbled", "decode answer of " + srv.URL + "/garbled: unexpected end of JSON input", "decode answer of GET " + srv.URL + "/garbled: unexpected end of JSON input"},
	} {
		var v map[string]any
		src := &source{api: apiClient{url: srv.URL}, cmd: cmd}
		if err := src.getJSON(tc.path, &v); err == nil || err.Error() != tc.get {
			t.Errorf("getJSON %s: %v\nwant %s", tc.path, err, tc.get)
		}
		c := &appsClient{api: apiClient{url: srv.URL}, output: "table"}
		if _, err := c.do(cmd, http.MethodGet, tc.path, nil, &v); err == nil || err.Error() != tc.do {
			t.Errorf("do %s: %v\nwant %s", tc.path, err, tc.do)
		}
	}
}
