package ui_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"sessiond/web/ui"
)

func get(t *testing.T, h http.Handler, method, path string, header ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			r.Host = header[i+1]
			continue
		}
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func TestHandlerRoutes(t *testing.T) {
	h := ui.Handler()
	tests := []struct {
		method, path string
		status       int
		ctype        string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/", 200, "text/html; charset=utf-8"},
		{"GET", "/index.html", 200, "text/html; charset=utf-8"},
		{"GET", "/s/abc", 200, "text/html; charset=utf-8"},
		{"GET", "/s/01JD7Z-x_y/", 200, "text/html; charset=utf-8"},
		{"GET", "/static/sessiond-client.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/static/app.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/static/markdown.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/static/style.css", 200, "text/css; charset=utf-8"},
		{"GET", "/static/favicon.svg", 200, "image/svg+xml"},
		{"GET", "/s/", 404, ""},
		{"GET", "/s/a/b", 404, ""},
		{"GET", "/static/", 404, ""},
		{"GET", "/static/index.html", 404, ""},
		{"GET", "/static/nope.js", 404, ""},
		{"GET", "/static/../ui.go", 404, ""},
		{"GET", "/favicon.ico", 404, ""},
		{"GET", "/v2/anything", 404, ""},
		{"POST", "/", 405, ""},
		{"DELETE", "/static/app.js", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			res := get(t, h, tt.method, tt.path)
			if got, want := res.StatusCode, tt.status; got != want {
				t.Fatalf("status=%d, want %d", got, want)
			}
			if tt.ctype == "" {
				return
			}
			if got, want := res.Header.Get("Content-Type"), tt.ctype; got != want {
				t.Errorf("Content-Type=%q, want %q", got, want)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options=%q, want nosniff", got)
			}
			if res.Header.Get("ETag") == "" {
				t.Error("no ETag")
			}
			body, _ := io.ReadAll(res.Body)
			if tt.method == "HEAD" {
				if len(body) != 0 {
					t.Errorf("HEAD answered %d bytes", len(body))
				}
			} else if len(body) == 0 {
				t.Error("empty body")
			}
		})
	}
}

func TestHandlerHeaders(t *testing.T) {
	h := ui.Handler()
	page := get(t, h, "GET", "/s/abc", "Host", "localhost:8080")
	csp := page.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self' ws://localhost:8080 wss://localhost:8080", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	// A Host header that is not a host must not reach the policy.
	odd := get(t, h, "GET", "/", "Host", "x; script-src *")
	if csp := odd.Header.Get("Content-Security-Policy"); strings.Contains(csp, "script-src *") {
		t.Errorf("CSP %q took the Host header in", csp)
	}
	if got := get(t, h, "GET", "/static/sessiond-client.js").Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("client module Access-Control-Allow-Origin=%q, want *", got)
	}
	etag := page.Header.Get("ETag")
	if got, want := get(t, h, "GET", "/", "If-None-Match", etag).StatusCode, http.StatusNotModified; got != want {
		t.Errorf("revalidation status=%d, want %d", got, want)
	}
	if got := page.Header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("Cache-Control=%q, want no-cache", got)
	}
}

// TestNothingFromTheNetwork checks that the page refers only to files the
// handler serves: no CDN, no font or script from elsewhere.
func TestNothingFromTheNetwork(t *testing.T) {
	h := ui.Handler()
	body, _ := io.ReadAll(get(t, h, "GET", "/").Body)
	refs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(string(body), -1)
	if len(refs) < 3 {
		t.Fatalf("found %d references in the page, want the icon, style and script", len(refs))
	}
	for _, m := range refs {
		ref := m[1]
		if strings.HasPrefix(ref, "#") {
			continue
		}
		if !strings.HasPrefix(ref, "/static/") {
			t.Errorf("page refers to %q, outside /static/", ref)
			continue
		}
		if res := get(t, h, "GET", ref); res.StatusCode != 200 {
			t.Errorf("page refers to %q, which answers %d", ref, res.StatusCode)
		}
	}
	imports := regexp.MustCompile(`(?m)^\s*import\s[^"]*"([^"]+)"`)
	for _, name := range []string{"app.js", "sessiond-client.js", "markdown.js"} {
		src, _ := io.ReadAll(get(t, h, "GET", "/static/"+name).Body)
		for _, m := range imports.FindAllStringSubmatch(string(src), -1) {
			if !strings.HasPrefix(m[1], "./") {
				t.Errorf("%s imports %q: only files next to it", name, m[1])
			}
		}
	}
}
