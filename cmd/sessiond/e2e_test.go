package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sessiond/objects/natsbus"
)

// startInProcess runs sessiond in this process with args and returns its
// base URL; it stops when the test ends.
func startInProcess(t *testing.T, args ...string) string {
	t.Helper()
	pr, pw := io.Pipe()
	addr, logDone := watchLog(t, pr)
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan struct{})
	go func() {
		if err := run(ctx, append([]string{"--addr", "127.0.0.1:0", "--log-format", "json"}, args...), noEnv, io.Discard, pw); err != nil {
			t.Errorf("run: %v", err)
		}
		pw.Close()
		close(exited)
	}()
	t.Cleanup(func() { cancel(); <-exited; <-logDone })
	return "http://" + waitHealthy(t, addr, exited)
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// api sends a JSON request and decodes the answer.
func api(t *testing.T, method, url string, body any, out any, hdr ...string) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, r)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %s: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode
}

type gen struct {
	ID, Status string
	TurnID     int64 `json:"turn_id"`
	Offset     int64
}

type turn struct {
	ID      int64
	Role    string
	Status  string
	Content string
}

func waitGen(t *testing.T, base, id, gid string) gen {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var g gen
		api(t, "GET", base+"/v1/sessions/"+id+"/generations/"+gid, nil, &g)
		if g.Status != "running" && g.Status != "queued" && g.Status != "" {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation %s still %s", gid, g.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLifecycleEventsOnNATS follows a session's lifecycle with a plain NATS
// client on the embedded server's port, as another service would.
func TestLifecycleEventsOnNATS(t *testing.T) {
	natsAddr := freePort(t)
	base := startInProcess(t, "--data", t.TempDir(), "--offline-tps", "0", "--nats-listen", natsAddr)
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var subjects []string
	var payloads []map[string]any
	sub, err := nc.Subscribe("sessiond.>", func(m *nats.Msg) {
		var p map[string]any
		json.Unmarshal(m.Data, &p)
		mu.Lock()
		subjects = append(subjects, m.Subject)
		payloads = append(payloads, p)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	nc.Flush()

	var s struct{ ID string }
	api(t, "POST", base+"/v1/sessions", map[string]any{"title": "watched"}, &s)
	var res struct{ Generation gen }
	api(t, "POST", base+"/v1/sessions/"+s.ID+"/turns", map[string]any{"turns": []any{map[string]any{"role": "user", "content": "/say ok"}}, "generate": true}, &res)
	waitGen(t, base, s.ID, res.Generation.ID)
	if st := api(t, "DELETE", base+"/v1/sessions/"+s.ID, nil, nil); st != 204 {
		t.Fatalf("delete: %d", st)
	}
	p := "sessiond.session." + s.ID + "."
	want := []string{p + "created", p + "turn", p + "generation.started", p + "generation.done", p + "turn", p + "deleted"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := append([]string(nil), subjects...)
		mu.Unlock()
		if fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subjects %v\nwant %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if payloads[3]["status"] != "done" || payloads[4]["turn"].(map[string]any)["content"] != "ok" || payloads[0]["owner"] != "local" {
		t.Fatalf("payloads %v", payloads)
	}
}

// buildBinary builds sessiond once per test into a temp dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "sessiond")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running sessiond process.
type proc struct {
	cmd    *exec.Cmd
	base   string
	exited chan struct{}
}

func startBinary(t *testing.T, bin, data string, args ...string) *proc {
	t.Helper()
	return startBinaryWatching(t, bin, data, nil, args...)
}

// startBinaryWatching is startBinary with watch called on every log line
// (JSON), if not nil.
func startBinaryWatching(t *testing.T, bin, data string, watch func(line []byte), args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--addr", "127.0.0.1:0", "--data", data, "--log-format", "json"}, args...)...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var watchers []func([]byte)
	if watch != nil {
		watchers = append(watchers, watch)
	}
	addr, logDone := watchLog(t, stderr, watchers...)
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() { <-logDone; cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.exited })
	p.base = "http://" + waitHealthy(t, addr, p.exited)
	return p
}

func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// TestSIGKILLDuringGeneration kills sessiond (SIGKILL) in the middle of a
// generation: after a restart the generation is interrupted, its turn holds
// the output persisted before the kill, nothing stays "streaming", and an
// idempotent retry of the post returns the original turns.
func TestSIGKILLDuringGeneration(t *testing.T) {
	bin := buildBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startBinary(t, bin, data, "--offline-tps", "40")
	var s struct{ ID string }
	api(t, "POST", p.base+"/v1/sessions", nil, &s)
	body := map[string]any{"turns": []any{map[string]any{"role": "user", "content": "/words 5000"}}, "generate": true}
	var res struct {
		Turns      []turn
		Generation gen
	}
	if st := api(t, "POST", p.base+"/v1/sessions/"+s.ID+"/turns", body, &res, "Idempotency-Key", "once"); st != 201 {
		t.Fatalf("post: %d", st)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var page struct{ Turns []turn }
		api(t, "GET", p.base+"/v1/sessions/"+s.ID+"/turns?limit=1", nil, &page)
		if len(page.Turns) == 1 && len(page.Turns[0].Content) > 20 {
			break // some output is persisted
		}
		if time.Now().After(deadline) {
			t.Fatal("no partial output persisted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.kill(t)

	p = startBinary(t, bin, data, "--offline-tps", "40")
	var g gen
	api(t, "GET", p.base+"/v1/sessions/"+s.ID+"/generations/"+res.Generation.ID, nil, &g)
	if g.Status != "interrupted" {
		t.Fatalf("after restart the generation is %q, want interrupted", g.Status)
	}
	var page struct{ Turns []turn }
	api(t, "GET", p.base+"/v1/sessions/"+s.ID+"/turns?limit=10", nil, &page)
	a := page.Turns[len(page.Turns)-1]
	if a.Status != "interrupted" || !strings.HasPrefix(a.Content, "1 2 3 4 5 ") {
		t.Fatalf("assistant turn %+v", a)
	}
	var again struct{ Turns []turn }
	api(t, "POST", p.base+"/v1/sessions/"+s.ID+"/turns", body, &again, "Idempotency-Key", "once")
	if len(again.Turns) != 1 || again.Turns[0].ID != res.Turns[0].ID || len(page.Turns) != 2 {
		t.Fatalf("retry after restart: %+v (turns before: %d)", again, len(page.Turns))
	}
}

// TestSIGKILLBeforeFirstToken kills sessiond while a generation waits for
// its first token (an upstream that thinks): after a restart, start-up
// itself ends the generation as interrupted and publishes that, with no
// client looking at the session.
func TestSIGKILLBeforeFirstToken(t *testing.T) {
	bin := buildBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	stalled := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // no token until the test ends
		case <-r.Context().Done():
		case <-stalled:
		}
	}))
	defer upstream.Close()
	defer close(stalled)
	// Without events: no outbox is left to drain at start-up, which would
	// wake the session too.
	args := []string{"--openai-base-url", upstream.URL + "/v1", "--openai-model", "thinker", "--events=false"}
	p := startBinary(t, bin, data, args...)
	var s struct{ ID string }
	api(t, "POST", p.base+"/v1/sessions", nil, &s)
	var res struct{ Generation gen }
	body := map[string]any{"turns": []any{map[string]any{"role": "user", "content": "think"}}, "generate": true}
	if st := api(t, "POST", p.base+"/v1/sessions/"+s.ID+"/turns", body, &res); st != 201 || res.Generation.ID == "" {
		t.Fatalf("post: %d %+v", st, res)
	}
	p.kill(t)

	type recovery struct{ Sessions, Woken int }
	recovered := make(chan recovery, 1)
	p = startBinaryWatching(t, bin, data, func(line []byte) {
		var l struct {
			Msg string
			recovery
		}
		if json.Unmarshal(line, &l) == nil && l.Msg == "session: start-up recovery done" {
			recovered <- l.recovery
		}
	}, args...)
	select {
	case r := <-recovered:
		if r.Sessions != 1 || r.Woken != 1 {
			t.Fatalf("start-up recovery found %d sessions and woke %d, want the one left running", r.Sessions, r.Woken)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no start-up recovery logged")
	}
	var g gen
	api(t, "GET", p.base+"/v1/sessions/"+s.ID+"/generations/"+res.Generation.ID, nil, &g)
	if g.Status != "interrupted" {
		t.Fatalf("after restart the generation is %q, want interrupted", g.Status)
	}
	// Its event stream, from the start or from a delta a client may have
	// seen before the kill (none was saved), is its turn and its final
	// event, at an offset past any it may have streamed; resumed from
	// there, it is done.
	if g.Offset <= 1 {
		t.Fatalf("final offset %d: a client that saw a first delta, unsaved, would be told it has everything", g.Offset)
	}
	for _, after := range []string{"", "1"} {
		req, _ := http.NewRequest("GET", p.base+"/v1/sessions/"+s.ID+"/generations/"+res.Generation.ID+"/stream", nil)
		req.Header.Set("Accept", "text/event-stream")
		if after != "" {
			req.Header.Set("Last-Event-ID", after)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		stream, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(stream, []byte("event: turn")) || !bytes.Contains(stream, fmt.Appendf(nil, "event: done\nid: %d\n", g.Offset)) {
			t.Fatalf("the interrupted generation's stream after %q: %d\n%s", after, resp.StatusCode, stream)
		}
	}
	req, _ := http.NewRequest("GET", p.base+"/v1/sessions/"+s.ID+"/generations/"+res.Generation.ID+"/stream", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", strconv.FormatInt(g.Offset, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("resumed after its final event: %d, want 204", resp.StatusCode)
	}
}

// TestSIGKILLLosesNoAcknowledgedTurn posts turns from several clients and
// kills sessiond at a random moment, several times: every turn whose POST
// was answered 201 is there after the restart, in full.
func TestSIGKILLLosesNoAcknowledgedTurn(t *testing.T) {
	bin := buildBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	rounds := 4
	var acked sync.Map // content → turn id
	var sid string
	for round := range rounds {
		durability := []string{"normal", "full"}[round%2]
		p := startBinary(t, bin, data, "--durability", durability)
		if sid == "" {
			var s struct{ ID string }
			api(t, "POST", p.base+"/v1/sessions", nil, &s)
			sid = s.ID
		}
		// Everything acknowledged so far is there.
		have := allTurns(t, p.base, sid)
		acked.Range(func(k, v any) bool {
			if have[k.(string)] != v.(int64) {
				t.Fatalf("round %d: acknowledged turn %q (id %d) is missing after SIGKILL", round, k, v)
			}
			return true
		})
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for c := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 5 * time.Second}
				for i := 0; ctx.Err() == nil; i++ {
					content := fmt.Sprintf("r%d-c%d-%d", round, c, i)
					b, _ := json.Marshal(map[string]any{"turns": []any{map[string]any{"role": "user", "content": content}}})
					resp, err := client.Post(p.base+"/v1/sessions/"+sid+"/turns", "application/json", bytes.NewReader(b))
					if err != nil {
						return // killed
					}
					var res struct{ Turns []turn }
					json.NewDecoder(resp.Body).Decode(&res)
					resp.Body.Close()
					if resp.StatusCode == 201 && len(res.Turns) == 1 {
						acked.Store(content, res.Turns[0].ID)
					}
				}
			}()
		}
		time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond) // a random instant, not a wait for state
		p.kill(t)
		cancel()
		wg.Wait()
	}
	n := 0
	acked.Range(func(k, v any) bool { n++; return true })
	if n < 50 {
		t.Fatalf("only %d turns acknowledged over %d rounds: the test did not exercise much", n, rounds)
	}
	p := startBinary(t, bin, data)
	have := allTurns(t, p.base, sid)
	acked.Range(func(k, v any) bool {
		if have[k.(string)] != v.(int64) {
			t.Fatalf("acknowledged turn %q missing at the end", k)
		}
		return true
	})
	t.Logf("%d acknowledged turns over %d kills, all present", n, rounds)
}

// TestSIGKILLKeepsTheListInStep kills sessiond (SIGKILL) right after posts
// were acknowledged, while their list updates still wait in memory: after
// a restart, the list catches up by itself (each session the crash left
// with its events unpublished is woken and lists itself again), with no
// client touching the sessions.
func TestSIGKILLKeepsTheListInStep(t *testing.T) {
	bin := buildBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startBinary(t, bin, data)
	const n = 5
	ids := make([]string, n)
	for i := range ids {
		var s struct{ ID string }
		api(t, "POST", p.base+"/v1/sessions", map[string]any{"title": fmt.Sprint("session ", i)}, &s)
		ids[i] = s.ID
	}
	for i, id := range ids {
		body := map[string]any{"turns": []any{map[string]any{"role": "user", "content": fmt.Sprint("last words ", i)}}}
		if st := api(t, "POST", p.base+"/v1/sessions/"+id+"/turns", body, nil); st != 201 {
			t.Fatalf("post: %d", st)
		}
	}
	p.kill(t)
	p = startBinary(t, bin, data)
	var got map[string]string
	deadline := time.Now().Add(10 * time.Second) // a hang guard, not a figure
	for {
		var list struct {
			Sessions []struct{ ID, Preview string }
		}
		api(t, "GET", p.base+"/v1/sessions?limit=100", nil, &list)
		got = map[string]string{}
		for _, e := range list.Sessions {
			got[e.ID] = e.Preview
		}
		ok := len(got) == n
		for i, id := range ids {
			ok = ok && got[id] == fmt.Sprint("last words ", i)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the list shows %q; want each session's last words", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// allTurns pages through every turn: content → id.
func allTurns(t *testing.T, base, sid string) map[string]int64 {
	t.Helper()
	have := map[string]int64{}
	var after int64
	for {
		var page struct {
			Turns   []turn
			HasMore bool `json:"has_more"`
		}
		api(t, "GET", fmt.Sprintf("%s/v1/sessions/%s/turns?after=%d&limit=1000", base, sid, after), nil, &page)
		for _, tr := range page.Turns {
			have[tr.Content] = tr.ID
			after = tr.ID
		}
		if !page.HasMore {
			return have
		}
	}
}

// --nats-dedup-window reaches the event stream: JetStream then remembers
// event ids for that long.
func TestDedupWindowSetsTheStream(t *testing.T) {
	natsAddr := freePort(t)
	startInProcess(t, "--data", t.TempDir(), "--nats-listen", natsAddr, "--nats-dedup-window", "20s")
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, natsbus.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if d := s.CachedInfo().Config.Duplicates; d != 20*time.Second {
		t.Fatalf("stream's duplicate window %v, want 20s", d)
	}
}

// API paths get the API's JSON answers whatever their shape: no HTML
// redirect for a "//" or "/./" (a ServeMux's); and /healthz answers HEAD
// as GET. (Other paths are the UI's pages.)
func TestOddPathsGetJSONErrors(t *testing.T) {
	base := startInProcess(t, "--data", t.TempDir())
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/v1//sessions", "/v1/./sessions", "/v1/sessions/../sessions", "/v1/sessions/"} {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.URL.Opaque = path // as sent, not cleaned by the client
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error struct{ Code string } }
		derr := json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode >= 300 && resp.StatusCode < 400 || derr != nil || (resp.StatusCode >= 400 && body.Error.Code == "") {
			t.Errorf("GET %s: %d %q (decode: %v)", path, resp.StatusCode, resp.Header.Get("Content-Type"), derr)
		}
	}
	resp, err := client.Head(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HEAD /healthz: %d", resp.StatusCode)
	}
}
