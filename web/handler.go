package web

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"sessiond/session"
	"sessiond/streaming"
)

// Defaults of Config.
const (
	// DefaultMaxBodyBytes bounds a request body: a 32 MiB turn plus JSON.
	DefaultMaxBodyBytes = 34 << 20
	// DefaultTicketTTL is how long a WebSocket ticket stays valid.
	DefaultTicketTTL = time.Minute
	// DefaultSSEHeartbeat keeps proxies from closing idle streams.
	DefaultSSEHeartbeat = 15 * time.Second
	// DefaultMaxBodyMemory bounds the request bodies held at once.
	DefaultMaxBodyMemory = 1 << 30
	// DefaultWSPing is how often a WebSocket's client is pinged.
	DefaultWSPing = 30 * time.Second
)

// Config configures the HTTP API.
type Config struct {
	// Keys maps API keys to the principal they act for.
	Keys map[string]Principal
	// AuthOff serves every request as LocalOwner without a key. cmd/sessiond
	// allows it only on loopback (or with an explicit insecure flag). Web
	// pages are then answered only from loopback origins or AllowedOrigins
	// (see LocalHostsOnly too).
	AuthOff bool
	// LocalHostsOnly, with AuthOff, answers only requests whose Host is
	// localhost or a loopback address: a page cannot then reach the server
	// through a DNS name of its own that points at 127.0.0.1. cmd/sessiond
	// sets it when it listens on loopback without keys.
	LocalHostsOnly bool
	// AllowedOrigins are host patterns (as coder/websocket's
	// AcceptOptions.OriginPatterns) allowed to open WebSockets from another
	// origin, and with AuthOff to call the API; by default only
	// same-origin pages may open WebSockets.
	AllowedOrigins []string
	// MaxBodyBytes bounds request bodies (an import's, four times it).
	// Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxBodyMemory bounds the memory of the request bodies being read and
	// used at once: once 1 MiB of a body has arrived, it counts twice the
	// bytes that have, until its handler is done with them (a post's, once
	// stored: not while its answer streams); a body that would pass the
	// budget is refused with 503 overloaded and Retry-After, nothing of it
	// applied. A body alone always passes. Default DefaultMaxBodyMemory
	// (1 GiB).
	MaxBodyMemory int64
	// TicketTTL is how long a WebSocket ticket is valid. Default DefaultTicketTTL.
	TicketTTL time.Duration
	// SSEHeartbeat is the idle time before an SSE comment. Default DefaultSSEHeartbeat.
	SSEHeartbeat time.Duration
	// WSPing is how often the server pings a WebSocket's client; a client
	// that has not answered a ping within twice it is dropped (see
	// streaming.WebSocket.KeepAlive). Default DefaultWSPing; negative: no
	// pings.
	WSPing time.Duration
	// UI serves everything outside /v1 and /healthz; nil serves 404s.
	UI http.Handler
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

type api struct {
	svc    *session.Service
	cfg    Config
	auth   *authenticator
	bodies bodyBudget
	log    *slog.Logger
}

// NewHandler returns the HTTP handler of the whole API.
func NewHandler(svc *session.Service, cfg Config) http.Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.TicketTTL <= 0 {
		cfg.TicketTTL = DefaultTicketTTL
	}
	if cfg.SSEHeartbeat == 0 {
		cfg.SSEHeartbeat = DefaultSSEHeartbeat
	}
	if cfg.WSPing == 0 {
		cfg.WSPing = DefaultWSPing
	}
	if cfg.MaxBodyMemory <= 0 {
		cfg.MaxBodyMemory = DefaultMaxBodyMemory
	}
	a := &api{svc: svc, cfg: cfg, auth: newAuthenticator(&cfg), bodies: bodyBudget{max: cfg.MaxBodyMemory}, log: cfg.Logger}
	if a.log == nil {
		a.log = slog.Default()
	}
	r := chi.NewRouter()
	r.Use(middleware.GetHead) // HEAD of every GET route, as HTTP expects
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	notFound := func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, a.log, errorf(http.StatusNotFound, "not_found", "no such endpoint: %s %s", r.Method, clip(r.URL.Path)))
	}
	methodNotAllowed := func(w http.ResponseWriter, req *http.Request) {
		// A 405 says which methods the resource has (RFC 9110
		// 15.5.6); a custom handler gets none of chi's.
		var allow []string
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
			lookup := m
			if m == "HEAD" {
				lookup = "GET" // GetHead answers HEAD wherever GET is routed
			}
			if r.Match(chi.NewRouteContext(), lookup, req.URL.Path) {
				allow = append(allow, m)
			}
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, req, a.log, errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed on %s; allowed: %s", clip(req.Method), clip(req.URL.Path), strings.Join(allow, ", ")))
	}
	// A method chi does not know ("FOO", "get") is refused by the root
	// router before any route: the same JSON 405.
	r.MethodNotAllowed(methodNotAllowed)
	r.Route("/v1", func(v1 chi.Router) {
		v1.Use(a.auth.cors)
		v1.NotFound(notFound)
		v1.MethodNotAllowed(methodNotAllowed)
		authed := v1.With(a.auth.middleware(func(w http.ResponseWriter, r *http.Request, err error) { writeError(w, r, a.log, err) }))
		for _, rt := range routes {
			h := a.wrap(rt.handle)
			if rt.public {
				v1.Method(rt.method, rt.path, h)
			} else {
				authed.Method(rt.method, rt.path, h)
			}
		}
	})
	if cfg.UI != nil {
		r.NotFound(cfg.UI.ServeHTTP)
	} else {
		r.NotFound(notFound)
	}
	return r
}

// clip cuts s, a part of a request echoed in an error message, to 256
// bytes (at a rune's start), with "…": a 100 KB path is not sent back.
func clip(s string) string {
	const max = 256
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

func (a *api) wrap(h func(*api, http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(a, w, r); err != nil {
			writeError(w, r, a.log, err)
		}
	})
}

// queryInt parses an optional integer query parameter within [lo, hi].
func queryInt(r *http.Request, name string, def, lo, hi int64) (int64, bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, false, errorf(http.StatusBadRequest, "invalid_request", "%s must be an integer from %d to %d", name, lo, hi)
	}
	return n, true, nil
}

func createSession(a *api, w http.ResponseWriter, r *http.Request) error {
	var req session.CreateRequest
	if err := a.decodeOptional(w, r, a.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	req.IdempotencyKey = r.Header.Get("Idempotency-Key")
	s, err := a.svc.Create(r.Context(), principalOf(r.Context()).Owner, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, s)
	return nil
}

func listSessions(a *api, w http.ResponseWriter, r *http.Request) error {
	limit, _, err := queryInt(r, "limit", 20, 1, 100)
	if err != nil {
		return err
	}
	p := principalOf(r.Context())
	owner := p.Owner
	if o := r.URL.Query().Get("owner"); o != "" && o != p.Owner {
		if !p.Admin {
			return errorf(http.StatusForbidden, "forbidden", "only an admin key may list another owner's sessions (owner=)")
		}
		owner = o
	}
	cursor := r.URL.Query().Get("cursor")
	if session.CheckCursor(cursor) != nil {
		// A query parameter, refused as the others are (400).
		return errorf(http.StatusBadRequest, "invalid_request", "cursor is not one this API gave (next_cursor of an earlier page)")
	}
	list, next, err := a.svc.List(r.Context(), owner, cursor, int(limit))
	if err != nil {
		return err
	}
	var nc any
	if next != "" {
		nc = next
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": list, "next_cursor": nc})
	return nil
}

func getSession(a *api, w http.ResponseWriter, r *http.Request) error {
	s, err := a.svc.Get(r.Context(), principalOf(r.Context()).scope(), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s)
	return nil
}

func updateSession(a *api, w http.ResponseWriter, r *http.Request) error {
	var req session.UpdateRequest
	if err := a.decodeJSON(w, r, a.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	s, err := a.svc.Update(r.Context(), principalOf(r.Context()).scope(), chi.URLParam(r, "id"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s)
	return nil
}

func deleteSession(a *api, w http.ResponseWriter, r *http.Request) error {
	if err := a.svc.Delete(r.Context(), principalOf(r.Context()).scope(), chi.URLParam(r, "id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func listTurns(a *api, w http.ResponseWriter, r *http.Request) error {
	const maxID = 1 << 62
	limit, _, err := queryInt(r, "limit", 50, 1, 1000)
	if err != nil {
		return err
	}
	q := session.TurnQuery{Limit: int(limit)}
	if v, ok, err := queryInt(r, "after", 0, 0, maxID); err != nil {
		return err
	} else if ok {
		q.After = &v
	}
	if v, ok, err := queryInt(r, "before", 0, 1, maxID); err != nil {
		return err
	} else if ok {
		q.Before = &v
	}
	if q.After != nil && q.Before != nil {
		return errorf(http.StatusBadRequest, "invalid_request", "use after or before, not both")
	}
	if q.Branch, _, err = queryInt(r, "branch", 0, 1, maxID); err != nil {
		return err
	}
	turns, more, err := a.svc.Turns(r.Context(), principalOf(r.Context()).scope(), chi.URLParam(r, "id"), q)
	if err != nil {
		return err
	}
	writeTurnsPage(w, turns, more)
	return nil
}

// wantsSSE reports whether Accept names text/event-stream with a q above
// 0 ("q=0" means "not this").
func wantsSSE(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for rng := range strings.SplitSeq(v, ",") {
			typ, params, _ := strings.Cut(rng, ";")
			if !strings.EqualFold(strings.TrimSpace(typ), "text/event-stream") {
				continue
			}
			q := 1.0
			for prm := range strings.SplitSeq(params, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(prm), "=")
				if strings.EqualFold(k, "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
						q = f
					}
				}
			}
			if q > 0 {
				return true
			}
		}
	}
	return false
}

func postTurns(a *api, w http.ResponseWriter, r *http.Request) error {
	var req session.PostRequest
	body := a.openBody(w, r, a.cfg.MaxBodyBytes)
	defer body.release()
	if err := decodePostRequest(body, r.ContentLength, a.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	req.IdempotencyKey = r.Header.Get("Idempotency-Key")
	p := principalOf(r.Context())
	id := chi.URLParam(r, "id")
	if wantsSSE(r) {
		// Counted before the post, so that a refused stream posts nothing.
		release, err := a.svc.OpenStream(p.scope())
		if err != nil {
			return err
		}
		defer release()
	}
	res, err := a.svc.Post(r.Context(), p.scope(), id, req)
	body.release() // the post is stored: not held while the answer streams
	if err != nil {
		return err
	}
	if !wantsSSE(r) || res.Generation == nil {
		writePostResult(w, http.StatusCreated, res)
		return nil
	}
	// The stream begins with the posted turns and the generation (its id,
	// queued or running), one burst, then its events.
	head := make([][]byte, 0, len(res.Turns)+1)
	for _, t := range res.Turns {
		head = append(head, session.TurnMessageJSON(t))
	}
	head = append(head, session.GenerationMessageJSON(res.Generation))
	return a.stream(w, r, p, id, res.Generation.ID, 0, head)
}

// stream answers with the generation's events as SSE from offset after,
// preceded by the messages of head; it returns when the generation has ended or
// the client left: its request ended, or a heartbeat could not be written
// (a client that stopped reading, a connection dead without a reset),
// which ends ctx, so that the handler, its viewer and its stream slot do
// not wait for the generation's next event.
func (a *api) stream(w http.ResponseWriter, r *http.Request, p Principal, id, gid string, after int64, head [][]byte) error {
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	sink, err := streaming.NewSSE(w, &streaming.SSEOptions{Heartbeat: a.cfg.SSEHeartbeat, OnBroken: cancel})
	if err != nil {
		return err
	}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{CloseOnFinal: true, FlushInterval: 0, Logger: a.log})
	defer v.Close()
	if len(head) > 0 {
		// One Send: the posted turns are one burst, accepted whole
		// however large, not a client falling behind.
		v.Send(head...)
	}
	if err := a.svc.Follow(ctx, p.scope(), id, gid, after, v); err != nil {
		if ctx.Err() != nil {
			return nil // the client is gone: nobody to tell
		}
		code, msg := session.ErrorCode(err)
		var ae *apiError
		if errors.As(err, &ae) {
			code, msg = ae.Code, ae.Message
		}
		b, _ := jsonMarshal(map[string]any{"type": "error", "code": code, "message": msg})
		v.Send(b)
		v.CloseWith(streaming.CloseNormal, "")
		return nil
	}
	select {
	case <-v.Done():
	case <-ctx.Done():
	}
	return nil
}

func getGeneration(a *api, w http.ResponseWriter, r *http.Request) error {
	g, err := a.svc.Generation(r.Context(), principalOf(r.Context()).scope(), chi.URLParam(r, "id"), chi.URLParam(r, "gid"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

func streamGeneration(a *api, w http.ResponseWriter, r *http.Request) error {
	after, err := streaming.ParseLastEventID(r.Header.Get("Last-Event-ID"))
	if err != nil {
		return errorf(http.StatusBadRequest, "invalid_request", "Last-Event-ID must be the last offset seen (a non-negative integer)")
	}
	if v, ok, err := queryInt(r, "after", 0, 0, 1<<62); err != nil {
		return err
	} else if ok && r.Header.Get("Last-Event-ID") == "" {
		after = v
	}
	p := principalOf(r.Context())
	id, gid := chi.URLParam(r, "id"), chi.URLParam(r, "gid")
	// Check before the 200 goes out, so a bad id is a plain 404 and a
	// position past the last event a plain 400.
	g, err := a.svc.Generation(r.Context(), p.scope(), id, gid)
	if err != nil {
		return err
	}
	if g.PastEnd(after) {
		return errorf(http.StatusBadRequest, "invalid_request", "generation %s has no event at offset %d: its last is %d (Last-Event-ID and after are the last offset seen)", gid, after, g.Offset)
	}
	if g.Finished() && after == g.Offset {
		// Its final event was seen: 204 tells an EventSource to stop
		// reconnecting, where an empty stream would have it come back.
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	release, err := a.svc.OpenStream(p.scope())
	if err != nil {
		return err
	}
	defer release()
	return a.stream(w, r, p, id, gid, after, nil)
}

func cancelGeneration(a *api, w http.ResponseWriter, r *http.Request) error {
	g, err := a.svc.Cancel(r.Context(), principalOf(r.Context()).scope(), chi.URLParam(r, "id"), chi.URLParam(r, "gid"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

type forkRequest struct {
	TurnID int64 `json:"turn_id"`
}

func forkSession(a *api, w http.ResponseWriter, r *http.Request) error {
	var req forkRequest
	if err := a.decodeJSON(w, r, 1<<10, &req); err != nil {
		return err
	}
	// A turn_id that names no turn (0 or less among them) is the
	// session's to refuse, 422, once it is known to exist (404 otherwise).
	s, err := a.svc.Fork(r.Context(), principalOf(r.Context()).scope(), chi.URLParam(r, "id"), req.TurnID, r.Header.Get("Idempotency-Key"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, s)
	return nil
}

func exportSession(a *api, w http.ResponseWriter, r *http.Request) error {
	p := principalOf(r.Context())
	id := chi.URLParam(r, "id")
	if _, err := a.svc.Get(r.Context(), p.scope(), id); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.jsonl"`)
	dw := newDeadlineWriter(w)
	if err := a.svc.Export(r.Context(), p.scope(), id, dw); err != nil {
		if dw.written == 0 {
			return err // nothing sent yet: the error is the answer
		}
		// The status is gone. Ending the body as usual would hand the
		// client the lines so far as a whole export, which imports as a
		// shorter session: break the connection instead (a chunked body
		// left unterminated), which every client reports as a failure.
		a.log.Warn("web: export cut short; connection broken", "session", id, "err", err)
		panic(http.ErrAbortHandler)
	}
	dw.lift()
	return nil
}

func importSession(a *api, w http.ResponseWriter, r *http.Request) error {
	body := a.openBody(w, r, a.cfg.MaxBodyBytes*4)
	defer body.release()
	s, err := a.svc.Import(r.Context(), principalOf(r.Context()).Owner, body, r.Header.Get("Idempotency-Key"))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return errSlowBody()
		}
		if errors.Is(err, errOverBudget) {
			return errOverBudget
		}
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, "too_large", "the import is over %d bytes", mbe.Limit)
		}
		return err
	}
	writeJSON(w, http.StatusCreated, s)
	return nil
}

type ticketRequest struct {
	SessionID string `json:"session_id"`
}

func createTicket(a *api, w http.ResponseWriter, r *http.Request) error {
	var req ticketRequest
	if err := a.decodeJSON(w, r, 1<<10, &req); err != nil {
		return err
	}
	if req.SessionID == "" {
		return errorf(http.StatusUnprocessableEntity, "invalid_request", "session_id is required")
	}
	p := principalOf(r.Context())
	if _, err := a.svc.Get(r.Context(), p.scope(), req.SessionID); err != nil {
		return err
	}
	t, exp := a.auth.ticket(req.SessionID, p, time.Now())
	writeJSON(w, http.StatusCreated, map[string]any{"ticket": t, "expires_at": session.Timestamp{Time: exp}})
	return nil
}

func sessionSocket(a *api, w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "id")
	// Not a WebSocket handshake: refused here, in JSON, before a ticket is
	// spent (the library's refusal is plain text, after it).
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") ||
		r.Header.Get("Sec-WebSocket-Version") != "13" || r.Header.Get("Sec-WebSocket-Key") == "" {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Sec-WebSocket-Version", "13")
		return errorf(http.StatusUpgradeRequired, "invalid_request", "this is a WebSocket endpoint: open it with a WebSocket handshake (version 13)")
	}
	// A page of another site: refused in JSON before a ticket is spent
	// (the library's refusal is plain text, after it).
	if err := a.auth.socketOrigin(r, a.cfg.AllowedOrigins); err != nil {
		return err
	}
	var p Principal
	var pass *ticketPass
	if t := r.URL.Query().Get("ticket"); t != "" {
		tp, err := a.auth.check(t, id, time.Now())
		if err != nil {
			return err
		}
		p, pass = tp.p, &tp
	} else if a.auth.off {
		// No ticket needed with auth off: the route is public, so the
		// checks the auth middleware makes of browsers (a page of another
		// site, a DNS name rebound to 127.0.0.1) are made here.
		if err := a.auth.checkBrowser(r); err != nil {
			return err
		}
		p = Principal{Owner: LocalOwner}
	} else {
		return errorf(http.StatusUnauthorized, "unauthorized", "a WebSocket needs ?ticket= from POST /v1/tickets")
	}
	if _, err := a.svc.Get(r.Context(), p.scope(), id); err != nil {
		return err
	}
	// Refuse an owner at its limit of streams with a plain 429 before the
	// upgrade; Accept counts the socket for as long as it is open (and
	// refuses it with 1013 if another took the last place meanwhile).
	release, err := a.svc.OpenStream(p.scope())
	if err != nil {
		return err
	}
	release()
	// Spent only now: a refusal above leaves the ticket good for a retry.
	if pass != nil {
		if err := a.auth.redeem(*pass, time.Now()); err != nil {
			return err
		}
	}
	opts := &websocket.AcceptOptions{OriginPatterns: a.cfg.AllowedOrigins}
	if o := r.Header.Get("Origin"); o != "" && a.auth.originAllowed(o) {
		// Checked here (a loopback origin: a frontend's dev server), as
		// for the API; the library's own check knows only same-origin
		// pages and the patterns.
		opts.InsecureSkipVerify = true
	}
	ws, err := streaming.Accept(w, r, opts)
	if err != nil {
		return nil // Accept has answered the client
	}
	if err := a.svc.Accept(r.Context(), p.scope(), id, ws); err != nil {
		code, msg := session.ErrorCode(err)
		ws.Conn().Close(acceptCloseStatus(code), truncateReason(code+": "+msg))
		return nil
	}
	ws.KeepAlive(a.cfg.WSPing) // the session reads the socket now, so pongs are taken
	return nil
}

// acceptCloseStatus is the close code of a WebSocket the session refused:
// 1008 (policy violation) for a refusal that stands (the session is gone,
// the request is wrong), 1013 (try again later) when the server is busy
// or stopping, 1011 for an internal error. Clients give up on 1008 only.
func acceptCloseStatus(code string) websocket.StatusCode {
	switch code {
	case "overloaded", "unavailable", "rate_limited":
		return websocket.StatusTryAgainLater
	case "internal":
		return websocket.StatusInternalError
	}
	return websocket.StatusPolicyViolation
}

// truncateReason cuts a close reason to the 123 bytes a close frame holds:
// at the last space that leaves room for "…" (or on a rune boundary, in a
// reason without one), so that it does not end mid-word.
func truncateReason(s string) string {
	if len(s) <= 123 {
		return s
	}
	const ellipsis = "…"
	n := 123 - len(ellipsis)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	if sp := strings.LastIndexByte(s[:n], ' '); sp > 0 {
		n = sp
	}
	return strings.TrimRight(s[:n], " ,;:") + ellipsis
}

func openAPI(a *api, w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPIDocument())
	return nil
}

// headerHasToken reports whether a comma-separated header of h holds token,
// compared case-insensitively.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}
