package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	data  []byte
	ctype string
	etag  string
}

// contentTypes of the files the page is made of; other names are not served.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// assets maps a file's name under static/ to its content; built once.
var assets = func() map[string]asset {
	m := make(map[string]asset)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			return nil
		}
		data, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		m[strings.TrimPrefix(p, "static/")] = asset{
			data:  data,
			ctype: ctype,
			etag:  `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	if err != nil {
		panic("ui: read embedded files: " + err.Error()) // the build embedded them
	}
	return m
}()

// Handler returns the handler of the page and its static files (see the
// package doc for its routes).
//
// Every answer may be cached but must be revalidated (ETag), so that a
// browser never runs a page of one sessiond version against another. The
// page gets a Content-Security-Policy that allows scripts, styles and
// connections to this origin only: even a rendering bug cannot run
// injected script or send data elsewhere. The client module may be
// imported from other origins (CORS).
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	var name string
	switch {
	case p == "/" || p == "/index.html" || isSessionPath(p):
		name = "index.html"
	case strings.HasPrefix(p, "/static/"):
		name = strings.TrimPrefix(p, "/static/")
		if name == "index.html" {
			name = "" // one address for the page
		}
	}
	a, ok := assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	switch name {
	case "index.html":
		h.Set("Content-Security-Policy", csp(r.Host))
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
	case "sessiond-client.js":
		h.Set("Access-Control-Allow-Origin", "*")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.data))
}

// isSessionPath reports whether p is /s/{id} (with an optional trailing
// slash); the page reads the id from its own address.
func isSessionPath(p string) bool {
	id, ok := strings.CutPrefix(p, "/s/")
	if !ok {
		return false
	}
	id = strings.TrimSuffix(id, "/")
	return id != "" && !strings.Contains(id, "/")
}

// csp is the page's Content-Security-Policy. 'self' covers ws: and wss: of
// the same host in current browsers; older ones need them named, so the
// request's host is added when it looks like a host.
func csp(host string) string {
	connect := "'self'"
	if validHost(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src " + connect + "; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '.', c == '-', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}
