// Package console serves the subscriber's web console: one page, its script
// and style sheet, embedded in the binary so that it works offline, and the
// small configuration the page reads at start.
package console

import (
	"bytes"
	"crypto/sha256"
	_ "embed" // the page and its files
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// The files are embedded one by one, so that a missing one fails the build.
var (
	//go:embed static/index.html
	indexHTML []byte
	//go:embed static/console.js
	consoleJS []byte
	//go:embed static/console.css
	consoleCSS []byte
)

// asset is one file, ready to serve.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// Paths the console answers.
const (
	PathIndex  = "/"
	PathScript = "/console/console.js"
	PathStyle  = "/console/console.css"
	PathConfig = "/console/config.json"
)

// Config is what the page reads at start, from GET /console/config.json.
type Config struct {
	// PublisherURL is the publisher's base URL as a browser reaches it
	// (for example http://localhost:8080); empty hides the publish form.
	PublisherURL string `json:"publisher_url"`
	// TokenRequired says that the API needs a bearer token (API_TOKEN):
	// the page asks for it before it reads anything.
	TokenRequired bool `json:"token_required"`
}

// Files are the console's routes: GET / is the page, GET
// /console/console.js and /console/console.css its files, and GET
// /console/config.json tells the page cfg; none of them needs a token.
// Each answers GET and HEAD of its own path; the server mounting them
// answers the rest, as it answers every other route. The page reads the
// server's own routes (messages/stream, messages, readyz) by relative
// URLs, so a path prefix in front of the server works.
func Files(cfg Config) map[string]http.Handler {
	cfg.PublisherURL = strings.TrimRight(cfg.PublisherURL, "/")
	var config bytes.Buffer
	// A struct of a string and a bool always encodes.
	if err := json.NewEncoder(&config).Encode(cfg); err != nil {
		config.Reset()
		config.WriteString(`{"publisher_url":"","token_required":false}` + "\n")
	}
	csp := policy(cfg.PublisherURL)
	return map[string]http.Handler{
		PathIndex:  serve(newAsset(indexHTML, "text/html; charset=utf-8"), csp),
		PathScript: serve(newAsset(consoleJS, "text/javascript; charset=utf-8"), ""),
		PathStyle:  serve(newAsset(consoleCSS, "text/css; charset=utf-8"), ""),
		PathConfig: serve(newAsset(config.Bytes(), "application/json"), ""),
	}
}

// serve answers a; a page (csp set) also gets its policy and may not be
// framed.
func serve(a asset, csp string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		// Revalidate every time: the files change with the binary, and the
		// ETag turns an unchanged one into a 304.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if csp != "" {
			h.Set("Content-Security-Policy", csp)
			h.Set("X-Frame-Options", "DENY")
		}
		http.ServeContent(w, r, path.Base(r.URL.Path), time.Time{}, bytes.NewReader(a.body))
	})
}

func newAsset(body []byte, ctype string) asset {
	sum := sha256.Sum256(body)
	return asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// policy allows the page its own files and routes, plus requests to the
// publisher; nothing inline, nothing from elsewhere.
func policy(publisherURL string) string {
	connect := "'self'"
	if publisherURL != "" {
		u, err := url.Parse(publisherURL)
		if err == nil {
			connect += " " + u.Scheme + "://" + u.Host
		}
	}
	return strings.Join([]string{
		"default-src 'none'",
		"script-src 'self'",
		"style-src 'self'",
		"img-src 'self' data:",
		"connect-src " + connect,
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}
