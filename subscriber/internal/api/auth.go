package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
)

// requireToken refuses requests without "Authorization: Bearer <token>",
// as the publisher does and in its words. Both sides are hashed before the
// constant-time comparison so that neither the content nor the length of
// the token leaks through timing. The token is taken from the header only:
// a token in the URL (RFC 6750's access_token) would end up in proxy logs
// and browser history, and the console sends the header itself.
func requireToken(log *slog.Logger, token string) func(http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			scheme, got, found := strings.Cut(r.Header.Get("Authorization"), " ")
			if !found || !strings.EqualFold(scheme, "Bearer") {
				w.Header().Set("WWW-Authenticate", `Bearer realm="subscriber"`)
				writeError(w, r, log, &authError{"missing bearer token: send Authorization: Bearer <API_TOKEN>"})
				return
			}
			sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
			if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="subscriber", error="invalid_token"`)
				writeError(w, r, log, &authError{"invalid bearer token"})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
