package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"sessiond/objects"
	"sessiond/web/webtest"
)

// In-process counterparts of cmd/loadgen's post-turns and get-turns, for
// CPU profiles of the request path (go test -bench . -cpuprofile). The
// client shares the process, so the figures of record come from loadgen;
// these show where the server's time goes. Events are off (no bus).

// benchClient is a keep-alive client with room for every parallel worker.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}}
}

func benchSessions(b *testing.B, s *webtest.Server, hc *http.Client, n int) []string {
	b.Helper()
	ids := make([]string, n)
	for i := range ids {
		resp, err := hc.Post(s.URL+"/v1/sessions", "application/json", bytes.NewReader([]byte(`{}`)))
		if err != nil {
			b.Fatal(err)
		}
		var sess struct{ ID string }
		json.NewDecoder(resp.Body).Decode(&sess)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("create: %d", resp.StatusCode)
		}
		ids[i] = sess.ID
	}
	return ids
}

func benchDo(b *testing.B, hc *http.Client, method, url string, body []byte, want int) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(context.Background(), method, url, r)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		b.Error(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Errorf("%s %s: %d", method, url, resp.StatusCode)
	}
}

// BenchmarkPostTurn posts one user turn per op from 64 goroutines, spread
// over 1 or 1,000 sessions, in both durability modes.
func BenchmarkPostTurn(b *testing.B) {
	parent := b // owns the servers: a sub-benchmark's cleanups run after every round of b.N
	body := []byte(`{"turns":[{"role":"user","content":"hello, this is a user turn of a load test"}]}`)
	for _, d := range []objects.Durability{objects.DurabilityNormal, objects.DurabilityFull} {
		for _, sessions := range []int{1, 1000} {
			var s *webtest.Server // set up once, on first use, not once per round
			var ids []string
			hc := benchClient()
			b.Run(fmt.Sprintf("durability=%s/sessions=%d", d, sessions), func(b *testing.B) {
				if s == nil {
					s = webtest.New(parent, &webtest.Options{Runtime: func(rt *objects.Runtime) { rt.Durability = d }})
					ids = benchSessions(parent, s, hc, sessions)
				}
				var next atomic.Int64
				b.SetParallelism(32) // 64 goroutines on 2 CPUs
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := next.Add(1)
						benchDo(b, hc, "POST", s.URL+"/v1/sessions/"+ids[int(i*7919)%len(ids)]+"/turns", body, http.StatusCreated)
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			})
		}
	}
}

// BenchmarkGetTurns reads the newest 50 turns of sessions of growing
// length: the cost per op must not grow with the length.
func BenchmarkGetTurns(b *testing.B) {
	parent := b // owns the servers: a sub-benchmark's cleanups run after every round of b.N
	for _, n := range []int{100, 10000} {
		var url string // set up once, on first use, not once per round
		hc := benchClient()
		b.Run(fmt.Sprintf("turns=%d", n), func(b *testing.B) {
			if url == "" {
				url = prefillSession(parent, hc, n)
			}
			for b.Loop() {
				benchDo(b, hc, "GET", url, nil, http.StatusOK)
			}
		})
	}
}

// prefillSession starts a server with one session of n turns and returns
// the URL of its newest 50.
func prefillSession(b *testing.B, hc *http.Client, n int) string {
	s := webtest.New(b, nil)
	id := benchSessions(b, s, hc, 1)[0]
	turns := make([]map[string]string, 100)
	for i := range turns {
		turns[i] = map[string]string{"role": "user", "content": "a prefilled user turn of about a hundred bytes, so that pages have a realistic size: lorem ipsum."}
	}
	page, _ := json.Marshal(map[string]any{"turns": turns})
	for range n / 100 {
		benchDo(b, hc, "POST", s.URL+"/v1/sessions/"+id+"/turns", page, http.StatusCreated)
	}
	return s.URL + "/v1/sessions/" + id + "/turns?limit=50"
}
