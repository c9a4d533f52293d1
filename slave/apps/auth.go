package apps

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/agentproj/agent/slave"
)

// RequireToken lets a request through to next only if it carries
// "Authorization: Bearer <token>". Anything else is answered 401 with
// WWW-Authenticate: Bearer and a JSON error, and next is not called. The
// comparison takes the same time whatever the token (SHA-256 of both sides,
// compared in constant time). An empty token refuses every request: an
// unset token must never mean "open".
func RequireToken(token string, next http.Handler) http.Handler {
	return requireToken(token, next, nil)
}

// requireToken is RequireToken that calls refused, when not nil, for every
// request it answers 401.
func requireToken(token string, next http.Handler, refused func()) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearer(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !ok || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="agent"`)
			msg := "a valid bearer token is required (Authorization: Bearer <token>)"
			if !ok {
				msg = "missing bearer token: send Authorization: Bearer <token>"
			}
			if refused != nil {
				refused()
			}
			slave.WriteError(w, http.StatusUnauthorized, msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer returns the token of an "Authorization: Bearer <token>" header;
// the scheme is case-insensitive (RFC 7235).
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
