// Package ui is sessiond's browser interface: a chat page and the JavaScript
// client module it is built on, embedded in the binary and served by
// [Handler].
//
// The page lists the caller's sessions and shows one conversation live:
// replies stream token by token (rendered as Markdown by a small renderer
// that escapes all model output first), and a reload or a lost network
// resumes the running generation from the last offset seen. It uses only
// the public API (REST under /v1 and the session WebSocket), through
// /static/sessiond-client.js, which other frontends can import too; its API
// is documented in this package's README.md.
//
// Everything is plain files (HTML, CSS, ES modules): there is no build step
// and nothing is loaded from the network.
//
// # Routes
//
// Handler answers GET and HEAD for:
//
//	/               the page (session list and chat)
//	/s/{id}         the same page, opened on session id: the resume link
//	/static/{file}  the page's scripts, styles and icon
//
// and 404 for anything else; the server mounts it under everything that is
// not /v1 or /healthz.
//
// # Concurrency
//
// The handler is safe for concurrent use; it serves immutable data.
//
// Read browser_test.go first: it drives the page in headless Chromium
// against a real sessiond.
package ui
