package apps

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/agentproj/agent/slave"
	"github.com/agentproj/agent/stackconfig"
)

// Token is the bearer token the API requires. It can be replaced while
// requests are served: a request is checked against the token of the
// moment it arrives.
type Token struct {
	sum atomic.Pointer[[sha256.Size]byte]

	mu   sync.Mutex
	file string // "": not read from a file
}

// NewToken returns the token, or nil for "" (no token configured).
func NewToken(token string) *Token {
	if token == "" {
		return nil
	}
	t := &Token{}
	t.Set(token)
	return t
}

// NewTokenFile returns the token in file (stackconfig.ReadToken's rules).
// A request with another token has the file read again before it is
// refused, so that a token rotated in the file is taken at once: the
// master's Prometheus reads its credentials file at every request, and a
// batch refused with 401 is dropped, not retried. (A few microseconds per
// refused request.)
func NewTokenFile(file string) (*Token, error) {
	t := &Token{}
	if _, err := t.SetFile(file); err != nil {
		return nil, err
	}
	return t, nil
}

// SetFile reads the token from file now (and on SIGHUP) and follows that
// file from then on; changed says whether the token is another one. On
// error the token stays.
func (t *Token) SetFile(file string) (changed bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.readLocked(file)
}

func (t *Token) readLocked(file string) (changed bool, err error) {
	tok, err := stackconfig.ReadToken(file)
	if err != nil {
		return false, err
	}
	changed = !t.match(tok)
	t.Set(tok)
	t.file = file
	return changed, nil
}

// reread reads the file again and reports whether the token changed.
func (t *Token) reread() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.file == "" {
		return false
	}
	changed, err := t.readLocked(t.file)
	return err == nil && changed
}

// Set makes token the one required from now on. An empty token refuses
// every request.
func (t *Token) Set(token string) {
	if token == "" {
		t.sum.Store(nil)
		return
	}
	sum := sha256.Sum256([]byte(token))
	t.sum.Store(&sum)
}

// Matches reports whether got is the token, in constant time (SHA-256 of
// both sides) whatever the token; see NewTokenFile for a token that does
// not match.
func (t *Token) Matches(got string) bool {
	if t == nil {
		return false
	}
	return t.match(got) || t.reread() && t.match(got)
}

func (t *Token) match(got string) bool {
	want := t.sum.Load()
	sum := sha256.Sum256([]byte(got))
	return want != nil && subtle.ConstantTimeCompare(sum[:], want[:]) == 1
}

// RequireToken lets a request through to next only if it carries
// "Authorization: Bearer <token>" with tok's current token. Anything else
// is answered 401 with WWW-Authenticate: Bearer and a JSON error, and next
// is not called. A nil or empty token refuses every request: an unset
// token must never mean "open".
func RequireToken(tok *Token, next http.Handler) http.Handler {
	return requireToken(tok, next, nil)
}

// requireToken is RequireToken that calls refused, when not nil, for every
// request it answers 401.
func requireToken(tok *Token, next http.Handler, refused func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearer(r.Header.Get("Authorization"))
		if !ok || !tok.Matches(got) { // no bearer: no reason to read the token file again
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
