package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// upstream is a fake OpenAI-compatible chat completions endpoint. It
// streams tokens at a fixed rate; the text of each token is "t<unix nano> "
// with the wall-clock time just before the chunk was written, so a client
// on the same machine can tell how long the chunk took to reach it.
type upstream struct {
	tokens   int           // tokens per completion
	interval time.Duration // between two tokens
	srv      *http.Server
	ln       net.Listener
	streams  atomic.Int64 // completions served
}

// startUpstream listens on addr (host:port, port 0 for any).
func startUpstream(addr string, tokens int, rate float64) (*upstream, error) {
	if tokens <= 0 || rate <= 0 {
		return nil, errors.New("upstream: tokens and rate must be positive")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	u := &upstream{tokens: tokens, interval: time.Duration(float64(time.Second) / rate), ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", u.complete)
	u.srv = &http.Server{Handler: mux}
	go u.srv.Serve(ln)
	return u, nil
}

// baseURL is what sessiond's --openai-base-url gets.
func (u *upstream) baseURL() string { return "http://" + u.ln.Addr().String() + "/v1" }

func (u *upstream) close() { u.srv.Close() }

// serverArgs are the flags that point sessiond at u.
func (u *upstream) serverArgs() []string {
	return []string{"--openai-base-url", u.baseURL(), "--openai-model", "fake"}
}

const chunkHead = `{"id":"chatcmpl-load","object":"chat.completion.chunk","created":1,"model":"fake","choices":[{"index":0,"delta":`

// complete streams one completion in the OpenAI wire format.
func (u *upstream) complete(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	u.streams.Add(1)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	var buf bytes.Buffer
	writeChunk := func(delta, finish string) bool {
		buf.Reset()
		buf.WriteString("data: " + chunkHead + delta + `,"finish_reason":` + finish + "}]}\n\n")
		_, err := w.Write(buf.Bytes())
		fl.Flush()
		return err == nil
	}
	if !writeChunk(`{"role":"assistant","content":""}`, "null") {
		return
	}
	tick := time.NewTicker(u.interval)
	defer tick.Stop()
	for range u.tokens {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
		// The stamp is taken last, just before the write.
		if !writeChunk(`{"content":"t`+strconv.FormatInt(time.Now().UnixNano(), 10)+` "}`, "null") {
			return
		}
	}
	writeChunk(`{}`, `"stop"`)
	fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-load\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"fake\",\"choices\":[],"+
		"\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\ndata: [DONE]\n\n", u.tokens, u.tokens+1)
	fl.Flush()
}

// stamps calls fn with the send time of every "t<unix nano>" token in text.
func stamps(text string, fn func(sent int64)) int {
	n := 0
	for _, f := range strings.Fields(text) {
		if len(f) < 2 || f[0] != 't' {
			continue
		}
		if ns, err := strconv.ParseInt(f[1:], 10, 64); err == nil {
			fn(ns)
			n++
		}
	}
	return n
}

// upstreamFlags are the fake upstream's settings shared by subcommands.
type upstreamFlags struct {
	addr   string
	rate   float64
	tokens int
}

func (f *upstreamFlags) register(fs *flag.FlagSet, tokens int, rate float64) {
	fs.StringVar(&f.addr, "upstream-addr", "127.0.0.1:0", "listen address of the fake OpenAI-compatible upstream (with -url, start sessiond with --openai-base-url http://ADDR/v1 --openai-model fake)")
	fs.Float64Var(&f.rate, "rate", rate, "tokens per second of each fake-upstream completion")
	fs.IntVar(&f.tokens, "tokens", tokens, "tokens per fake-upstream completion (0: as many as the run needs)")
}

// start starts the fake upstream from the flags.
func (f *upstreamFlags) start() (*upstream, error) { return startUpstream(f.addr, f.tokens, f.rate) }
