package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LocalOwner owns everything when authentication is off.
const LocalOwner = "local"

// Principal is who a request acts for.
type Principal struct {
	// Owner is the owner name sessions are created under and listed for.
	Owner string
	// Admin principals see and change every owner's sessions.
	Admin bool
}

// scope is the owner filter for reads: "" (all) for admins.
func (p Principal) scope() string {
	if p.Admin {
		return ""
	}
	return p.Owner
}

type principalKey struct{}

func principalOf(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// authenticator checks API keys and issues WebSocket tickets.
type authenticator struct {
	off        bool
	localHosts bool                   // with off: only loopback Host headers (Config.LocalHostsOnly)
	origins    []string               // Config.AllowedOrigins
	keys       map[[32]byte]Principal // by SHA-256 of the key: lookups leak no timing of the key
	secret     []byte
	ttl        time.Duration

	mu    sync.Mutex
	spent map[string]int64 // nonce → expiry (Unix seconds) of the tickets redeemed and not yet expired
	sweep int64            // when spent is next swept of expired nonces (Unix seconds)
}

func newAuthenticator(cfg *Config) *authenticator {
	a := &authenticator{off: cfg.AuthOff, localHosts: cfg.LocalHostsOnly, origins: cfg.AllowedOrigins,
		keys: make(map[[32]byte]Principal), ttl: cfg.TicketTTL}
	for k, p := range cfg.Keys {
		a.keys[sha256.Sum256([]byte(k))] = p
	}
	a.secret = make([]byte, 32)
	rand.Read(a.secret)
	return a
}

// middleware puts the request's Principal in its context, or answers 401.
func (a *authenticator) middleware(onError func(http.ResponseWriter, *http.Request, error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, err := a.principal(r)
			if err != nil {
				// A challenge only with 401: on a 403 (a page of another
				// site) it would say that a key helps, which it does not.
				if ae := (*apiError)(nil); errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
					w.Header().Set("WWW-Authenticate", `Bearer realm="sessiond"`)
				}
				onError(w, r, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
		})
	}
}

func (a *authenticator) principal(r *http.Request) (Principal, error) {
	if a.off {
		if err := a.checkBrowser(r); err != nil {
			return Principal{}, err
		}
		// Whatever the Authorization header says: a proxy in front (basic
		// auth, say) may send one of its own.
		return Principal{Owner: LocalOwner}, nil
	}
	if len(r.Header.Values("Authorization")) > 1 {
		// Not a list header: a proxy in front that read another of
		// them than this server would have authenticated someone else.
		return Principal{}, errorf(http.StatusUnauthorized, "unauthorized", "send one Authorization header, not several")
	}
	// The scheme's name is case-insensitive (RFC 9110, section 11.1).
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	key = strings.TrimLeft(key, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return Principal{}, errorf(http.StatusUnauthorized, "unauthorized", "send an API key as Authorization: Bearer <key>")
	}
	p, ok := a.keys[sha256.Sum256([]byte(key))]
	if !ok {
		return Principal{}, errorf(http.StatusUnauthorized, "unauthorized", "unknown API key")
	}
	return p, nil
}

// checkBrowser keeps web pages of other sites from using a server that
// runs without keys: any page a local user opens can send it requests
// (a POST of text/plain needs no CORS preflight), and its answers can be
// read through a DNS name of the page's that points at 127.0.0.1. A
// request with an Origin header is answered only from a loopback origin
// or one of Config.AllowedOrigins, and with LocalHostsOnly only a
// loopback Host is answered. Programs send no Origin and a loopback Host.
func (a *authenticator) checkBrowser(r *http.Request) error {
	if a.localHosts && !loopbackHost(hostOnly(r.Host)) {
		return errorf(http.StatusForbidden, "forbidden", "with authentication off, sessiond answers requests to localhost, 127.0.0.1 or [::1] only, not to %q (set --api-keys to serve other names)", r.Host)
	}
	origin := r.Header.Get("Origin")
	if origin == "" || a.originAllowed(origin) {
		return nil
	}
	return errorf(http.StatusForbidden, "forbidden", "with authentication off, sessiond answers pages from this machine or --allowed-origins only, not from %q", origin)
}

// originAllowed reports whether pages of origin may use sessiond: a
// loopback origin (a frontend's dev server) or one of
// Config.AllowedOrigins.
func (a *authenticator) originAllowed(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	if loopbackHost(hostOnly(u.Host)) {
		return true
	}
	for _, pat := range a.origins {
		if ok, _ := path.Match(strings.ToLower(pat), strings.ToLower(u.Host)); ok {
			return true
		}
	}
	return false
}

// socketOrigin refuses a WebSocket handshake from a page that may not open
// one: neither an allowed origin (originAllowed) nor one the WebSocket
// library accepts (the request's own host, or patterns). It is checked
// before the ticket is spent, and answers the API's JSON error: the
// library's refusal is plain text, and comes after.
func (a *authenticator) socketOrigin(r *http.Request, patterns []string) error {
	origin := r.Header.Get("Origin")
	if origin == "" || a.originAllowed(origin) {
		return nil
	}
	if u, err := url.Parse(origin); err == nil && u.Host != "" {
		if strings.EqualFold(r.Host, u.Host) {
			return nil
		}
		for _, pat := range patterns {
			target := u.Host
			if strings.Contains(pat, "://") {
				target = u.Scheme + "://" + u.Host
			}
			if ok, _ := path.Match(strings.ToLower(pat), strings.ToLower(target)); ok {
				return nil
			}
		}
	}
	return errorf(http.StatusForbidden, "forbidden", "pages of %q may not open this WebSocket: only same-origin, loopback and --allowed-origins pages may", origin)
}

// cors lets pages of the allowed origins (originAllowed) read the API's
// answers and send it JSON with a key (CORS): a frontend's dev server on
// localhost:5173 calls sessiond directly. Preflights are answered here,
// before authentication (a browser sends no key with them). Other origins
// get no CORS headers, so their pages cannot read an answer.
func (a *authenticator) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !a.originAllowed(origin) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, Accept")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hostOnly is hostport without its port (and an IPv6 address without its
// brackets).
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// LoopbackHost reports whether hostport, a Host header's value, names
// localhost (or a name under it) or a loopback address: a web page's own
// DNS name pointing at 127.0.0.1 does not. For other listeners of the
// server that answer loopback names only.
func LoopbackHost(hostport string) bool { return loopbackHost(hostOnly(hostport)) }

// loopbackHost reports whether host is localhost (or a name under it) or
// a loopback address.
func loopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// ticket returns a signed, short-lived, single-use ticket for one
// session's WebSocket. Its random nonce is what redeem spends.
func (a *authenticator) ticket(sessionID string, p Principal, now time.Time) (string, time.Time) {
	// Whole seconds, as the ticket holds it: valid while now < exp, and
	// expires_at says exactly that.
	exp := time.Unix(now.Add(a.ttl).Unix(), 0)
	nonce := rand.Text()
	payload := strings.Join([]string{sessionID, p.Owner, strconv.FormatBool(p.Admin), strconv.FormatInt(exp.Unix(), 10), nonce}, "\n")
	mac := hmac.New(sha256.New, a.secret)
	mac.Write([]byte(payload))
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(mac.Sum(nil)), exp
}

// ticketPass is a ticket that check found good, to spend when the
// connection is about to be accepted.
type ticketPass struct {
	p     Principal
	nonce string
	exp   int64
}

// check verifies a ticket for sessionID without spending it: a connection
// refused for another reason (the session is gone, its owner at its limit
// of streams) leaves the ticket good for the retry.
func (a *authenticator) check(t, sessionID string, now time.Time) (ticketPass, error) {
	bad := errBadTicket()
	enc := base64.RawURLEncoding
	p64, m64, ok := strings.Cut(t, ".")
	payload, err1 := enc.DecodeString(p64)
	sig, err2 := enc.DecodeString(m64)
	if !ok || err1 != nil || err2 != nil {
		return ticketPass{}, bad
	}
	mac := hmac.New(sha256.New, a.secret)
	mac.Write(payload)
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return ticketPass{}, bad
	}
	f := strings.Split(string(payload), "\n")
	if len(f) != 5 {
		return ticketPass{}, bad
	}
	exp, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || now.Unix() >= exp {
		return ticketPass{}, bad
	}
	if f[0] != sessionID {
		return ticketPass{}, errorf(http.StatusForbidden, "forbidden", "this ticket is for another session")
	}
	if a.spentAlready(f[4]) { // redeem decides; this answers a copy early
		return ticketPass{}, errUsedTicket()
	}
	return ticketPass{p: Principal{Owner: f[1], Admin: f[2] == "true"}, nonce: f[4], exp: exp}, nil
}

func errBadTicket() error {
	return errorf(http.StatusUnauthorized, "unauthorized", "invalid or expired ticket; get a new one from POST /v1/tickets")
}

func errUsedTicket() error {
	return errorf(http.StatusUnauthorized, "unauthorized", "this ticket was used already; get a new one from POST /v1/tickets for each connection")
}

func (a *authenticator) spentAlready(nonce string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.spent[nonce]
	return ok
}

// redeem spends a ticket that check passed: a ticket opens one connection,
// so that a copy of it (in a log, a history, a proxy's cache) opens
// nothing. The nonces spent are kept until their tickets expire, so they
// are bounded by the tickets redeemed within a TTL.
func (a *authenticator) redeem(tp ticketPass, now time.Time) error {
	// Expired since check: its nonce may have been swept, and spend
	// would take a copy as new.
	if now.Unix() >= tp.exp {
		return errBadTicket()
	}
	if !a.spend(tp.nonce, tp.exp, now.Unix()) {
		return errUsedTicket()
	}
	return nil
}

// spend records nonce, of a ticket valid until exp, and reports whether it
// was not spent before. Expired nonces are swept at most once a TTL.
func (a *authenticator) spend(nonce string, exp, now int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now >= a.sweep {
		for n, e := range a.spent {
			if e < now {
				delete(a.spent, n)
			}
		}
		a.sweep = now + max(1, int64(a.ttl/time.Second))
	}
	if _, ok := a.spent[nonce]; ok {
		return false
	}
	if a.spent == nil {
		a.spent = make(map[string]int64)
	}
	a.spent[nonce] = exp
	return true
}

func (a *authenticator) String() string {
	return fmt.Sprintf("auth(off=%v, keys=%d)", a.off, len(a.keys))
}
