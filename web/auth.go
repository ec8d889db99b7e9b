package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
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
	off    bool
	keys   map[[32]byte]Principal // by SHA-256 of the key: lookups leak no timing of the key
	secret []byte
	ttl    time.Duration
}

func newAuthenticator(cfg *Config) *authenticator {
	a := &authenticator{off: cfg.AuthOff, keys: make(map[[32]byte]Principal), ttl: cfg.TicketTTL}
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
				w.Header().Set("WWW-Authenticate", `Bearer realm="sessiond"`)
				onError(w, r, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
		})
	}
}

func (a *authenticator) principal(r *http.Request) (Principal, error) {
	if a.off {
		// Whatever the header says: a proxy in front (basic auth, say)
		// may send one of its own.
		return Principal{Owner: LocalOwner}, nil
	}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		return Principal{}, errorf(http.StatusUnauthorized, "unauthorized", "send an API key as Authorization: Bearer <key>")
	}
	p, ok := a.keys[sha256.Sum256([]byte(key))]
	if !ok {
		return Principal{}, errorf(http.StatusUnauthorized, "unauthorized", "unknown API key")
	}
	return p, nil
}

// ticket returns a signed, short-lived ticket for one session's WebSocket.
func (a *authenticator) ticket(sessionID string, p Principal, now time.Time) (string, time.Time) {
	exp := now.Add(a.ttl)
	payload := strings.Join([]string{sessionID, p.Owner, strconv.FormatBool(p.Admin), strconv.FormatInt(exp.Unix(), 10)}, "\n")
	mac := hmac.New(sha256.New, a.secret)
	mac.Write([]byte(payload))
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(mac.Sum(nil)), exp
}

// redeem checks a ticket for sessionID and returns its principal.
func (a *authenticator) redeem(t, sessionID string, now time.Time) (Principal, error) {
	bad := errorf(http.StatusUnauthorized, "unauthorized", "invalid or expired ticket; get a new one from POST /v1/tickets")
	enc := base64.RawURLEncoding
	p64, m64, ok := strings.Cut(t, ".")
	payload, err1 := enc.DecodeString(p64)
	sig, err2 := enc.DecodeString(m64)
	if !ok || err1 != nil || err2 != nil {
		return Principal{}, bad
	}
	mac := hmac.New(sha256.New, a.secret)
	mac.Write(payload)
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return Principal{}, bad
	}
	f := strings.Split(string(payload), "\n")
	if len(f) != 4 {
		return Principal{}, bad
	}
	exp, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || now.Unix() > exp {
		return Principal{}, bad
	}
	if f[0] != sessionID {
		return Principal{}, errorf(http.StatusForbidden, "forbidden", "this ticket is for another session")
	}
	return Principal{Owner: f[1], Admin: f[2] == "true"}, nil
}

func (a *authenticator) String() string {
	return fmt.Sprintf("auth(off=%v, keys=%d)", a.off, len(a.keys))
}
