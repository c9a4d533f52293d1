package etcd

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestWarnIfExposed(t *testing.T) {
	for _, tc := range []struct {
		client, peer string
		cert         string
		warn         bool
	}{
		{"http://127.0.0.1:2379", "", "", false},
		{"http://localhost:2379", "http://[::1]:2380", "", false},
		{"http://10.0.0.1:2379", "", "", true},
		{"http://127.0.0.1:2379", "http://10.0.0.1:2380", "", true},
		{"http://0.0.0.0:2379", "", "", true},
		{"https://10.0.0.1:2379", "", "member.pem", false},
	} {
		var out bytes.Buffer
		WarnIfExposed(slog.New(slog.NewTextHandler(&out, nil)), EmbedConfig{ClientURL: tc.client, PeerURL: tc.peer, CertFile: tc.cert})
		if got := strings.Contains(out.String(), "beyond loopback without TLS"); got != tc.warn {
			t.Errorf("client %s peer %q: warned %v, want %v (%s)", tc.client, tc.peer, got, tc.warn, out.String())
		}
	}
}
