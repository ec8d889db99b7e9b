package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The raw fan-out server is the floor that ws-fanout -raw measures sessiond
// against: plain coder/websocket, no sessiond code, in a process of its own
// (this binary, re-run with the hidden subcommand rawServerCommand). Each
// connection has a writer goroutine fed by a channel, the usual hub of a Go
// WebSocket server; POST /start?tokens=N&rate=R stamps N deltas at R per
// second and sends each to every connection, then a done message. GET /echo
// is a WebSocket that sends every message back (the floor of loadgen big).
const rawServerCommand = "raw-ws-server"

// rawServer runs the raw fan-out server until ctx ends. It prints its
// address on stdout.
func rawServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(rawServerCommand, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	conns := make(map[chan []byte]struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ch := make(chan []byte, 1024)
		mu.Lock()
		conns[ch] = struct{}{}
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(conns, ch)
			mu.Unlock()
		}()
		rctx := c.CloseRead(r.Context())
		if err := c.Write(rctx, websocket.MessageText, []byte(`{"type":"ready"}`)); err != nil {
			return
		}
		for {
			select {
			case <-rctx.Done():
				return
			case m := <-ch:
				if err := c.Write(rctx, websocket.MessageText, m); err != nil {
					return
				}
			}
		}
	})
	// The floor of loadgen big: each message comes back as it was.
	mux.HandleFunc("GET /echo", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(64 << 20)
		for {
			typ, m, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, m); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, r *http.Request) {
		tokens, _ := strconv.Atoi(r.URL.Query().Get("tokens"))
		rate, _ := strconv.ParseFloat(r.URL.Query().Get("rate"), 64)
		if tokens <= 0 || !(rate > 0) {
			http.Error(w, "tokens and rate must be positive", http.StatusBadRequest)
			return
		}
		mu.Lock()
		targets := make([]chan []byte, 0, len(conns))
		for ch := range conns {
			targets = append(targets, ch)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		go func() {
			send := func(m []byte) {
				for _, ch := range targets {
					select {
					case ch <- m:
					default: // a viewer 1,024 messages behind misses this one
					}
				}
			}
			tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
			defer tick.Stop()
			for i := range tokens {
				if i > 0 {
					<-tick.C
				}
				send(fmt.Appendf(nil, `{"type":"delta","generation":"raw","offset":%d,"text":" t%d"}`, i+1, time.Now().UnixNano()))
			}
			send([]byte(`{"type":"done","generation":"raw"}`))
		}()
	})
	return serveFloor(ctx, ln, mux, os.Stdout)
}

// serveFloor serves h on ln until ctx ends, after printing ln's address on
// stdout, the line startRawProc waits for.
func serveFloor(ctx context.Context, ln net.Listener, h http.Handler, stdout io.Writer) error {
	srv := &http.Server{Handler: h}
	fmt.Fprintln(stdout, ln.Addr().String())
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// rawTarget is a running raw fan-out server, a child process.
type rawTarget struct {
	addr string
	cmd  *exec.Cmd
}

// startRawServer runs the raw fan-out server on cpus (nil: any).
func startRawServer(ctx context.Context, cpus []int) (*rawTarget, error) {
	return startRawProc(ctx, cpus, rawServerCommand)
}

// startRawProc runs this binary's hidden subcommand (a floor server) with
// args on cpus (nil: any) and reads the address it prints.
func startRawProc(ctx context.Context, cpus []int, args ...string) (*rawTarget, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := startOn(cmd, cpus); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("raw server: read its address: %w", err)
	}
	return &rawTarget{addr: strings.TrimSpace(line), cmd: cmd}, nil
}

func (r *rawTarget) close() {
	r.cmd.Process.Kill()
	r.cmd.Wait()
}

// dial opens one viewer and waits for its ready message.
func (r *rawTarget) dial(ctx context.Context) (*websocket.Conn, error) {
	c, _, err := websocket.Dial(ctx, "ws://"+r.addr+"/ws", nil)
	if err != nil {
		return nil, err
	}
	if _, _, err := c.Read(ctx); err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("raw server: wait for ready: %w", err)
	}
	return c, nil
}

func (r *rawTarget) start(ctx context.Context, tokens int, rate float64) error {
	req, err := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("http://%s/start?tokens=%d&rate=%g", r.addr, tokens, rate), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("raw server: start: %s", resp.Status)
	}
	return nil
}
