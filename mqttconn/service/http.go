package service

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/go-chi/chi/v5"
)

// Refuse answers a request that this package's handlers turn away; each
// service passes its own problem writer, so that every answer of a
// service has one shape.
type Refuse func(w http.ResponseWriter, r *http.Request, status int, detail string)

// RequireToken refuses, with 401 and a WWW-Authenticate challenge of realm,
// the requests without "Authorization: Bearer <token>". Both sides are
// hashed before the constant-time comparison so that neither the content
// nor the length of the token leaks through timing. The token is taken
// from the header only: a token in the URL (RFC 6750's access_token) would
// end up in proxy logs and browser history.
func RequireToken(token, realm string, refuse Refuse) func(http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			scheme, got, found := strings.Cut(r.Header.Get("Authorization"), " ")
			if !found || !strings.EqualFold(scheme, "Bearer") {
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
				refuse(w, r, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer <API_TOKEN>")
				return
			}
			sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
			if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`", error="invalid_token"`)
				refuse(w, r, http.StatusUnauthorized, "invalid bearer token")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// methods are those an Allow header may name.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// Unrouted sets the answers of a router for a path it does not know (404)
// and for a method a known path does not take (405). A 405 names the
// methods the path does take in Allow (RFC 9110 section 15.5.6), which
// chi leaves to a custom handler.
func Unrouted(r chi.Router, refuse Refuse) {
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		refuse(w, req, http.StatusNotFound, "no route for "+req.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		var allow []string
		for _, m := range methods {
			if r.Match(chi.NewRouteContext(), m, req.URL.Path) {
				allow = append(allow, m)
			}
		}
		list := strings.Join(allow, ", ")
		w.Header().Set("Allow", list)
		refuse(w, req, http.StatusMethodNotAllowed, req.Method+" is not allowed on "+req.URL.Path+" (allowed: "+list+")")
	})
}

// Problem is an RFC 9457 problem details object: the body of every
// refusal of both services. Type is always about:blank, so Title is the
// status phrase.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Instance string `json:"instance,omitempty"`
}

// NewProblem is the problem of a refusal of r with status.
func NewProblem(r *http.Request, status int, detail string) Problem {
	return Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Instance: r.URL.Path}
}

// Recover answers a handler's panic with a 500 through refuse, instead of
// a dropped connection or a body that is not problem details, and logs it.
// http.ErrAbortHandler, the way a handler ends a response on purpose, is
// let through.
func Recover(log *slog.Logger, refuse Refuse) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				log.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				refuse(w, r, http.StatusInternalServerError, "internal error; the service's log has the cause")
			}()
			next.ServeHTTP(w, r)
		})
	}
}
