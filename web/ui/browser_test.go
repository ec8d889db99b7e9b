package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// chromiumPath is Debian's chromium package; .ci/run installs it.
const chromiumPath = "/usr/bin/chromium"

// screenshotDirEnv names a folder to keep the screenshots in (default: the
// test's temporary folder, which go test removes).
const screenshotDirEnv = "SESSIOND_UI_SCREENSHOTS"

// offlineTPS slows the offline model so that streaming can be watched:
// /words 40 takes two seconds.
const offlineTPS = 20

// waitTimeout bounds each wait for the page to reach a state.
const waitTimeout = 20 * time.Second

// TestBrowser drives the page in headless Chromium against a real sessiond
// process, built from this module.
func TestBrowser(t *testing.T) {
	requireChromium(t)
	bin := buildSessiond(t)
	srv := startSessiond(t, bin)
	base := pageURL(t, srv)
	b := newBrowser(t)

	var sessionID string
	t.Run("StreamReply", func(t *testing.T) {
		tab := b.open(t, base+"/")
		tab.click("#new-session")
		tab.waitFor("the new session opens, connected", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
		sessionID = strings.TrimPrefix(eval[string](tab, `location.pathname`), "/s/")
		tab.watch(words(40), 0)
		tab.send("/words 40")
		tab.waitFor("the user turn", `!!document.querySelector('#transcript li.turn[data-role="user"]')`)
		tab.waitFor("a partial reply while it streams",
			`(() => { const t = document.querySelector('#transcript li.turn[data-role="assistant"][data-status="streaming"] .content');
			          return t && t.textContent.split(" ").length >= 5; })()`)
		tab.waitFor("the reply completes", lastAssistant(`t.dataset.status === "complete"`))
		if got, want := tab.lastAssistantText(), words(40); got != want {
			t.Fatalf("reply=%q, want %q", got, want)
		}
		w := tab.watched()
		if len(w.Bad) > 0 {
			t.Fatalf("the reply showed text that is not a prefix of the answer: %q", w.Bad)
		}
		if w.States < 5 || !w.SawStreaming {
			t.Fatalf("saw %d states of the reply (streaming: %v); want it to grow token by token", w.States, w.SawStreaming)
		}
		if got := eval[string](tab, `document.querySelector('#transcript li.turn[data-role="assistant"] .usage').textContent`); !strings.Contains(got, "tokens") {
			t.Errorf("usage=%q, want a token count", got)
		}
		if got := eval[string](tab, `document.querySelector('#composer-input').value`); got != "" {
			t.Errorf("composer holds %q after sending, want it empty", got)
		}
	})

	t.Run("ReloadMidReply", func(t *testing.T) {
		if sessionID == "" {
			t.Skip("needs StreamReply's session")
		}
		tab := b.open(t, base+"/s/"+sessionID)
		tab.waitFor("connected", `document.querySelector("#conn").dataset.state === "open"`)
		last := eval[int](tab, `Math.max(0, ...[...document.querySelectorAll("#transcript li.turn")].map(e => +e.dataset.id))`)
		// Five seconds of reply: the reload comes early in it, with time to spare.
		want := words(100)
		tab.send("/words 100")
		tab.waitFor("the start of the reply",
			lastAssistant(fmt.Sprintf(`+t.dataset.id > %d && t.dataset.status === "streaming" && t.querySelector(".content").textContent.split(" ").length >= 12`, last)))
		tab.do(chromedp.Reload())
		tab.watch(want, last)
		tab.waitFor("the reply completes after the reload", lastAssistant(fmt.Sprintf(`+t.dataset.id > %d && t.dataset.status === "complete"`, last)))
		if got := tab.lastAssistantText(); got != want {
			t.Fatalf("reply after reload=%q, want %q", got, want)
		}
		w := tab.watched()
		if len(w.Bad) > 0 {
			t.Fatalf("after the reload the reply showed text that is not a prefix of the answer: %q", w.Bad)
		}
		if !w.SawStreaming {
			t.Fatal("the reply had finished before the page came back: the reload was not mid-reply")
		}
		// Two questions, two answers, nothing doubled.
		if got := eval[[]string](tab, `[...document.querySelectorAll("#transcript li.turn")].map(e => e.dataset.role)`); strings.Join(got, ",") != "user,assistant,user,assistant" {
			t.Fatalf("turns=%v, want user,assistant,user,assistant", got)
		}
	})

	t.Run("SecondPage", func(t *testing.T) {
		if sessionID == "" {
			t.Skip("needs StreamReply's session")
		}
		a := b.open(t, base+"/s/"+sessionID)
		other := b.open(t, base+"/s/"+sessionID)
		a.waitFor("page A connected", `document.querySelector("#conn").dataset.state === "open"`)
		other.waitFor("page B connected", `document.querySelector("#conn").dataset.state === "open"`)
		a.send("/say hello from A")
		other.waitFor("A's message on page B", `[...document.querySelectorAll('#transcript li.turn[data-role="user"] .content')].some(e => e.textContent === "/say hello from A")`)
		other.waitFor("the reply on page B", lastAssistant(`t.dataset.status === "complete" && t.querySelector(".content").textContent === "hello from A"`))
	})

	t.Run("StopReply", func(t *testing.T) {
		tab := b.open(t, base+"/")
		tab.click("#new-session")
		tab.waitFor("connected", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
		tab.send("/words 200")
		tab.waitFor("the reply streams, with Stop shown",
			lastAssistant(`t.dataset.status === "streaming" && t.querySelector(".content").textContent.split(" ").length >= 5`)+` && !document.querySelector("#stop").hidden`)
		tab.click("#stop")
		tab.waitFor("the reply is cancelled", lastAssistant(`t.dataset.status === "cancelled"`))
		got := tab.lastAssistantText()
		if full := words(200); got == "" || got == full || !strings.HasPrefix(full, got) {
			t.Fatalf("cancelled reply=%q, want a proper prefix of %q", got, full)
		}
		if got := eval[string](tab, lastAssistantExpr+`.querySelector(".badge").textContent`); got != "cancelled" {
			t.Errorf("badge=%q, want cancelled", got)
		}
		tab.waitFor("Stop hidden again", `document.querySelector("#stop").hidden`)
	})

	t.Run("MarkdownToolsErrors", func(t *testing.T) {
		tab := b.open(t, base+"/")
		tab.click("#new-session")
		tab.waitFor("connected", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
		tab.send("/say Some **Markdown**, `inline code` and <img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>\n\n```go\nfmt.Println(\"<b>hi</b>\")\n```")
		tab.waitFor("the Markdown reply", lastAssistant(`t.dataset.status === "complete"`))
		if got := eval[string](tab, lastAssistantExpr+`.querySelector(".content strong").textContent`); got != "Markdown" {
			t.Errorf("bold=%q, want Markdown", got)
		}
		if got := eval[string](tab, lastAssistantExpr+`.querySelector(".content pre code").textContent`); got != `fmt.Println("<b>hi</b>")` {
			t.Errorf("code block=%q", got)
		}
		if n := eval[int](tab, `document.querySelectorAll("#transcript img, #transcript script, #transcript pre b").length`); n != 0 {
			t.Errorf("model output made %d img/script/b elements, want it shown as text", n)
		}
		if got := eval[string](tab, `String(window.__xss)`); got != "undefined" {
			t.Errorf("window.__xss=%s: model output ran script", got)
		}

		tab.send(`/tool read_file {"path":"a.go"}`)
		tab.waitFor("the tool call", lastAssistant(`t.dataset.status === "complete" && !!t.querySelector("details.tool-call")`))
		if got := eval[string](tab, lastAssistantExpr+`.querySelector("details.tool-call summary").textContent`); !strings.Contains(got, "read_file") {
			t.Errorf("tool call summary=%q, want read_file", got)
		}
		if eval[bool](tab, lastAssistantExpr+`.querySelector("details.tool-call").open`) {
			t.Error("tool call shown open, want collapsed")
		}
		tab.click(`#transcript li.turn:last-child details.tool-call summary`)
		tab.waitFor("the tool call opens", lastAssistant(`t.querySelector("details.tool-call").open && t.querySelector("details.tool-call pre").textContent.includes('"a.go"')`))

		tab.send("/fail rate_limited")
		tab.waitFor("the failed turn with the server's message",
			lastAssistant(`t.dataset.status === "failed" && t.querySelector(".turn-error").textContent.includes("rate_limited")`))

		tab.screenshot("main.png")

		tab.do(colorScheme("dark"))
		tab.waitFor("the dark theme", `getComputedStyle(document.body).backgroundColor === "rgb(21, 24, 29)"`)
		tab.screenshot("main-dark.png")
		tab.do(colorScheme(""))

		tab.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
		tab.waitFor("the phone layout, the list slid away",
			`getComputedStyle(document.querySelector("#menu")).display !== "none" && document.querySelector("#sidebar").getBoundingClientRect().right <= 0`)
		tab.screenshot("phone.png")
		tab.click("#menu")
		tab.waitFor("the list slides in, focused", `document.querySelector("#sidebar").getBoundingClientRect().left >= 0 && document.querySelector("#sidebar").contains(document.activeElement)`)
		tab.do(chromedp.KeyEvent(kb.Escape))
		tab.waitFor("Escape closes it", `document.querySelector("#sidebar").getBoundingClientRect().right <= 0 && document.activeElement === document.querySelector("#menu")`)
	})

	t.Run("RegenerateAndFork", func(t *testing.T) {
		tab := b.open(t, base+"/")
		tab.click("#new-session")
		tab.waitFor("connected", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
		tab.send("/words 3")
		tab.waitFor("the reply", lastAssistant(`t.dataset.status === "complete"`))
		first := eval[int](tab, `+`+lastAssistantExpr+`.dataset.id`)
		// The answer of the regenerate's POST comes late, after the short
		// reply has ended over the socket (a race a slow network or a
		// busy server makes common).
		tab.do(lateTurnPosts, chromedp.Reload())
		tab.waitFor("the page again", `document.querySelector("#conn").dataset.state === "open" && `+lastAssistant(`t.dataset.status === "complete"`))
		tab.click(`#transcript li.turn[data-role="assistant"] button[data-action="regenerate"]`)
		tab.waitFor("a new reply in place of the old one", lastAssistant(fmt.Sprintf(`+t.dataset.id > %d && t.dataset.status === "complete"`, first)))
		if got := eval[[]string](tab, `[...document.querySelectorAll("#transcript li.turn")].map(e => e.dataset.role)`); strings.Join(got, ",") != "user,assistant" {
			t.Fatalf("turns after regenerate=%v, want user,assistant", got)
		}
		if got := tab.lastAssistantText(); got != words(3) {
			t.Fatalf("regenerated reply=%q, want %q", got, words(3))
		}
		// Stop goes with the reply, even when the reply's end came before
		// the answer of the request that started it (a short one often
		// does), and stays gone once that answer is in.
		tab.waitFor("the regenerate's answer", `window.lateTurnAnswers === 1`)
		if !evalAsync[bool](tab, `new Promise((ok) => requestAnimationFrame(() => ok(document.querySelector("#stop").hidden)))`) {
			t.Error("Stop shown after the reply ended")
		}
		// Another client goes on from the first reply, on the branch the
		// regenerate left: the page shows that branch, now the head,
		// not the new turn under the regenerated reply.
		sid := strings.TrimPrefix(eval[string](tab, `location.pathname`), "/s/")
		postJSON(t, base+"/v1/sessions/"+sid+"/turns", map[string]any{"parent_id": first, "turns": []any{map[string]any{"role": "user", "content": "from elsewhere"}}})
		tab.waitFor("the other branch", fmt.Sprintf(`(() => { const ts = [...document.querySelectorAll("#transcript li.turn")];
			return ts.length === 3 && +ts[1].dataset.id === %d && ts[2].querySelector(".content").textContent === "from elsewhere"; })()`, first))
		from := eval[string](tab, `location.pathname`)
		tab.click(`#transcript li.turn[data-role="assistant"] button[data-action="fork"]`)
		tab.waitFor("the fork opens", fmt.Sprintf(`location.pathname.startsWith("/s/") && location.pathname !== %q && document.querySelector("#conn").dataset.state === "open"`, from)+
			` && `+lastAssistant(`t.querySelector(".content").textContent === "1 2 3"`))
		// Its entry in the list says how it ends, as the server's does.
		fork := strings.TrimPrefix(eval[string](tab, `location.pathname`), "/s/")
		if got := eval[string](tab, fmt.Sprintf(`document.querySelector('#session-list a[data-id=%q] .s-preview').textContent`, fork)); got != "1 2 3" {
			t.Errorf("the fork's preview in the list=%q, want %q", got, "1 2 3")
		}
	})

	t.Run("OpenByURL", func(t *testing.T) {
		id := createSession(t, srv, "Opened by URL", "/say Resumed **here**")
		tab := b.open(t, base+"/s/"+id)
		tab.waitFor("the session's title and turns",
			`document.querySelector("#session-title").textContent === "Opened by URL" && `+lastAssistant(`t.dataset.status === "complete" && t.querySelector(".content").textContent === "Resumed here"`))
		tab.waitFor("the session marked in the list", fmt.Sprintf(`document.querySelector('#session-list a[aria-current="page"]')?.dataset.id === %q`, id))
		if got := eval[string](tab, fmt.Sprintf(`document.querySelector('#session-list a[data-id=%q] .s-title').textContent`, id)); got != "Opened by URL" {
			t.Errorf("list title=%q", got)
		}

		missing := b.open(t, base+"/s/no-such-session")
		missing.waitFor("an error with the server's message", `!document.querySelector("#banner").hidden && /not.found/i.test(document.querySelector("#banner").textContent)`)
		// A link cut inside a character: the same answer, no uncaught
		// error (b.open fails the test on one).
		cut := b.open(t, base+"/s/%E2%82")
		cut.waitFor("no such session", `!document.querySelector("#banner").hidden && /No such session/.test(document.querySelector("#banner").textContent)`)
		// Opening a session that exists clears that error.
		cut.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`history.pushState(null, "", "/s/%s"); dispatchEvent(new PopStateEvent("popstate"))`, id)))
		cut.waitFor("the session, and the error gone", `document.querySelector("#session-title").textContent === "Opened by URL" && document.querySelector("#banner").hidden`)
	})

	t.Run("RenameDelete", func(t *testing.T) {
		tab := b.open(t, base+"/")
		tab.click("#new-session")
		tab.waitFor("connected", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
		id := strings.TrimPrefix(eval[string](tab, `location.pathname`), "/s/")
		tab.click("#rename")
		tab.waitFor("the rename dialog, focused", `document.querySelector("#dialog").open && document.activeElement === document.querySelector("#dialog-input")`)
		tab.do(chromedp.SendKeys(chromedp.CSS("#dialog-input"), "Renamed <b>here</b>"+kb.Enter))
		tab.waitFor("the new title in the header and the list", fmt.Sprintf(
			`document.querySelector("#session-title").textContent === "Renamed <b>here</b>" && document.querySelector('#session-list a[data-id=%q] .s-title').textContent === "Renamed <b>here</b>"`, id))
		// A refused rename shows why; the next one that works clears it.
		tab.click("#rename")
		tab.waitFor("the rename dialog", `document.querySelector("#dialog").open`)
		tab.do(chromedp.Evaluate[chromedp.Void](`document.querySelector("#dialog-input").value = "x".repeat(5000)`))
		tab.click("#dialog-ok")
		tab.waitFor("the refusal", `!document.querySelector("#banner").hidden && /Could not rename/.test(document.querySelector("#banner").textContent)`)
		tab.click("#rename")
		tab.waitFor("the rename dialog", `document.querySelector("#dialog").open`)
		tab.do(chromedp.Evaluate[chromedp.Void](`document.querySelector("#dialog-input").value = "Renamed again"`))
		tab.click("#dialog-ok")
		tab.waitFor("the new title, the refusal gone", `document.querySelector("#session-title").textContent === "Renamed again" && document.querySelector("#banner").hidden`)
		// Titles are anyone's text: a bidi control in one (U+202E) stays
		// inside it, with the title's direction its own.
		if !eval[bool](tab, `[document.querySelector("#session-title"), ...document.querySelectorAll("#session-list .s-title, #session-list .s-preview")].every(e => e.dir === "auto" && getComputedStyle(e).unicodeBidi === "isolate")`) {
			t.Error("a title or preview is not bidi-isolated")
		}
		tab.click("#delete")
		tab.waitFor("the delete dialog", `document.querySelector("#dialog").open`)
		tab.click("#dialog-ok")
		tab.waitFor("back at the start, without the session", fmt.Sprintf(`location.pathname === "/" && !document.querySelector('#session-list a[data-id=%q]')`, id))
		res, err := http.Get(srv.URL + "/v1/sessions/" + id)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Fatalf("GET the deleted session: %s, want 404", res.Status)
		}
	})

	t.Run("ListAcrossTabs", func(t *testing.T) {
		// Two tabs of one browser: a session one of them creates, renames
		// or deletes shows in the other's list at once, not when that tab
		// next comes into view.
		a := b.open(t, base+"/")
		other := b.open(t, base+"/")
		other.waitFor("the other tab's list", `!!document.querySelector("#session-list li")`)
		a.click("#new-session")
		a.waitFor("connected", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
		id := strings.TrimPrefix(eval[string](a, `location.pathname`), "/s/")
		entry := fmt.Sprintf(`document.querySelector('#session-list a[data-id=%q]')`, id)
		other.waitFor("the new session in the other tab's list", `!!`+entry)
		other.click(fmt.Sprintf(`#session-list a[data-id=%q]`, id))
		other.waitFor("the session open in the other tab", fmt.Sprintf(`location.pathname === "/s/%s" && document.querySelector("#conn").dataset.state === "open"`, id))
		a.click("#rename")
		a.waitFor("the rename dialog", `document.querySelector("#dialog").open && document.activeElement === document.querySelector("#dialog-input")`)
		a.do(chromedp.SendKeys(chromedp.CSS("#dialog-input"), "Renamed elsewhere"+kb.Enter))
		other.waitFor("the new title in the other tab's list and header",
			entry+`?.querySelector(".s-title").textContent === "Renamed elsewhere" && document.querySelector("#session-title").textContent === "Renamed elsewhere"`)
		a.click("#delete")
		a.waitFor("the delete dialog", `document.querySelector("#dialog").open`)
		a.click("#dialog-ok")
		other.waitFor("the session gone from the other tab's list", `!!document.querySelector("#session-list li") && !`+entry)
	})

	t.Run("SendWhileOpening", func(t *testing.T) {
		// Two messages typed at once on the start page: the second waits
		// for the session the first creates, and both go there, in order.
		before := listIDs(t, srv)
		tab := b.open(t, base+"/")
		first := "/say " + strings.Repeat("a", 53) + "😀 and more"
		second := "/say second"
		arg, _ := json.Marshal([]string{first, second})
		tab.do(chromedp.Evaluate[chromedp.Void](`for (const m of ` + string(arg) + `) {
			document.querySelector("#composer-input").value = m;
			document.querySelector("#composer").requestSubmit();
		}`))
		tab.waitFor("both replies", `[...document.querySelectorAll('#transcript li.turn[data-role="assistant"][data-status="complete"]')].length === 2`)
		after := listIDs(t, srv)
		if len(after) != len(before)+1 {
			t.Fatalf("sessions before %d, after %d: want one more", len(before), len(after))
		}
		id := strings.TrimPrefix(eval[string](tab, `location.pathname`), "/s/")
		if got, want := userTurns(t, srv, id), []string{first, second}; !slices.Equal(got, want) {
			t.Fatalf("user turns of %s=%q, want %q", id, got, want)
		}
		// The title is the first message cut where a reader would cut
		// it, not inside the emoji.
		if got, want := eval[string](tab, `document.querySelector("#session-title").textContent`), "/say "+strings.Repeat("a", 53)+"😀…"; got != want {
			t.Errorf("title=%q, want %q", got, want)
		}
		// A first line of long emoji sequences: the title is cut to the
		// server's 1 KiB, between them, and the message goes.
		family := "👨\u200d👩\u200d👧\u200d👦" // 25 bytes, 11 UTF-16 units, one character
		fam := b.open(t, base+"/")
		arg, _ = json.Marshal("/say " + strings.Repeat(family, 50)) // set, not typed: keys typed lose the joiners
		fam.do(chromedp.Evaluate[chromedp.Void](`document.querySelector("#composer-input").value = ` + string(arg) + `;
			document.querySelector("#composer").requestSubmit();`))
		fam.waitFor("the reply", lastAssistant(`t.dataset.status === "complete"`))
		title := eval[string](fam, `document.querySelector("#session-title").textContent`)
		if rest, ok := strings.CutSuffix(title, "…"); !ok || len(title) > 1024 || strings.ReplaceAll(strings.TrimPrefix(rest, "/say "), family, "") != "" {
			t.Errorf("title of %d bytes %q: want whole family emoji, cut with … within 1024 bytes", len(title), title)
		}

		// A session picked in the list and written to before it loaded.
		other := createSession(t, srv, "Picked", "/say picked")
		tab.do(chromedp.Reload())
		tab.waitFor("the list", fmt.Sprintf(`!!document.querySelector('#session-list a[data-id=%q]')`, other))
		tab.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector('#session-list a[data-id=%q]').click();
			document.querySelector("#composer-input").value = "/say right away";
			document.querySelector("#composer").requestSubmit();`, other)))
		tab.waitFor("the reply in the picked session", fmt.Sprintf(`location.pathname === "/s/%s" && `, other)+lastAssistant(`t.dataset.status === "complete" && t.querySelector(".content").textContent === "right away"`))
		if got, want := userTurns(t, srv, other), []string{"/say picked", "/say right away"}; !slices.Equal(got, want) {
			t.Fatalf("user turns of %s=%q, want %q", other, got, want)
		}
	})

	t.Run("EarlierTurns", func(t *testing.T) {
		id := createSession(t, srv, "Long", "/say first reply")
		for batch := range 2 { // at most 100 turns a request
			turns := make([]map[string]any, 60)
			for i := range turns {
				turns[i] = map[string]any{"role": "user", "content": fmt.Sprintf("message %d", batch*60+i+1)}
			}
			postJSON(t, srv.URL+"/v1/sessions/"+id+"/turns", map[string]any{"turns": turns, "generate": false})
		}
		tab := b.open(t, base+"/s/"+id)
		tab.waitFor("the newest page of turns", `document.querySelectorAll("#transcript li.turn").length === 100 && !document.querySelector("#older").hidden`)
		tab.click("#older")
		tab.waitFor("every turn, the oldest first", `document.querySelectorAll("#transcript li.turn").length === 122 && document.querySelector("#older").hidden && document.querySelector("#transcript li.turn .content").textContent === "/say first reply"`)
	})

	t.Run("NetworkLoss", func(t *testing.T) {
		link := newCuttableLink(t, base)
		tab := b.open(t, link.URL+"/")
		tab.replyAcrossOutage(link.cut,
			`document.querySelector("#conn").dataset.state === "resuming" && /connection lost/i.test(document.querySelector("#conn").textContent)`,
			link.restore)
	})

	t.Run("OlderSessionsStay", func(t *testing.T) {
		// Sessions loaded with "Show older sessions" stay listed when the
		// list is read again (a deletion, another tab, the page coming
		// back into view): each read showed the newest 50 alone.
		for range 55 {
			postJSON(t, srv.URL+"/v1/sessions", map[string]any{"title": "many"})
		}
		tab := b.open(t, base+"/")
		tab.waitFor("the newest page", `document.querySelectorAll("#session-list li").length === 50 && !document.querySelector("#more-sessions").hidden`)
		tab.click("#more-sessions")
		tab.waitFor("the older ones too", `document.querySelectorAll("#session-list li").length > 50`)
		n := eval[int](tab, `document.querySelectorAll("#session-list li").length`)
		tab.do(chromedp.Evaluate[chromedp.Void](`document.dispatchEvent(new Event("visibilitychange"))`))
		tab.click("#new-session")
		tab.waitFor("the new session, and every one shown before", fmt.Sprintf(`location.pathname.startsWith("/s/") && document.querySelectorAll("#session-list li").length === %d`, n+1))
		// The read the visibility change began may have been answered
		// before the new session was made: the list ends with it anyway.
		time.Sleep(500 * time.Millisecond)
		tab.waitFor("every session after the reads", fmt.Sprintf(`document.querySelectorAll("#session-list li").length === %d`, n+1))
	})

	t.Run("SendAcrossLongOutage", func(t *testing.T) {
		// A message sent while the server is out of reach for longer
		// than a few retries is sent, once, when it is back: the page
		// gave up after five (about 15 s) and the message was lost.
		link := newCuttableLink(t, base)
		tab := b.open(t, link.URL+"/")
		tab.click("#new-session")
		tab.waitFor("connected", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
		id := strings.TrimPrefix(eval[string](tab, `location.pathname`), "/s/")
		link.cut()
		tab.waitFor("the connection is lost", `document.querySelector("#conn").dataset.state === "resuming"`)
		tab.send("/say sent while away")
		time.Sleep(20 * time.Second) // past the five tries
		link.restore()
		tab.waitFor("the reply", lastAssistant(`t.dataset.status === "complete" && t.textContent.includes("sent while away")`))
		if got := userTurns(t, srv, id); !slices.Equal(got, []string{"/say sent while away"}) {
			t.Fatalf("the session's user turns: %q, want the message once", got)
		}
	})

	t.Run("BrowserOffline", func(t *testing.T) {
		// The browser says the network is gone while the socket still
		// looks open (no close has come): the page says so at once, not
		// when the heartbeat gives up (~40 s), and resumes exactly.
		tab := b.open(t, base+"/")
		event := func(name string) func() {
			return func() { tab.do(chromedp.Evaluate[chromedp.Void](`dispatchEvent(new Event("` + name + `"))`)) }
		}
		tab.replyAcrossOutage(event("offline"), `document.querySelector("#conn").dataset.state === "resuming"`, event("online"))
	})

	t.Run("ReconnectKeepsTurns", func(t *testing.T) {
		// A reconnect lists the turns again; the ones that did not change
		// keep their elements (a 30 MB turn took seconds to render again,
		// and the reader's selection went with it).
		link := newCuttableLink(t, base)
		tab := b.open(t, link.URL+"/")
		tab.click("#new-session")
		tab.waitFor("connected", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
		tab.send("/words 5")
		tab.waitFor("the reply", lastAssistant(`t.dataset.status === "complete"`))
		eval[bool](tab, `[...document.querySelectorAll("#transcript li.turn .content")].every(c => (c.dataset.mark = "kept"))`)
		link.cut()
		tab.waitFor("the connection is lost", `document.querySelector("#conn").dataset.state === "resuming"`)
		link.restore()
		tab.waitFor("connected again", `document.querySelector("#conn").dataset.state === "open"`)
		tab.send("/words 2")
		tab.waitFor("the next reply", `document.querySelectorAll('#transcript li.turn[data-role="assistant"][data-status="complete"]').length === 2`)
		if got := eval[int](tab, `[...document.querySelectorAll("#transcript li.turn .content")].filter(c => c.dataset.mark === "kept").length`); got != 2 {
			t.Fatalf("%d of the 2 earlier turns kept their rendering across the reconnect", got)
		}
	})

	t.Run("LargeReplyPlain", func(t *testing.T) {
		// Past 256 KiB a reply is shown as plain text, whole: formatting it
		// on every frame froze the page for seconds. (One word: the
		// offline model streams a word a delta.)
		tab := b.open(t, base+"/")
		tab.click("#new-session")
		tab.waitFor("connected", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
		id := strings.TrimPrefix(eval[string](tab, `location.pathname`), "/s/")
		evalAsync[bool](tab, `fetch("/v1/sessions/`+id+`/turns", {method: "POST", headers: {"Content-Type": "application/json"},
			body: JSON.stringify({turns: [{role: "user", content: "/say " + "**big**".repeat(45000)}], generate: true})}).then(r => r.ok)`)
		tab.waitFor("the reply, as plain text", lastAssistant(`t.dataset.status === "complete" && !!t.querySelector(".content.plain") && !!t.querySelector(".note")`))
		if got := eval[int](tab, `(() => { const t = [...document.querySelectorAll('#transcript li.turn[data-role="assistant"]')].at(-1); return t.querySelector(".content").textContent.length; })()`); got != 7*45000 {
			t.Fatalf("the plain reply holds %d characters, want %d", got, 7*45000)
		}
		if got := eval[bool](tab, `!![...document.querySelectorAll('#transcript li.turn[data-role="user"]')].at(-1).querySelector(".content")`); !got {
			t.Fatal("the user turn is not shown")
		}
	})

	t.Run("SignIn", func(t *testing.T) {
		const key = "browser-test-key-0123456789"
		locked := pageURL(t, startSessiond(t, bin, "--api-keys", key+"=alice"))
		tab := b.open(t, locked+"/")
		tab.waitFor("the page asks for an API key", `document.querySelector("#dialog").open && document.activeElement === document.querySelector("#dialog-input")`)
		// Cancelled: the list offers to sign in, and asks again.
		tab.do(chromedp.Evaluate[chromedp.Void](`document.querySelector("#dialog").close()`))
		tab.waitFor("a way to sign in", `!!document.querySelector("#sign-in") && !document.querySelector("#banner").hidden`)
		tab.click("#sign-in")
		tab.waitFor("the question again", `document.querySelector("#dialog").open`)
		// A mistyped key is refused, and the page asks again.
		tab.do(chromedp.SendKeys(chromedp.CSS("#dialog-input"), "mistyped-key-0123456789"+kb.Enter))
		tab.waitFor("the question again, saying the key was refused", `document.querySelector("#dialog").open && /refused/.test(document.querySelector("#dialog-text").textContent)`)
		tab.do(chromedp.SendKeys(chromedp.CSS("#dialog-input"), key+kb.Enter))
		tab.waitFor("the dialog closes and the list loads, the refusal gone", `!document.querySelector("#dialog").open && !!document.querySelector("#session-list li") && !document.querySelector("#sign-in") && document.querySelector("#banner").hidden`)
		tab.click("#new-session")
		tab.waitFor("connected with the key", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
		tab.send("/words 3")
		tab.waitFor("the reply", lastAssistant(`t.dataset.status === "complete" && t.querySelector(".content").textContent === "1 2 3"`))
		// The key is kept: a reload does not ask again.
		tab.do(chromedp.Reload())
		tab.waitFor("the session again, with no question", `document.querySelector("#conn").dataset.state === "open" && !document.querySelector("#dialog").open && !!document.querySelector("#transcript li.turn")`)
		// A session's link opened without the key: cancelled, then signed
		// in from the list, the page opens the session the link names.
		link := eval[string](tab, `location.href`)
		tab.do(chromedp.Evaluate[chromedp.Void](`localStorage.clear()`), chromedp.Navigate(link))
		tab.waitFor("the question", `document.querySelector("#dialog").open`)
		tab.do(chromedp.Evaluate[chromedp.Void](`document.querySelector("#dialog").close()`))
		tab.click("#sign-in")
		tab.waitFor("the question again", `document.querySelector("#dialog").open`)
		tab.do(chromedp.SendKeys(chromedp.CSS("#dialog-input"), key+kb.Enter))
		tab.waitFor("the linked session, open", `document.querySelector("#conn").dataset.state === "open" && `+lastAssistant(`t.querySelector(".content").textContent === "1 2 3"`))
	})

	t.Run("RefusedKeyForgotten", func(t *testing.T) {
		// A kept key the server refuses (revoked, or mistyped) is
		// forgotten at once, not kept until another replaces it; the page
		// still asks for one.
		const key = "browser-test-key-0123456789"
		locked := pageURL(t, startSessiond(t, bin, "--api-keys", key+"=alice"))
		tab := b.open(t, locked+"/")
		tab.waitFor("the page asks for an API key", `document.querySelector("#dialog").open`)
		tab.do(chromedp.Evaluate[chromedp.Void](`localStorage.setItem("sessiond.apiKey", "revoked-key-0123456789")`), chromedp.Reload())
		tab.waitFor("the question, saying the kept key was refused, and the key gone",
			`document.querySelector("#dialog").open && /refused/.test(document.querySelector("#dialog-text").textContent) && localStorage.getItem("sessiond.apiKey") === null`)
		tab.do(chromedp.Evaluate[chromedp.Void](`document.querySelector("#dialog").close()`))
		tab.waitFor("a way to sign in, and nothing to forget", `!!document.querySelector("#sign-in") && document.querySelector("#sign-out").hidden`)
		// The next page load has no key to send: it asks as a first visit does.
		tab.do(chromedp.Reload())
		tab.waitFor("the first visit's question", `document.querySelector("#dialog").open && /needs an API key/.test(document.querySelector("#dialog-text").textContent)`)
		// A mistyped key is kept until the server refuses it, then forgotten.
		tab.do(chromedp.SendKeys(chromedp.CSS("#dialog-input"), "mistyped-key-0123456789"+kb.Enter))
		tab.waitFor("the question again, the mistyped key gone",
			`document.querySelector("#dialog").open && /refused/.test(document.querySelector("#dialog-text").textContent) && localStorage.getItem("sessiond.apiKey") === null`)
		tab.do(chromedp.SendKeys(chromedp.CSS("#dialog-input"), key+kb.Enter))
		tab.waitFor("signed in, the key kept", fmt.Sprintf(`!document.querySelector("#dialog").open && !document.querySelector("#sign-in") && !document.querySelector("#sign-out").hidden && localStorage.getItem("sessiond.apiKey") === %q`, key))
	})

	t.Run("ClientModule", func(t *testing.T) {
		tab := b.open(t, base+"/")
		type result struct {
			Sent     []string `json:"sent"`
			Text     string   `json:"text"`
			Offsets  []int    `json:"offsets"`
			Done     int      `json:"done"`
			Final    string   `json:"final"`
			Turns    []string `json:"turns"`
			Statuses []string `json:"statuses"`
			Refused  string   `json:"refused"`
		}
		// A client of its own, as another frontend would use it; it drops
		// its socket after the 10th delta and must resume exactly there.
		got := evalAsync[result](tab, `(async () => {
			const { SessiondClient } = await import("/static/sessiond-client.js");
			const c = new SessiondClient();
			const s = await c.createSession({ title: "client module" });
			const conn = c.connect(s.id);
			const r = { text: "", offsets: [], turns: [], statuses: [] };
			conn.on("status", (e) => r.statuses.push(e.status));
			conn.on("turn", (e) => r.turns.push(e.turn.role + " " + e.turn.status));
			conn.on("delta", (e) => {
				r.text += e.text || "";
				r.offsets.push(e.offset);
				if (r.offsets.length === 10) conn.reconnect();
			});
			await new Promise((ok) => conn.on("ready", ok));
			const done = new Promise((ok) => conn.on("done", ok));
			const sent = await conn.send([{ role: "user", content: "/words 30" }]);
			r.sent = sent.turns.map((t) => t.role + " " + t.content);
			const d = await done;
			r.done = d.offset;
			r.final = d.turn.content;
			r.refused = await conn.send([{ role: "assistant", content: "x" }]).then(() => "accepted", (e) => e.code);
			conn.close();
			return r;
		})()`)
		if got.Text != words(30) || got.Final != words(30) {
			t.Errorf("deltas=%q, final turn=%q, want %q", got.Text, got.Final, words(30))
		}
		for i, o := range got.Offsets {
			if o != i+1 {
				t.Fatalf("offsets=%v, want 1..30 once each", got.Offsets)
			}
		}
		if len(got.Offsets) != 30 || got.Done != 31 {
			t.Errorf("offsets=%v, done at %d; want 1..30 and 31", got.Offsets, got.Done)
		}
		if strings.Join(got.Sent, ",") != "user /words 30" {
			t.Errorf("send resolved with %q", got.Sent)
		}
		if got, want := strings.Join(got.Turns, ","), "user complete,assistant streaming,assistant complete"; got != want {
			t.Errorf("turn events=%q, want %q", got, want)
		}
		if got, want := strings.Join(got.Statuses, ","), "connecting,open,resuming,open,closed"; got != want {
			t.Errorf("statuses=%q, want %q", got, want)
		}
		if got.Refused != "invalid_request" {
			t.Errorf("a refused send gave %q, want invalid_request", got.Refused)
		}
	})

	t.Run("ClientHeartbeat", func(t *testing.T) {
		// A background tab's timers may run once a minute: a link that
		// answers its pings stays up, however long the silence between
		// them.
		tab := b.open(t, base+"/")
		got := evalAsync[[]string](tab, `(async () => {
			const realSetInterval = window.setInterval;
			let beat;
			window.setInterval = (f, ms) => { if (ms === 20000) beat = f; return realSetInterval(f, ms); };
			const realNow = Date.now;
			let skew = 0;
			Date.now = () => realNow() + skew;
			const { SessiondClient } = await import("/static/sessiond-client.js");
			const c = new SessiondClient();
			const s = await c.createSession({ title: "heartbeat" });
			const conn = c.connect(s.id);
			const statuses = [];
			conn.on("status", (e) => statuses.push(e.status));
			await new Promise((ok) => conn.on("ready", ok));
			for (let i = 0; i < 3; i++) {
				skew += 60000; // a minute passes between two beats
				beat();
				await new Promise((ok) => setTimeout(ok, 300)); // the pong
			}
			conn.close();
			Date.now = realNow;
			window.setInterval = realSetInterval;
			return statuses;
		})()`)
		if strings.Join(got, ",") != "connecting,open,closed" {
			t.Fatalf("statuses %v: a link answering its pings was dropped", got)
		}
	})

	t.Run("ClientRefusals", func(t *testing.T) {
		// A socket refused for now (1013, or 1008 with a passing reason)
		// is tried again; a refusal that stands (1008 not_found) ends the
		// connection.
		tab := b.open(t, base+"/")
		type result struct {
			Statuses []string `json:"statuses"`
			Err      string   `json:"err"`
		}
		for _, c := range []struct {
			code   int
			reason string
			final  bool
		}{
			{1013, "overloaded: too many calls", false},
			{1008, "unavailable: the server is shutting down", false},
			{1008, "not_found: session not found", true},
		} {
			got := evalAsync[result](tab, fmt.Sprintf(`(async () => {
				const Real = window.WebSocket;
				let refused = false;
				window.WebSocket = class extends Real {
					constructor(...a) {
						super(...a);
						if (!refused) {
							refused = true;
							this.addEventListener("open", () => this.dispatchEvent(Object.assign(new Event("close"), { code: %d, reason: %q })), { once: true });
						}
					}
					set onclose(f) { this.addEventListener("close", (e) => { if (!this.done) { this.done = true; f(e); } }); }
				};
				const { SessiondClient } = await import("/static/sessiond-client.js");
				const c = new SessiondClient();
				const s = await c.createSession({ title: "refusals" });
				const conn = c.connect(s.id);
				const r = { statuses: [], err: "" };
				conn.on("status", (e) => r.statuses.push(e.status));
				conn.on("error", (e) => (r.err = e.code));
				await new Promise((ok) => { conn.on("ready", ok); conn.on("status", (e) => e.status === "closed" && ok()); });
				conn.close();
				window.WebSocket = Real;
				return r;
			})()`, c.code, c.reason))
			last := ""
			if n := len(got.Statuses); n >= 2 {
				last = got.Statuses[n-2]
			}
			if c.final && (got.Err != "not_found" || last != "connecting") {
				t.Errorf("close %d %q: statuses %v, error %q; want it to end with not_found", c.code, c.reason, got.Statuses, got.Err)
			}
			if !c.final && (!slices.Contains(got.Statuses, "open") || got.Err != "") {
				t.Errorf("close %d %q: statuses %v, error %q; want a retry that opens", c.code, c.reason, got.Statuses, got.Err)
			}
		}
	})

	t.Run("Renderer", func(t *testing.T) {
		tab := b.open(t, base+"/")
		type result struct {
			HTML      string `json:"html"`
			Dangerous int    `json:"dangerous"`
		}
		cases := []struct{ src, want string }{
			{"1 2 3", "<p>1 2 3</p>"},
			{"a <b>b</b> & c", "<p>a &lt;b&gt;b&lt;/b&gt; &amp; c</p>"},
			{"**b** *i* `c<d>`", "<p><strong>b</strong> <em>i</em> <code>c&lt;d&gt;</code></p>"},
			{"```js\nx = \"<y>\"\n```", `<pre><code class="language-js" data-lang="js">x = &quot;&lt;y&gt;&quot;</code></pre>`},
			{"```\nstill streaming <i>", "<pre><code>still streaming &lt;i&gt;</code></pre>"},
			{"- a\n- b", "<ul><li>a</li><li>b</li></ul>"},
			{"[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"},
			{`[x](https://e.org/?a=1&b="2")`, `<p><a href="https://e.org/?a=1&amp;b=&quot;2&quot;" target="_blank" rel="noopener noreferrer nofollow">x</a></p>`},
			{"[x](&#106;avascript:alert(1))", "<p>[x](&amp;#106;avascript:alert(1))</p>"},
			{`"><svg onload=alert(1)>`, "<p>&quot;&gt;&lt;svg onload=alert(1)&gt;</p>"},
			{"![i](https://e.org/i.png)", `<p><a href="https://e.org/i.png" target="_blank" rel="noopener noreferrer nofollow">i</a></p>`},
			{"# T\n> q", "<h1>T</h1><blockquote><p>q</p></blockquote>"},
			{"| a | b |\n|---|--:|\n| 1 | 2 |", `<div class="table"><table><thead><tr><th>a</th><th class="align-right">b</th></tr></thead><tbody><tr><td>1</td><td class="align-right">2</td></tr></tbody></table></div>`},
			{"# T ##\n# C#", "<h1>T</h1><h1>C#</h1>"},
			{"[w](https://e.org/Foo_(bar)) and https://e.org/Foo_(bar).", `<p><a href="https://e.org/Foo_(bar)" target="_blank" rel="noopener noreferrer nofollow">w</a> and <a href="https://e.org/Foo_(bar)" target="_blank" rel="noopener noreferrer nofollow">https://e.org/Foo_(bar)</a>.</p>`},
			{"(https://e.org)", `<p>(<a href="https://e.org" target="_blank" rel="noopener noreferrer nofollow">https://e.org</a>)</p>`},
			{"``a ` b`` and ``x` y", "<p><code>a ` b</code> and ``x` y</p>"},
			{"~~~ py `x`\ncode\n~~~", `<pre><code class="language-py" data-lang="py">code</code></pre>`},
			{"a ****** b, x ~~~~~~ y", "<p>a ****** b, x ~~~~~~ y</p>"},
			{"***both*** **b** ~~s~~", "<p><strong><em>both</em></strong> <strong>b</strong> <del>s</del></p>"},
			{"|a|b|c|\n|-|\n|1|2|3|", "<p>|a|b|c|<br>|-|<br>|1|2|3|</p>"}, // cells unlike the delimiter row's: no table
			// Parentheses nested two deep are part of a URL, in a link and bare.
			{"[x](https://e.org/a_(b_(c))) and https://e.org/a_(b_(c)).", `<p><a href="https://e.org/a_(b_(c))" target="_blank" rel="noopener noreferrer nofollow">x</a> and <a href="https://e.org/a_(b_(c))" target="_blank" rel="noopener noreferrer nofollow">https://e.org/a_(b_(c))</a>.</p>`},
			{"[x](javascript:a((1)))", "<p>[x](javascript:a((1)))</p>"},
			// A bare URL ends whole before an escaped quote or angle
			// bracket, and may follow one; it holds & but does not end in it.
			{`"see https://e.org/docs" or <https://e.org/a>, https://e.org/?q=1&r=2 and https://e.org/?q=1&`,
				`<p>&quot;see <a href="https://e.org/docs" target="_blank" rel="noopener noreferrer nofollow">https://e.org/docs</a>&quot; or &lt;<a href="https://e.org/a" target="_blank" rel="noopener noreferrer nofollow">https://e.org/a</a>&gt;, <a href="https://e.org/?q=1&amp;r=2" target="_blank" rel="noopener noreferrer nofollow">https://e.org/?q=1&amp;r=2</a> and <a href="https://e.org/?q=1" target="_blank" rel="noopener noreferrer nofollow">https://e.org/?q=1</a>&amp;</p>`},
		}
		srcs := make([]string, len(cases))
		for i, c := range cases {
			srcs[i] = c.src
		}
		arg, _ := json.Marshal(srcs)
		got := evalAsync[[]result](tab, `import("/static/markdown.js").then(m => `+string(arg)+`.map(src => {
			const html = m.renderMarkdown(src);
			const doc = new DOMParser().parseFromString("<body>" + html, "text/html");
			const bad = [...doc.body.querySelectorAll("*")].filter(e =>
				["SCRIPT", "IMG", "SVG", "IFRAME", "STYLE", "OBJECT"].includes(e.tagName.toUpperCase()) ||
				[...e.attributes].some(a => a.name.startsWith("on") || a.name === "style" || (a.name === "href" && !/^(https?:|mailto:)/i.test(a.value))));
			return {html, dangerous: bad.length};
		}))`)
		// Output a model may write to freeze a page whose patterns
		// backtrack (each took the old renderer 7 to 64 s; the eval's
		// timeout is 20 s): rendered, and safely.
		hostile := `["[a](".repeat(50000), "~".repeat(8000) + "` + "`" + `", "# a" + " ".repeat(100000) + "#b",
			"[".repeat(200000), '[a](x "'.repeat(30000), "` + "``" + `a ".repeat(50000),
			"|".repeat(50000) + "\n|-|\n", "|-".repeat(5000) + "\n" + "|-".repeat(5000),
			"[a](x(y(".repeat(40000), "[a](" + "(x)".repeat(100000), "[a]((".repeat(50000), "[a](" + "(b(c)".repeat(50000)]`
		if n := evalAsync[int](tab, `import("/static/markdown.js").then(m => `+hostile+`.filter(src => {
			const doc = new DOMParser().parseFromString("<body>" + m.renderMarkdown(src), "text/html");
			return doc.body.querySelector("a, script, img, table") === null;
		}).length)`); n != 12 {
			t.Errorf("%d of 12 hostile sources rendered without links, tags or tables", n)
		}
		for i, c := range cases {
			if got[i].Dangerous != 0 {
				t.Errorf("render(%q) made %d dangerous elements: %s", c.src, got[i].Dangerous, got[i].HTML)
			}
			if got[i].HTML != c.want {
				t.Errorf("render(%q)=\n  %s\nwant\n  %s", c.src, got[i].HTML, c.want)
			}
		}
	})
}

// listIDs returns the ids of the local owner's sessions (auth off).
func listIDs(t *testing.T, s *sessiond) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for {
		var page struct {
			Sessions []struct {
				ID string `json:"id"`
			} `json:"sessions"`
			Next string `json:"next_cursor"`
		}
		getJSON(t, s.URL+"/v1/sessions?limit=100&cursor="+url.QueryEscape(cursor), &page)
		for _, e := range page.Sessions {
			ids = append(ids, e.ID)
		}
		if page.Next == "" {
			return ids
		}
		cursor = page.Next
	}
}

// userTurns returns the contents of session id's user turns, in order.
func userTurns(t *testing.T, s *sessiond, id string) []string {
	t.Helper()
	var page struct {
		Turns []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"turns"`
	}
	getJSON(t, s.URL+"/v1/sessions/"+id+"/turns?limit=100", &page)
	var out []string
	for _, tr := range page.Turns {
		if tr.Role == "user" {
			out = append(out, tr.Content)
		}
	}
	return out
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, res.Status, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// replyAcrossOutage opens a new session on the tab and has it stream a
// reply; a fifth of the way in, lose() takes the connection away, the
// page must say so (the predicate lost), and once restore() gives it
// back, the reply must complete exactly, never having shown text that is
// not a prefix of the answer.
func (tb *tab) replyAcrossOutage(lose func(), lost string, restore func()) {
	tb.t.Helper()
	tb.click("#new-session")
	tb.waitFor("connected", `location.pathname.startsWith("/s/") && document.querySelector("#conn").dataset.state === "open"`)
	want := words(60)
	tb.watch(want, 0)
	tb.send("/words 60")
	tb.waitFor("a fifth of the reply", lastAssistant(`t.dataset.status === "streaming" && t.querySelector(".content").textContent.split(" ").length >= 12`))
	lose()
	tb.waitFor("the page says the connection is lost", lost)
	restore()
	tb.waitFor("connected again", `document.querySelector("#conn").dataset.state === "open"`)
	tb.waitFor("the reply completes", lastAssistant(`t.dataset.status === "complete"`))
	if got := tb.lastAssistantText(); got != want {
		tb.t.Fatalf("reply across the outage=%q, want %q", got, want)
	}
	if w := tb.watched(); len(w.Bad) > 0 {
		tb.t.Fatalf("across the outage the reply showed text that is not a prefix of the answer: %q", w.Bad)
	}
}

// words is the offline model's answer to /words n.
func words(n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = strconv.Itoa(i + 1)
	}
	return strings.Join(w, " ")
}

const lastAssistantExpr = `[...document.querySelectorAll('#transcript li.turn[data-role="assistant"]')].at(-1)`

// lastAssistant is a predicate on the last assistant turn t.
func lastAssistant(cond string) string {
	return `((t) => !!t && (` + cond + `))(` + lastAssistantExpr + `)`
}

func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return
	}
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatalf("%s is missing: in CI the browser tests must run (.ci/run installs Debian's chromium package)", chromiumPath)
	}
	t.Skipf("%s is missing, so the browser tests cannot run: apt-get install chromium (in CI, with CI=true, this fails instead)", chromiumPath)
}

// buildSessiond builds cmd/sessiond of this module into a temporary folder.
func buildSessiond(t *testing.T) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(t.TempDir(), "sessiond")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sessiond")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sessiond: %v\n%s", err, out)
	}
	return bin
}

type sessiond struct {
	URL string // http://127.0.0.1:port
	log string // path of its log file
}

// startSessiond runs bin on a free loopback port with a fresh data folder
// and the offline model slowed down, and waits until /healthz answers.
// It stops the process (SIGTERM, then SIGKILL) when the test ends.
func startSessiond(t *testing.T, bin string, args ...string) *sessiond {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	s := &sessiond{URL: "http://" + addr, log: filepath.Join(dir, "sessiond.log")}
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"--addr", addr, "--data", filepath.Join(dir, "data"),
		"--offline-tps", strconv.Itoa(offlineTPS), "--log-level", "debug"}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sessiond: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Error("sessiond did not stop within 10s of SIGTERM")
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(s.log)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("sessiond log (end):\n%s", b)
		}
	})
	deadline := time.Now().Add(waitTimeout)
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(s.log)
			t.Fatalf("sessiond exited before it was ready: %v\n%s", err, b)
		default:
		}
		res, err := http.Get(s.URL + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessiond not ready after %v: %v", waitTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pageURL checks that sessiond serves the page (ui.Handler, mounted by the
// router under everything outside /v1) and returns its address.
func pageURL(t *testing.T, s *sessiond) string {
	t.Helper()
	for _, p := range []string{"/", "/s/some-id", "/static/sessiond-client.js"} {
		res, err := http.Get(s.URL + p)
		if err != nil {
			t.Fatalf("GET %s: %v", p, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s; sessiond must serve the UI outside /v1", p, res.Status)
		}
	}
	return s.URL
}

// postJSON posts body to url and fails the test unless it answers 2xx.
func postJSON(t *testing.T, url string, body any) {
	t.Helper()
	b, _ := json.Marshal(body)
	res, err := http.Post(url, "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		data, _ := io.ReadAll(res.Body)
		t.Fatalf("POST %s: %s %s", url, res.Status, data)
	}
}

// createSession creates a session over REST, posts one message and waits
// for the reply to be committed; it returns the session's id.
func createSession(t *testing.T, s *sessiond, title, message string) string {
	t.Helper()
	call := func(method, path string, body any, out any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(string(b)))
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		data, _ := io.ReadAll(res.Body)
		if res.StatusCode >= 300 {
			t.Fatalf("%s %s: %s %s", method, path, res.Status, data)
		}
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
	}
	var sess struct {
		ID         string          `json:"id"`
		Generation json.RawMessage `json:"generation"`
	}
	call("POST", "/v1/sessions", map[string]any{"title": title}, &sess)
	call("POST", "/v1/sessions/"+sess.ID+"/turns", map[string]any{
		"turns": []map[string]any{{"role": "user", "content": message}}, "generate": true,
	}, nil)
	deadline := time.Now().Add(waitTimeout)
	for {
		call("GET", "/v1/sessions/"+sess.ID, nil, &sess)
		if string(sess.Generation) == "null" {
			return sess.ID
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s: generation still running after %v", sess.ID, waitTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cuttableLink is a TCP proxy in front of the server whose connections the
// test can cut, as a lost network would: the browser sees its sockets drop
// and cannot connect until the link is restored.
type cuttableLink struct {
	URL string

	t      *testing.T
	target string
	ln     net.Listener
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newCuttableLink(t *testing.T, target string) *cuttableLink {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &cuttableLink{URL: "http://" + ln.Addr().String(), t: t, target: u.Host, ln: ln, conns: map[net.Conn]struct{}{}}
	l.wg.Go(l.accept)
	t.Cleanup(func() {
		ln.Close()
		l.cut()
		l.wg.Wait()
	})
	return l
}

func (l *cuttableLink) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.down {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		l.wg.Go(func() { l.pipe(c) })
	}
}

func (l *cuttableLink) pipe(c net.Conn) {
	defer l.forget(c)
	up, err := net.Dial("tcp", l.target)
	if err != nil {
		return
	}
	l.mu.Lock()
	if l.down {
		l.mu.Unlock()
		up.Close()
		return
	}
	l.conns[up] = struct{}{}
	l.mu.Unlock()
	defer l.forget(up)
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
}

func (l *cuttableLink) forget(c net.Conn) {
	c.Close()
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// cut closes every connection and refuses new ones until restore.
func (l *cuttableLink) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	for c := range l.conns {
		c.Close()
	}
}

func (l *cuttableLink) restore() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = false
}

// browser is one headless Chromium for the whole test; each page is a tab.
type browser struct {
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser, bound to ctx
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return &browser{ctx: ctx}
}

// tab is one page of the browser, used by one test.
type tab struct {
	t   *testing.T
	ctx context.Context
}

// open opens a new tab on url and waits for the page's script to run. The
// page's uncaught exceptions fail the test; its console errors are logged.
func (b *browser) open(t *testing.T, url string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("open a tab: %v", err)
	}
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	console := chromedp.Events(ctx, runtime.ConsoleAPICalled)
	var wg sync.WaitGroup
	wg.Go(func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			t.Errorf("page %s: uncaught exception: %s", url, exceptionText(ev.ExceptionDetails))
		}
	})
	wg.Go(func() {
		for ev, err := range console {
			if err != nil {
				return
			}
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					if a.Value != nil {
						args = append(args, string(a.Value))
					} else {
						args = append(args, a.Description)
					}
				}
				t.Logf("page %s: console.%s: %s", url, ev.Type, strings.Join(args, " "))
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	tb := &tab{t: t, ctx: ctx}
	tb.do(chromedp.Navigate(url))
	tb.waitFor("the page's script", `document.readyState === "complete" && !!document.querySelector("#conn")`)
	return tb
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d == nil {
		return ""
	}
	s := d.Text
	if d.Exception != nil && d.Exception.Description != "" {
		s += " " + d.Exception.Description
	}
	return fmt.Sprintf("%s (%s:%d:%d)", s, d.URL, d.LineNumber, d.ColumnNumber)
}

func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("browser: %v", err)
	}
}

func (tb *tab) click(selector string) {
	tb.t.Helper()
	tb.do(chromedp.Click(chromedp.CSS(selector), chromedp.NodeVisible))
}

// send types text into the message box and presses Enter, as a person
// would. The key goes as a raw key-down so that no newline is typed after
// the page handled it.
func (tb *tab) send(text string) {
	tb.t.Helper()
	arg, _ := json.Marshal(text)
	if strings.Contains(text, "\n") {
		// A newline typed would be Enter, which sends: set multi-line text directly.
		tb.do(chromedp.Focus(chromedp.CSS("#composer-input")),
			chromedp.Evaluate[chromedp.Void](`document.querySelector("#composer-input").value = `+string(arg)))
	} else {
		tb.do(chromedp.Focus(chromedp.CSS("#composer-input")), chromedp.SendKeys(chromedp.CSS("#composer-input"), text))
	}
	tb.do(pressEnter)
	tb.waitFor("the message box to empty after Enter", `document.querySelector("#composer-input").value === ""`)
}

// colorScheme emulates prefers-color-scheme (light or dark; "" for the system's).
func colorScheme(v string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		var f []*emulation.MediaFeature
		if v != "" {
			f = append(f, &emulation.MediaFeature{Name: "prefers-color-scheme", Value: v})
		}
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: f})
		return chromedp.Void{}, err
	}
}

// lateTurnPosts makes the pages the tab loads from now on get the answers
// of their POSTs of turns 600 ms after they came; window.lateTurnAnswers
// counts them.
func lateTurnPosts(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
	_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `{
		const f = window.fetch;
		window.fetch = async (...a) => {
			const r = await f(...a);
			if ((a[1]?.method || "GET") === "POST" && String(a[0]).endsWith("/turns")) {
				await new Promise((ok) => setTimeout(ok, 600));
				window.lateTurnAnswers = (window.lateTurnAnswers || 0) + 1;
			}
			return r;
		};
	}`})
	return chromedp.Void{}, err
}

func pressEnter(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
	for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
		if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, input.DispatchKeyEventParams{
			Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
		}); err != nil {
			return chromedp.Void{}, err
		}
	}
	return chromedp.Void{}, nil
}

// waitFor polls the JavaScript predicate expr until it is true; on timeout
// it fails the test with what it waited for and what the page shows.
func (tb *tab) waitFor(what, expr string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, waitTimeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](`!!(`+expr+`)`,
		chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(waitTimeout)))
	if err != nil {
		state, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`JSON.stringify({
			url: location.href,
			conn: document.querySelector("#conn")?.textContent,
			banner: document.querySelector("#banner")?.hidden ? "" : document.querySelector("#banner")?.textContent,
			turns: [...document.querySelectorAll("#transcript li.turn")].map(e => e.dataset.id + " " + e.dataset.role + " " + e.dataset.status + ": " + (e.querySelector(".content")?.textContent ?? "").slice(0, 200)),
		})`))
		if errors.Is(err, chromedp.ErrPollingTimeout) {
			err = fmt.Errorf("not true after %v", waitTimeout)
		}
		tb.t.Fatalf("waiting for %s: %v\npredicate: %s\npage: %s", what, err, expr, state)
	}
}

func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, waitTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func evalAsync[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, waitTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func (tb *tab) lastAssistantText() string {
	tb.t.Helper()
	return eval[string](tb, lastAssistantExpr+`.querySelector(".content").textContent`)
}

// watch records every state of the newest assistant turn after turn id
// after, from now on: each text it shows must be a prefix of want (no
// duplicated or reordered words), and no turn may be shown twice.
func (tb *tab) watch(want string, after int) {
	tb.t.Helper()
	arg, _ := json.Marshal(want)
	tb.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const want = %s, after = %d;
		const w = window.__watch = {states: 0, bad: [], sawStreaming: false, last: null};
		const check = () => {
			const all = [...document.querySelectorAll("#transcript li.turn")];
			const ids = all.map(e => e.dataset.id);
			if (new Set(ids).size !== ids.length) w.bad.push("turns shown twice: " + ids.join(","));
			const t = all.filter(e => e.dataset.role === "assistant" && +e.dataset.id > after).at(-1);
			if (!t) return;
			const text = t.querySelector(".content")?.textContent ?? "";
			if (t.dataset.status === "streaming") w.sawStreaming = true;
			if (text === w.last) return;
			w.last = text;
			w.states++;
			if (!want.startsWith(text)) w.bad.push(text);
		};
		new MutationObserver(check).observe(document.querySelector("#transcript"), {subtree: true, childList: true, characterData: true, attributes: true});
		check();
	})()`, arg, after)))
}

type watchResult struct {
	States       int      `json:"states"`
	Bad          []string `json:"bad"`
	SawStreaming bool     `json:"sawStreaming"`
}

func (tb *tab) watched() watchResult {
	tb.t.Helper()
	return eval[watchResult](tb, `window.__watch`)
}

// screenshot saves the tab's viewport as name in $SESSIOND_UI_SCREENSHOTS,
// or in the test's temporary folder, and logs where.
func (tb *tab) screenshot(name string) {
	tb.t.Helper()
	dir := os.Getenv(screenshotDirEnv)
	if dir == "" {
		dir = tb.t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(tb.ctx, waitTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	tb.t.Logf("screenshot: %s", p)
}
