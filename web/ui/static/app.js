// app.js — the chat page: a session list and one conversation, live.
// It talks to the server only through sessiond-client.js (the public API).

import { SessiondClient } from "./sessiond-client.js";
import { renderMarkdown } from "./markdown.js";

const KEY_STORAGE = "sessiond.apiKey";
const TURN_PAGE = 100;

const $ = (id) => document.getElementById(id);
const els = {
  app: $("app"),
  sidebar: $("sidebar"),
  menu: $("menu"),
  newSession: $("new-session"),
  sessionList: $("session-list"),
  moreSessions: $("more-sessions"),
  signOut: $("sign-out"),
  title: $("session-title"),
  rename: $("rename"),
  del: $("delete"),
  conn: $("conn"),
  banner: $("banner"),
  bannerText: $("banner-text"),
  bannerClose: $("banner-close"),
  scroller: $("scroller"),
  empty: $("empty"),
  older: $("older"),
  transcript: $("transcript"),
  composer: $("composer"),
  input: $("composer-input"),
  send: $("send"),
  stop: $("stop"),
  dialog: $("dialog"),
  dialogTitle: $("dialog-title"),
  dialogText: $("dialog-text"),
  dialogInput: $("dialog-input"),
  dialogOK: $("dialog-ok"),
  announce: $("announce"),
};

const storage = {
  get() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  },
  set(v) {
    try {
      if (v) localStorage.setItem(KEY_STORAGE, v);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {}
  },
};

const client = new SessiondClient({ apiKey: storage.get(), onUnauthorized: askForKey });

const state = {
  sessions: [],
  nextCursor: null,
  current: null, // the open session
  chain: [], // turns of the shown branch, ascending ids
  hasOlder: false,
  streams: new Map(), // generation id → {text, calls}: what its deltas said
  running: null, // id of the session's running (or queued) generation
  ended: new Set(), // ids of the session's generations whose end has come (see markRunning)
  conn: null,
  seq: 0, // bumps on every open/close, so late answers for another session are dropped
  openDetails: new Set(), // "turnId:key" of <details> the user opened
};

// ---- dialogs --------------------------------------------------------------

// ask shows the modal dialog; resolves with the input's value (or true
// without input) on OK, null on cancel. Dialogs come one at a time (a
// sign-in may be asked while another is open).
let dialogs = Promise.resolve();
function ask(opts) {
  const next = dialogs.then(() => showDialog(opts));
  dialogs = next.catch(() => {});
  return next;
}

function showDialog({ title, text = "", input = null, ok = "OK", danger = false }) {
  const d = els.dialog;
  els.dialogTitle.textContent = title;
  els.dialogText.textContent = text;
  els.dialogText.hidden = !text;
  els.dialogInput.hidden = input === null;
  els.dialogInput.type = input?.type || "text";
  els.dialogInput.value = input?.value || "";
  els.dialogInput.placeholder = input?.placeholder || "";
  els.dialogInput.setAttribute("aria-label", input?.label || title);
  els.dialogOK.textContent = ok;
  els.dialogOK.classList.toggle("danger", danger);
  const back = document.activeElement;
  return new Promise((resolve) => {
    d.returnValue = "";
    d.addEventListener(
      "close",
      () => {
        const yes = d.returnValue === "ok";
        resolve(yes ? (input === null ? true : els.dialogInput.value) : null);
        if (back && document.contains(back)) back.focus();
      },
      { once: true },
    );
    d.showModal();
    if (input !== null) {
      els.dialogInput.focus();
      els.dialogInput.select();
    } else {
      els.dialogOK.focus();
    }
  });
}

// askForKey is the client's onUnauthorized: it asks once for an API key,
// which the browser keeps. The key the server refused is forgotten first
// (it was kept until another replaced it, so a cancelled question left a
// dead key for every later page load to send) — unless another tab has
// kept a new one meanwhile.
async function askForKey(err) {
  if (client.apiKey && storage.get() === client.apiKey) storage.set("");
  els.signOut.hidden = !storage.get();
  const key = await ask({
    title: "Sign in",
    text: client.apiKey
      ? "The server refused the API key this browser kept. Enter another one."
      : "This sessiond server needs an API key. It is kept in this browser.",
    input: { type: "password", placeholder: "API key", label: "API key" },
    ok: "Sign in",
  });
  const k = (key || "").trim();
  if (!k) return null;
  storage.set(k);
  els.signOut.hidden = false;
  if (bannerFor?.status === 401) clearError();
  return k;
}

// announce tells screen readers about a finished reply (the transcript
// itself is not a live region: every token would be read).
function announce(t) {
  const text = turnText(t).replace(/\s+/g, " ").trim();
  const what = t.status === "complete" ? "Reply" : `Reply ${t.status}`;
  els.announce.textContent = text ? `${what}: ${text.slice(0, 300)}` : what;
}

// ---- errors and connection state ------------------------------------------

// The banner shows the last error, with what failed (prefix) and its
// status: succeeded stops showing it once that works, and a sign-in clears
// a refusal of the key.
let bannerFor = null; // {prefix, status} of the error shown

function showError(err, prefix = "") {
  if (!err) return;
  const msg = err.message || String(err);
  const code = err.code && err.code !== msg ? ` (${err.code})` : "";
  els.bannerText.textContent = (prefix ? prefix + ": " : "") + msg + code;
  els.banner.hidden = false;
  bannerFor = { prefix, status: err.status };
}

function clearError() {
  els.banner.hidden = true;
  els.bannerText.textContent = "";
  bannerFor = null;
}

// succeeded clears the banner if it shows an error of what the prefixes
// name (which has worked since).
function succeeded(...prefixes) {
  if (bannerFor && prefixes.includes(bannerFor.prefix)) clearError();
}

els.bannerClose.addEventListener("click", clearError);

function setConn(status, detail = {}) {
  els.conn.dataset.state = status;
  let text = "";
  switch (status) {
    case "connecting":
      text = "Connecting…";
      break;
    case "open":
      text = "Connected";
      break;
    case "resuming": {
      const s = detail.retryIn > 1000 ? ` in ${Math.round(detail.retryIn / 1000)} s` : "";
      text = `Connection lost — resuming${s}…`;
      break;
    }
    case "closed":
      text = detail.error ? "Disconnected: " + detail.error.message : "Disconnected";
      break;
  }
  els.conn.textContent = text;
  els.conn.hidden = !status;
}

// ---- the session list ------------------------------------------------------

async function refreshSessions({ more = false } = {}) {
  try {
    if (more) {
      const res = await client.listSessions({ limit: 50, cursor: state.nextCursor });
      state.sessions = state.sessions.concat(res.sessions || []);
      state.nextCursor = res.next_cursor || null;
    } else {
      // As many as are shown (older pages the person loaded stay), at
      // most 1,000: a read again of the list is not a reset of it.
      const want = Math.min(state.sessions.length, 1000);
      let list = [];
      let cursor;
      do {
        const res = await client.listSessions({ limit: 50, cursor });
        list = list.concat(res.sessions || []);
        cursor = res.next_cursor || null;
      } while (cursor && list.length < want);
      state.sessions = list;
      state.nextCursor = cursor;
    }
    state.signedOut = false;
    succeeded("Could not load sessions");
    renderSessions();
  } catch (err) {
    // Refused without a key (the sign-in was cancelled): the list offers
    // to sign in rather than saying there are no sessions.
    state.signedOut = err.status === 401;
    if (state.signedOut) renderSessions();
    showError(err, "Could not load sessions");
  }
}

// syncSessions reads the list again, one read at a time: calls made while
// one is under way get one more read after it, so the list ends up as the
// last change left it, whatever order the answers came in.
let listing = null;
let relist = false;
function syncSessions() {
  if (listing) {
    relist = true;
    return listing;
  }
  listing = refreshSessions().finally(() => {
    listing = null;
    if (relist) {
      relist = false;
      syncSessions();
    }
  });
  return listing;
}

// Other tabs of this page (the server has no live feed of the session
// list): a tab that changes a session tells the others, which read the
// list again at once instead of when they next come into view. A message
// is {id, title?} (created, renamed or written to) or {id, deleted: true}.
const tabs = typeof BroadcastChannel === "function" ? new BroadcastChannel("sessiond.sessions") : null;

function tellTabs(msg) {
  try {
    tabs?.postMessage(msg);
  } catch {}
}

tabs?.addEventListener("message", (e) => {
  // A tab whose sign-in was cancelled waits for the person to sign in:
  // a read would ask again each time another tab changed something.
  if (state.signedOut) return;
  const { id, title } = e.data || {};
  const s = state.current;
  if (s && !s.loading && s.id === id && typeof title === "string" && title !== s.title) {
    state.current = { ...s, title };
    renderHeader();
  }
  syncSessions();
});

function sessionTitle(s) {
  return s?.title?.trim() || "Untitled session";
}

function renderSessions() {
  const items = state.sessions.map((s) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.className = "session-link";
    a.href = "/s/" + encodeURIComponent(s.id);
    a.dataset.id = s.id;
    if (state.current?.id === s.id) a.setAttribute("aria-current", "page");
    const t = document.createElement("span");
    t.className = "s-title";
    t.dir = "auto";
    t.textContent = sessionTitle(s);
    const p = document.createElement("span");
    p.className = "s-preview";
    p.dir = "auto";
    p.textContent = s.preview || "No messages yet";
    const time = document.createElement("time");
    const when = s.updated_at || s.created_at;
    if (when) {
      time.dateTime = when;
      time.textContent = shortDate(when);
    }
    a.append(t, time, p);
    li.append(a);
    return li;
  });
  if (!items.length && state.signedOut) {
    const li = document.createElement("li");
    li.className = "s-none";
    const b = document.createElement("button");
    b.type = "button";
    b.className = "link";
    b.id = "sign-in";
    b.textContent = "Sign in to see your sessions";
    // Signed in, the page shows what its address names (a /s/ link
    // opened before the sign-in was cancelled).
    b.addEventListener("click", async () => {
      await refreshSessions();
      if (!state.signedOut && !state.current) route();
    });
    li.append(b);
    items.push(li);
  } else if (!items.length) {
    const li = document.createElement("li");
    li.className = "s-none";
    li.textContent = "No sessions yet.";
    items.push(li);
  }
  els.sessionList.replaceChildren(...items);
  els.moreSessions.hidden = !state.nextCursor;
}

function shortDate(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const now = new Date();
  return d.toDateString() === now.toDateString()
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { month: "short", day: "numeric" });
}

// touchSession moves a session to the top of the list with a new preview.
function touchSession(session, preview) {
  const i = state.sessions.findIndex((s) => s.id === session.id);
  const entry = i >= 0 ? state.sessions.splice(i, 1)[0] : { id: session.id, created_at: session.created_at };
  entry.title = session.title ?? entry.title;
  if (preview) entry.preview = preview;
  entry.updated_at = new Date().toISOString();
  state.sessions.unshift(entry);
  renderSessions();
  tellTabs({ id: entry.id, title: entry.title });
  // A read of the list under way may have been answered before this
  // change: read it again after (see syncSessions), or it would undo it.
  if (listing) relist = true;
}

els.sessionList.addEventListener("click", (e) => {
  const a = e.target.closest("a.session-link");
  if (!a || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});

els.moreSessions.addEventListener("click", () => refreshSessions({ more: true }));

els.newSession.addEventListener("click", async () => {
  try {
    const s = await client.createSession({});
    touchSession(s, "");
    navigate("/s/" + encodeURIComponent(s.id));
  } catch (err) {
    showError(err, "Could not create a session");
  }
});

els.rename.addEventListener("click", async () => {
  const s = state.current;
  if (!s) return;
  const title = await ask({ title: "Rename session", input: { value: s.title || "", label: "Title" }, ok: "Rename" });
  if (title === null) return;
  try {
    const updated = await client.updateSession(s.id, { title: title.trim() });
    if (state.current?.id === s.id) state.current = { ...state.current, ...updated };
    renderHeader();
    const entry = state.sessions.find((x) => x.id === s.id);
    if (entry) entry.title = updated.title;
    renderSessions();
    tellTabs({ id: s.id, title: updated.title });
    succeeded("Could not rename");
  } catch (err) {
    showError(err, "Could not rename");
  }
});

els.del.addEventListener("click", async () => {
  const s = state.current;
  if (!s) return;
  const yes = await ask({
    title: "Delete session?",
    text: `“${sessionTitle(s)}” and all its turns will be deleted. This cannot be undone.`,
    ok: "Delete",
    danger: true,
  });
  if (!yes) return;
  try {
    await client.deleteSession(s.id);
    tellTabs({ id: s.id, deleted: true });
    state.sessions = state.sessions.filter((x) => x.id !== s.id);
    navigate("/");
    refreshSessions();
  } catch (err) {
    showError(err, "Could not delete");
  }
});

els.signOut.hidden = !client.apiKey;
els.signOut.addEventListener("click", () => {
  storage.set("");
  client.apiKey = "";
  location.reload();
});

// ---- routing ---------------------------------------------------------------

function navigate(path) {
  if (location.pathname !== path) history.pushState(null, "", path);
  route();
}

function route() {
  const m = /^\/s\/([^/]+)\/?$/.exec(location.pathname);
  setSidebar(false);
  if (!m) {
    closeSession();
    return;
  }
  let id;
  try {
    id = decodeURIComponent(m[1]);
  } catch {
    // A link cut in the middle of a character (%E2%82): no session has
    // such a name.
    closeSession();
    showError({ message: "this link does not name a session", code: "not_found", status: 404 }, "No such session");
    return;
  }
  openSession(id);
}

window.addEventListener("popstate", route);

// ---- one session -------------------------------------------------------------

function closeSession() {
  state.seq++;
  state.conn?.close();
  state.conn = null;
  state.current = null;
  state.chain = [];
  state.streams.clear();
  state.running = null;
  state.ended.clear();
  state.hasOlder = false;
  setConn("");
  renderHeader();
  renderTranscript();
  renderSessions();
  document.title = "sessiond";
}

// openSession shows session id; state.opening is its load in flight (a
// message sent meanwhile waits for it).
function openSession(id) {
  const p = loadSession(id);
  state.opening = p;
  p.finally(() => {
    if (state.opening === p) state.opening = null;
  });
  return p;
}

async function loadSession(id) {
  // The same session again: nothing to do while its connection lives; a
  // connection that ended for good (refused) is opened afresh.
  if (state.current?.id === id && state.conn && state.conn.status !== "closed") return;
  closeSession();
  const seq = state.seq;
  state.current = { id, title: "", loading: true };
  renderHeader();
  renderSessions();
  els.empty.hidden = true;
  try {
    const [session, page] = await Promise.all([client.getSession(id), client.listTurns(id, { limit: TURN_PAGE })]);
    if (seq !== state.seq) return;
    state.current = session;
    state.running = session.generation?.id || null;
    mergeSnapshot(page.turns || [], page.has_more);
    renderHeader();
    renderSessions();
    succeeded("No such session", "Could not open the session");
  } catch (err) {
    if (seq !== state.seq) return;
    state.current = null;
    renderHeader();
    renderTranscript();
    showError(err, err.status === 404 ? "No such session" : "Could not open the session");
    return;
  }
  connect(id, seq);
  if (matchMedia("(pointer: fine)").matches) els.input.focus();
}

function connect(id, seq) {
  const conn = client.connect(id);
  state.conn = conn;
  setConn(conn.status);
  const live = (fn) => (m) => {
    if (seq === state.seq) fn(m);
  };
  conn.on(
    "status",
    live((s) => setConn(s.status, s)),
  );
  conn.on(
    "ready",
    live(({ session }) => {
      state.current = { ...state.current, ...session };
      // Whatever runs now announces itself with a turn after this.
      state.running = session.generation?.id || null;
      renderHeader();
      // Catch up with turns committed while the socket was away.
      syncTurns(seq);
    }),
  );
  conn.on(
    "turn",
    live(({ turn }) => {
      upsertTurn(turn);
      if (turn.role === "assistant" && turn.status === "streaming") state.running = turn.generation_id;
      if (turn.role !== "assistant" || turn.status !== "streaming") {
        const text = previewOf(turn);
        if (text) touchSession(state.current, text);
      }
      renderTranscript();
    }),
  );
  conn.on(
    "delta",
    live((m) => {
      const buf = stream(m.generation);
      if (m.tool_call) {
        const tc = m.tool_call;
        const c = (buf.calls[tc.index ?? 0] ||= { id: "", name: "", arguments: "" });
        if (tc.id) c.id = tc.id;
        if (tc.name) c.name = tc.name.startsWith(c.name) ? tc.name : c.name + tc.name; // as the server joins a name sent in parts
        c.arguments += tc.arguments || "";
      } else {
        buf.text += m.text || "";
      }
      const t = state.chain.find((x) => x.generation_id === m.generation);
      if (t) scheduleTurn(t.id);
    }),
  );
  conn.on(
    "done",
    live((m) => {
      if (m.turn) upsertTurn(m.turn);
      if (m.turn?.role === "assistant") announce(m.turn);
      state.streams.delete(m.generation);
      state.ended.add(m.generation);
      if (state.running === m.generation) state.running = null;
      renderTranscript();
    }),
  );
  conn.on(
    "error",
    live((m) => {
      if (m.generation) {
        // The failed turn follows as a turn message; show it failed now.
        const t = state.chain.find((x) => x.generation_id === m.generation);
        if (t && t.status === "streaming") upsertTurn({ ...t, status: "failed", error: { code: m.code, message: m.message } });
        els.announce.textContent = `Reply failed: ${m.message} (${m.code})`;
        state.streams.delete(m.generation);
        state.ended.add(m.generation);
        if (state.running === m.generation) state.running = null;
        renderTranscript();
        return;
      }
      showError(m);
    }),
  );
}

function stream(gid) {
  let b = state.streams.get(gid);
  if (!b) {
    b = { text: "", calls: [] };
    state.streams.set(gid, b);
  }
  return b;
}

async function syncTurns(seq) {
  try {
    const page = await client.listTurns(state.current.id, { limit: TURN_PAGE });
    if (seq !== state.seq) return;
    mergeSnapshot(page.turns || [], page.has_more);
  } catch (err) {
    if (seq === state.seq) showError(err, "Could not load turns");
  }
}

// pick chooses between two versions of a turn: a finished turn is never
// replaced by a streaming one that was read earlier.
function pick(old, t) {
  if (!old) return t;
  if (old.status !== "streaming" && t.status === "streaming") return old;
  // The same turn again (a snapshot after a reconnect): keep the shown
  // object, so that its element is not rendered again (a 30 MB turn took
  // seconds) and the reader's selection survives.
  if (sameTurn(old, t)) return old;
  return t;
}

function sameTurn(a, b) {
  return (
    a.status === b.status &&
    a.finish_reason === b.finish_reason &&
    JSON.stringify(a.error ?? null) === JSON.stringify(b.error ?? null) &&
    JSON.stringify(a.usage ?? null) === JSON.stringify(b.usage ?? null) &&
    (a.tool_calls?.length ?? 0) === (b.tool_calls?.length ?? 0) &&
    contentLength(a) === contentLength(b)
  );
}

function contentLength(t) {
  return typeof t.content === "string" ? t.content.length : JSON.stringify(t.content ?? "").length;
}

// mergeSnapshot shows the newest turns of the branch as the server listed
// them, keeping anything newer that arrived live meanwhile.
function mergeSnapshot(turns, hasMore) {
  const byId = new Map(state.chain.map((t) => [t.id, t]));
  const local = state.chain;
  let chain = turns.map((t) => pick(byId.get(t.id), t));
  let older = !!hasMore;
  // Keep earlier turns already shown ("Show earlier turns") that lead to it.
  const k = chain.length && hasMore ? local.findIndex((t) => t.id === chain[0].parent_id) : -1;
  if (k >= 0) {
    chain = local.slice(0, k + 1).concat(chain);
    older = state.hasOlder;
  }
  state.chain = chain;
  state.hasOlder = older;
  const last = state.chain.at(-1)?.id ?? 0;
  for (const t of local) if (t.id > last) upsertTurn(t);
  renderTranscript();
}

// upsertTurn adds or updates a turn of the shown branch. A new turn whose
// parent is earlier in the branch starts a new branch there (regenerate).
function upsertTurn(t) {
  const chain = state.chain;
  const i = chain.findIndex((x) => x.id === t.id);
  if (i >= 0) {
    chain[i] = pick(chain[i], t);
    dirtyTurns.add(t.id);
    return;
  }
  const p = t.parent_id;
  if (chain.length === 0 || p === chain.at(-1).id) {
    chain.push(t);
    return;
  }
  const j = p == null ? -1 : chain.findIndex((x) => x.id === p);
  if (j >= 0) {
    state.chain = chain.slice(0, j + 1).concat(t);
  } else if (p == null || p < chain[0].id) {
    state.chain = [t]; // a new root, or a branch from before the loaded page
    state.hasOlder = p != null;
  } else {
    // A turn of a branch not shown: another client went on from an
    // earlier turn of another branch, which made its turn the head.
    // Shown here, it would mix the two branches: read the head's.
    resyncSoon();
  }
}

// resyncSoon reads the open session's branch again, once for the turns
// that call it at the same time.
let resyncTimer = 0;
function resyncSoon() {
  if (resyncTimer) return;
  const seq = state.seq;
  resyncTimer = setTimeout(() => {
    resyncTimer = 0;
    if (seq === state.seq) syncTurns(seq);
  }, 50);
}

// ---- rendering ---------------------------------------------------------------

function renderHeader() {
  const s = state.current;
  els.title.textContent = s ? sessionTitle(s) : "sessiond";
  els.rename.hidden = els.del.hidden = !s;
  document.title = s ? `${sessionTitle(s)} · sessiond` : "sessiond";
  renderStop();
}

function renderStop() {
  els.stop.hidden = !state.running;
}

const turnEls = new Map(); // turn id → <li>
const dirtyTurns = new Set();
let frameQueued = false;

let renderCost = 0; // ms the last renderTranscript took

function scheduleTurn(id) {
  dirtyTurns.add(id);
  if (frameQueued) return;
  frameQueued = true;
  const run = () => {
    frameQueued = false;
    renderTranscript();
  };
  // A long reply costs more to render each time: leave the page four
  // times as long as the last render took, so that it stays responsive
  // (rendering on every frame froze it for seconds at a few MB).
  const wait = renderCost * 4;
  if (document.visibilityState !== "visible") setTimeout(run, Math.max(50, wait)); // no frames in hidden tabs
  else if (wait > 16) setTimeout(() => requestAnimationFrame(run), wait);
  else requestAnimationFrame(run);
}

function renderTranscript() {
  const start = performance.now();
  const stick = nearBottom();
  const keep = new Set(state.chain.map((t) => t.id));
  for (const [id, el] of turnEls) {
    if (!keep.has(id)) {
      turnEls.delete(id);
      el.remove();
    }
  }
  const nodes = state.chain.map((t) => {
    let el = turnEls.get(t.id);
    if (!el) {
      el = document.createElement("li");
      turnEls.set(t.id, el);
      renderTurn(el, t);
    } else if (dirtyTurns.has(t.id) || el._turn !== t) {
      renderTurn(el, t);
    }
    return el;
  });
  dirtyTurns.clear();
  // Reorder only when needed, so focus and selection survive updates.
  const current = [...els.transcript.children];
  if (current.length !== nodes.length || current.some((n, i) => n !== nodes[i])) els.transcript.replaceChildren(...nodes);
  els.empty.hidden = !!state.current;
  els.older.hidden = !state.current || !state.hasOlder;
  els.transcript.hidden = !state.current;
  renderStop();
  if (stick) els.scroller.scrollTop = els.scroller.scrollHeight;
  renderCost = performance.now() - start;
}

function nearBottom() {
  const s = els.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}

function turnText(t) {
  const c = t.content;
  if (typeof c === "string") return c;
  if (Array.isArray(c)) return c.filter((p) => p?.type === "text").map((p) => p.text ?? "").join("");
  return "";
}

const ROLE_NAMES = { user: "You", assistant: "Assistant", tool: "Tool result", system: "System" };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function details(turnId, key, cls, summary, body) {
  const d = el("details", cls);
  d.dataset.key = `${turnId}:${key}`;
  d.open = state.openDetails.has(d.dataset.key);
  const s = el("summary");
  s.append(...summary);
  d.append(s, body);
  return d;
}

function prettyJSON(s) {
  try {
    return JSON.stringify(JSON.parse(s), null, 2);
  } catch {
    return s;
  }
}

// Past this many characters a reply is shown as plain text: formatting
// takes time in proportion, and a streaming reply is rendered many times.
const MARKDOWN_LIMIT = 256 * 1024;

function renderTurn(li, t) {
  li._turn = t;
  li.className = "turn";
  li.dataset.id = t.id;
  li.dataset.role = t.role;
  li.dataset.status = t.status;
  if (t.generation_id) li.dataset.generation = t.generation_id;
  li.setAttribute("aria-busy", t.status === "streaming" ? "true" : "false");
  const buf = t.status === "streaming" && t.generation_id ? state.streams.get(t.generation_id) : null;
  const text = buf ? buf.text : turnText(t);
  const calls = buf ? buf.calls.filter(Boolean).map((c) => ({ id: c.id, function: { name: c.name, arguments: c.arguments } })) : t.tool_calls || [];
  const parts = [];

  const meta = el("div", "meta");
  meta.append(el("span", "role", ROLE_NAMES[t.role] || t.role));
  if (t.status !== "complete") meta.append(el("span", "badge status-" + t.status, t.status === "streaming" ? "writing…" : t.status));
  if (t.usage) {
    const u = t.usage;
    const usage = el("span", "usage", `${u.total_tokens ?? 0} tokens`);
    usage.title = `prompt ${u.prompt_tokens ?? 0} · completion ${u.completion_tokens ?? 0} · total ${u.total_tokens ?? 0}`;
    meta.append(usage);
  }
  parts.push(meta);

  if (t.role === "tool") {
    const pre = el("pre");
    pre.append(el("code", "", prettyJSON(text)));
    parts.push(details(t.id, "result", "tool-result", [el("span", "", "Tool result "), el("code", "", t.tool_call_id || "")], pre));
  } else if (t.role === "system") {
    parts.push(details(t.id, "system", "system-prompt", [el("span", "", "System prompt")], el("div", "content plain", text)));
  } else if (t.role === "user") {
    parts.push(el("div", "content plain", text));
  } else if (text.length > MARKDOWN_LIMIT) {
    parts.push(el("div", "content plain", text));
    parts.push(el("p", "note", "Shown as plain text: too long to format."));
  } else {
    const content = el("div", "content md");
    // Safe: renderMarkdown escapes all source text (see markdown.js).
    content.innerHTML = renderMarkdown(text);
    parts.push(content);
  }

  calls.forEach((c, k) => {
    const pre = el("pre");
    pre.append(el("code", "", prettyJSON(c.function?.arguments || "")));
    parts.push(
      details(t.id, "call" + k, "tool-call", [el("span", "", "Tool call "), el("code", "", c.function?.name || "…")], pre),
    );
  });

  if (t.error) parts.push(el("p", "turn-error", `${t.error.message || "failed"} (${t.error.code})`));

  if (t.status !== "streaming") {
    const actions = el("div", "actions");
    if (t.role === "assistant" && t.parent_id != null) {
      const b = el("button", "link", "Regenerate");
      b.type = "button";
      b.dataset.action = "regenerate";
      actions.append(b);
    }
    const f = el("button", "link", "Fork from here");
    f.type = "button";
    f.dataset.action = "fork";
    f.title = "Copy the conversation up to this turn into a new session";
    actions.append(f);
    parts.push(actions);
  }
  li.replaceChildren(...parts);
}

els.transcript.addEventListener(
  "toggle",
  (e) => {
    const d = e.target;
    if (!(d instanceof HTMLDetailsElement) || !d.dataset.key) return;
    if (d.open) state.openDetails.add(d.dataset.key);
    else state.openDetails.delete(d.dataset.key);
  },
  true,
);

els.transcript.addEventListener("click", async (e) => {
  const b = e.target.closest("button[data-action]");
  if (!b) return;
  const li = b.closest("li.turn");
  const t = li?._turn;
  const s = state.current;
  if (!t || !s) return;
  b.disabled = true;
  try {
    if (b.dataset.action === "regenerate") {
      // A new answer to the same question: a sibling branch under the
      // turn this one answered; the server makes it the head.
      const res = await client.postTurns(s.id, { turns: [], generate: true, parent_id: t.parent_id });
      if (res.generation && state.current?.id === s.id) markRunning(res.generation.id);
      renderStop();
    } else if (b.dataset.action === "fork") {
      const fork = await client.fork(s.id, t.id);
      touchSession(fork, previewOf(t)); // the fork ends with t
      navigate("/s/" + encodeURIComponent(fork.id));
    }
  } catch (err) {
    showError(err, b.dataset.action === "fork" ? "Could not fork" : "Could not regenerate");
  } finally {
    b.disabled = false;
  }
});

els.older.addEventListener("click", async () => {
  const s = state.current;
  if (!s || !state.chain.length) return;
  const seq = state.seq;
  try {
    const page = await client.listTurns(s.id, { before: state.chain[0].id, limit: TURN_PAGE });
    if (seq !== state.seq) return;
    const have = new Set(state.chain.map((t) => t.id));
    state.chain = (page.turns || []).filter((t) => !have.has(t.id)).concat(state.chain);
    state.hasOlder = page.has_more;
    const before = els.scroller.scrollHeight;
    renderTranscript();
    els.scroller.scrollTop += els.scroller.scrollHeight - before;
  } catch (err) {
    showError(err, "Could not load earlier turns");
  }
});

// ---- composer ------------------------------------------------------------------

function autosize() {
  els.input.style.height = "auto";
  els.input.style.height = Math.min(els.input.scrollHeight, 240) + "px";
}

els.input.addEventListener("input", autosize);

// The keyboard hint fits in the box on wide screens only.
const wide = matchMedia("(min-width: 761px)");
const placeholder = () => {
  els.input.placeholder = wide.matches ? "Message — Enter to send, Shift+Enter for a new line" : "Message";
};
wide.addEventListener("change", placeholder);
placeholder();

els.input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && !e.isComposing) {
    e.preventDefault();
    els.composer.requestSubmit();
  }
});

// Messages are sent one at a time, in the order typed: a message typed
// while the one before still creates or opens its session waits for it,
// and goes to the same session (not a second new one).
let sending = Promise.resolve();

els.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = els.input.value;
  if (!text.trim()) return;
  els.input.value = "";
  autosize();
  clearError();
  const target = state.current?.id ?? null; // the session it was typed in (null: a new one)
  const prev = sending;
  sending = (async () => {
    await prev;
    await submit(text, target);
  })();
});

async function submit(text, target) {
  try {
    // The message before it may have made the session this one goes to.
    if (target === null && state.current && state.created === state.current.id) target = state.current.id;
    if (target !== (state.current?.id ?? null)) throw new Error("another session was opened before it was sent");
    if (state.opening) await state.opening;
    if (!state.current) {
      const s = await client.createSession({ title: titleFrom(text) });
      touchSession(s, "");
      state.created = s.id;
      history.pushState(null, "", "/s/" + encodeURIComponent(s.id));
      await openSession(s.id);
    } else if (!state.current.loading && !state.current.title && state.current.last_turn_id === 0 && state.chain.length === 0) {
      const id = state.current.id;
      client
        .updateSession(id, { title: titleFrom(text) })
        .then((u) => {
          if (state.current?.id === id) state.current = { ...state.current, ...u };
          renderHeader();
          touchSession(u, "");
        })
        .catch(() => {});
    }
    if (!state.conn) throw new Error("no session is open");
    const seq = state.seq;
    const res = await state.conn.send([{ role: "user", content: text }], { generate: true });
    if (seq !== state.seq) return; // another session is open now
    for (const t of res.turns || []) upsertTurn(t);
    if (res.generation && ["queued", "running"].includes(res.generation.status)) markRunning(res.generation.id);
    renderTranscript();
  } catch (err) {
    // Back in the box, before anything typed since: never dropped.
    els.input.value = els.input.value ? text + "\n\n" + els.input.value : text;
    autosize();
    showError(err, "Not sent");
  }
}

// markRunning makes gid the session's running generation, unless its end
// has come already: a short reply's done event can arrive before the
// answer of the request that started it, and Stop would stay for good.
function markRunning(gid) {
  if (!state.ended.has(gid)) state.running = gid;
}

// clip returns s cut to at most n characters as a reader counts them, and
// to at most maxBytes bytes of UTF-8 (a cut never splits an emoji or an
// accented letter), with … when cut.
function clip(s, n, maxBytes = Infinity) {
  const seg = typeof Intl !== "undefined" && Intl.Segmenter ? new Intl.Segmenter() : null;
  const head = s.slice(0, 8 * n);
  const chars = seg ? Array.from(seg.segment(head), (x) => x.segment) : Array.from(head);
  const whole = head.length === s.length;
  if (!whole) chars.pop(); // the slice may have cut the last one short
  const size = (c) => utf8.encode(c).length;
  const total = chars.reduce((b, c) => b + size(c), 0);
  if (whole && chars.length <= n && total <= maxBytes) return chars.join("");
  let k = Math.min(chars.length, n - 1);
  let bytes = chars.slice(0, k).reduce((b, c) => b + size(c), 0);
  while (k > 0 && bytes + size("…") > maxBytes) bytes -= size(chars[--k]);
  return chars.slice(0, k).join("") + "…";
}

const utf8 = new TextEncoder();

// MAX_TITLE_BYTES is the server's limit on a title (MaxTitleBytes).
const MAX_TITLE_BYTES = 1024;

function titleFrom(text) {
  return clip(text.trim().split("\n")[0], 60, MAX_TITLE_BYTES);
}

// previewOf is a turn's text as the session list shows it.
function previewOf(t) {
  return clip(turnText(t).replace(/\s+/g, " ").trim(), 140);
}

els.stop.addEventListener("click", async () => {
  const gid = state.running;
  if (!gid || !state.conn) return;
  els.stop.disabled = true;
  try {
    const g = await state.conn.cancel(gid);
    // A queued generation ends with no events: nothing else clears it.
    if (g && g.status !== "running" && g.status !== "queued" && state.running === gid) state.running = null;
    renderStop();
  } catch (err) {
    showError(err, "Could not stop");
  } finally {
    els.stop.disabled = false;
    els.input.focus();
  }
});

// ---- layout ---------------------------------------------------------------------

function setSidebar(open) {
  els.app.classList.toggle("sidebar-open", open);
  els.menu.setAttribute("aria-expanded", String(open));
}

els.menu.addEventListener("click", () => {
  const open = !els.app.classList.contains("sidebar-open");
  setSidebar(open);
  if (open) (els.sessionList.querySelector("a") || els.newSession).focus();
});

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && els.app.classList.contains("sidebar-open")) {
    setSidebar(false);
    els.menu.focus();
  }
});

// Refresh the list when the page comes back into view (other devices may
// have been busy).
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") syncSessions();
});

refreshSessions();
route();
