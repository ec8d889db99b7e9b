// Command counter is a small HTTP service built only on the exported API of
// package objects: a persisted counter per name, and a fixed-window rate
// limiter per key whose window is reset by an alarm while the object sleeps.
//
//	POST /counters/{name}/incr  → {"name": "a", "value": 3}
//	GET  /counters/{name}       → the value, without creating the counter
//	POST /limits/{key}          → 200 {"key", "remaining", "reset_at"} or 429
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"sessiond/objects"
)

// One row per object: a counter's value, or the hits in a limiter's window.
const schema = `CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
INSERT INTO state (id, n) VALUES (1, 0);`

// counter is the in-memory instance of a counter: all state is in its table.
type counter struct{}

// limiter is the in-memory instance of a rate-limit object. Its window ends
// at the object's alarm; the alarm's handler resets the count.
type limiter struct{}

// Alarm runs when the window ends, waking the object if it hibernated.
func (limiter) Alarm(ctx context.Context, tx *objects.Tx, _ objects.AlarmInfo) error {
	_, err := tx.Exec(ctx, `UPDATE state SET n = 0 WHERE id = 1`)
	return err
}

// app holds the two namespaces and the limiter's policy.
type app struct {
	counters, limits *objects.Namespace
	limit            int64         // requests allowed per window and key
	window           time.Duration // length of a window
}

// newApp registers the two classes on rt, which must not be open yet.
func newApp(rt *objects.Runtime, limit int64, window time.Duration) (*app, error) {
	if limit < 1 || window <= 0 {
		return nil, fmt.Errorf("a limit of %d requests per %v: want at least 1 request per window longer than 0", limit, window)
	}
	counters, err := rt.Register("counter", objects.Class{
		Migrations: []string{schema},
		New:        func(context.Context, *objects.Handle, *objects.Tx) (any, error) { return counter{}, nil },
	})
	if err != nil {
		return nil, err
	}
	limits, err := rt.Register("limit", objects.Class{
		Migrations: []string{schema},
		New:        func(context.Context, *objects.Handle, *objects.Tx) (any, error) { return limiter{}, nil },
	})
	if err != nil {
		return nil, err
	}
	return &app{counters: counters, limits: limits, limit: limit, window: window}, nil
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /counters/{name}/incr", a.count(`UPDATE state SET n = n + 1 WHERE id = 1 RETURNING n`, true))
	mux.Handle("GET /counters/{name}", a.count(`SELECT n FROM state WHERE id = 1`, false))
	mux.HandleFunc("POST /limits/{key}", a.hit)
	return mux
}

// count answers the value of the counter named in the path after running
// query on it, which returns that value. Only incr creates counters.
func (a *app) count(query string, incr bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		stub, err := a.counters.Get(name)
		if err != nil {
			fail(w, err)
			return
		}
		if !incr { // Exists reads the node index: reading creates nothing.
			ok, err := a.counters.Exists(r.Context(), name)
			if err != nil {
				fail(w, err)
				return
			}
			if !ok {
				reply(w, http.StatusOK, map[string]any{"name": name, "value": 0})
				return
			}
		}
		// Do returns once the call's writes are committed: durable before visible.
		n, err := objects.Do(r.Context(), stub, func(ctx context.Context, _ counter, tx *objects.Tx) (n int64, err error) {
			err = tx.QueryRow(ctx, query).Scan(&n)
			return n, err
		})
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, map[string]any{"name": name, "value": n})
	}
}

func (a *app) hit(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	stub, err := a.limits.Get(key)
	if err != nil {
		fail(w, err)
		return
	}
	type verdict struct {
		allowed bool
		left    int64
		reset   time.Time
	}
	v, err := objects.Do(r.Context(), stub, func(ctx context.Context, _ limiter, tx *objects.Tx) (v verdict, err error) {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT n FROM state WHERE id = 1`).Scan(&n); err != nil {
			return v, err
		}
		now := time.Now()
		end, ok, err := tx.Alarm(ctx)
		if err != nil {
			return v, err
		}
		if !ok || !now.Before(end) { // no window, or its alarm is late: start one
			n, end = 0, now.Add(a.window)
			tx.SetAlarm(end)
		}
		if n >= a.limit {
			return verdict{false, 0, end}, nil
		}
		if _, err := tx.Exec(ctx, `UPDATE state SET n = ? WHERE id = 1`, n+1); err != nil {
			return v, err
		}
		return verdict{true, a.limit - n - 1, end}, nil
	})
	if err != nil {
		fail(w, err)
		return
	}
	if !v.allowed {
		secs := math.Ceil(time.Until(v.reset).Seconds())
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(secs))))
		replyError(w, http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("more than %d requests in %v", a.limit, a.window))
		return
	}
	reply(w, http.StatusOK, map[string]any{"key": key, "remaining": v.left, "reset_at": v.reset.UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano)})
}

// fail maps a runtime error to a status and a stable error code.
func fail(w http.ResponseWriter, err error) {
	var over *objects.OverloadedError
	switch {
	case errors.Is(err, objects.ErrInvalidName):
		replyError(w, http.StatusBadRequest, "invalid_request", err.Error())
	case errors.As(err, &over):
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(over.RetryAfter.Seconds())))))
		replyError(w, http.StatusServiceUnavailable, "overloaded", err.Error())
	default:
		replyError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

func replyError(w http.ResponseWriter, status int, code, msg string) {
	reply(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "address to listen on")
	data := flag.String("data", "./counter-data", "data folder")
	limit := flag.Int64("limit", 5, "requests allowed per key and window")
	window := flag.Duration("window", 10*time.Second, "rate-limit window")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, *addr, *data, *limit, *window); err != nil {
		log.Fatal(err)
	}
}

func serve(ctx context.Context, addr, data string, limit int64, window time.Duration) error {
	rt := objects.NewRuntime(data)
	a, err := newApp(rt, limit, window)
	if err != nil {
		return err
	}
	if err := rt.Open(ctx); err != nil {
		return err
	}
	defer rt.Close() // after the server: no handler calls into the runtime any more
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	log.Printf("counter listening on %s, data in %s", ln.Addr(), data)
	<-ctx.Done()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutCtx)
}
