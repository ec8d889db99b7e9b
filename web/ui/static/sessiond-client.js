// sessiond-client.js — a small client for sessiond's REST and WebSocket API
// (docs: web/ui/README.md; the protocol: API.md). Plain ES module, no
// dependencies; works in browsers (and anywhere with fetch and WebSocket).
//
//   import { SessiondClient } from "/static/sessiond-client.js";
//   const client = new SessiondClient({ baseURL: "http://localhost:8080" });
//   const s = await client.createSession({ title: "demo" });
//   const conn = client.connect(s.id);
//   conn.on("delta", (ev) => ev.text && process.stdout.write(ev.text));
//   conn.on("done", (ev) => console.log(ev.turn?.content, ev.usage)); // turn null: ended before it started
//   await conn.send([{ role: "user", content: "/words 5" }]);

/**
 * SessiondError is what every failed call rejects with: status is the HTTP
 * status (0 for a network failure), code and message are the server's
 * {"error": {code, message}} (or a client-side code such as "network").
 */
export class SessiondError extends Error {
  constructor(status, code, message, cause) {
    super(message || code);
    this.name = "SessiondError";
    this.status = status;
    this.code = code;
    if (cause) this.cause = cause;
  }
}

/** Emitter is a minimal event emitter: on(type, fn) returns an unsubscribe function. */
class Emitter {
  #handlers = new Map();

  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
  }

  emit(type, detail) {
    for (const fn of [...(this.#handlers.get(type) ?? [])]) {
      try {
        fn(detail);
      } catch (err) {
        console.error(`sessiond: ${type} handler:`, err);
      }
    }
  }
}

/** newKey returns a random idempotency key (also outside secure contexts). */
export function newKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// MAX_REAUTH bounds how many times one request asks onUnauthorized.
const MAX_REAUTH = 5;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * SessiondClient calls one sessiond server. It is cheap; make one per server
 * (and API key) and share it.
 */
export class SessiondClient {
  /**
   * @param {object} [options]
   * @param {string} [options.baseURL] server origin, e.g. "http://localhost:8080"; default: the page's origin
   * @param {string} [options.apiKey] sent as "Authorization: Bearer …"; empty: none (auth off)
   * @param {(err: SessiondError) => Promise<string|null>} [options.onUnauthorized]
   *   called when a request answers 401; resolve with a new API key to retry
   *   the request with it, or null to fail with the 401. A key refused in
   *   turn asks again (a mistyped key), up to 5 times for one request.
   *   Calls made while one is pending share it.
   * @param {typeof fetch} [options.fetch] fetch to use (tests, Node)
   * @param {typeof WebSocket} [options.WebSocket] WebSocket to use
   */
  constructor(options = {}) {
    const origin = globalThis.location?.origin;
    this.baseURL = (options.baseURL || origin || "").replace(/\/+$/, "");
    this.apiKey = options.apiKey || "";
    this.onUnauthorized = options.onUnauthorized || null;
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
  }

  #authPending = null;

  /** url returns the absolute URL of an API path such as "/v1/sessions". */
  url(path) {
    return this.baseURL + path;
  }

  /** wsURL returns the ws: or wss: URL of an API path. */
  wsURL(path) {
    return this.url(path).replace(/^http/, "ws");
  }

  /**
   * request sends one API call and resolves with the decoded JSON answer
   * (undefined for 204). It rejects with a SessiondError.
   * @param {string} method
   * @param {string} path e.g. "/v1/sessions"
   * @param {object} [body] sent as JSON
   * @param {{idempotencyKey?: string, query?: object, signal?: AbortSignal}} [opts]
   */
  async request(method, path, body, opts = {}) {
    let url = this.url(path);
    if (opts.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(opts.query)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
      const qs = q.toString();
      if (qs) url += "?" + qs;
    }
    for (let asked = 0; ; ) {
      const headers = { Accept: "application/json" };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const usedKey = this.apiKey;
      if (usedKey) headers.Authorization = "Bearer " + usedKey;
      if (opts.idempotencyKey) headers["Idempotency-Key"] = opts.idempotencyKey;
      let res;
      try {
        res = await this.fetch(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: opts.signal,
        });
      } catch (err) {
        if (err?.name === "AbortError") throw err;
        throw new SessiondError(0, "network", "cannot reach the server", err);
      }
      if (res.status === 204) return undefined;
      const text = await res.text();
      let data;
      try {
        data = text ? JSON.parse(text) : undefined;
      } catch {
        data = undefined;
      }
      if (res.ok) return data;
      const e = data?.error;
      const err = new SessiondError(res.status, e?.code || `http_${res.status}`, e?.message || res.statusText || `HTTP ${res.status}`);
      if (res.status === 401 && asked < MAX_REAUTH) {
        // Another call may have signed in meanwhile: try its key first.
        if (this.apiKey !== usedKey) continue;
        asked++;
        if (this.onUnauthorized && (await this.#reauth(err))) continue;
      }
      throw err;
    }
  }

  // reauth asks onUnauthorized for a key, once for all concurrent callers;
  // it reports whether there is a new key to retry with.
  async #reauth(err) {
    const used = this.apiKey;
    if (!this.#authPending) {
      this.#authPending = Promise.resolve()
        .then(() => this.onUnauthorized(err))
        .catch(() => null)
        .then((key) => {
          if (key) this.apiKey = key;
          return key;
        })
        .finally(() => setTimeout(() => (this.#authPending = null), 0));
    }
    await this.#authPending;
    return this.apiKey !== used;
  }

  // Sessions

  /** listSessions resolves with {sessions: [{id, title, preview, created_at, updated_at}], next_cursor}, newest first. */
  listSessions({ limit, cursor } = {}) {
    return this.request("GET", "/v1/sessions", undefined, { query: { limit, cursor } });
  }
  /** createSession resolves with the new session; fields: {id?, title?, model?, system?, metadata?}. */
  createSession(fields = {}, { idempotencyKey } = {}) {
    return this.request("POST", "/v1/sessions", fields, { idempotencyKey });
  }
  /** getSession resolves with the session, whose generation is the running one (or null). */
  getSession(id) {
    return this.request("GET", `/v1/sessions/${enc(id)}`);
  }
  /** updateSession changes {title?, model?, system?, metadata?} and resolves with the session. */
  updateSession(id, fields) {
    return this.request("PATCH", `/v1/sessions/${enc(id)}`, fields);
  }
  /** deleteSession deletes a session and everything in it. */
  deleteSession(id) {
    return this.request("DELETE", `/v1/sessions/${enc(id)}`);
  }
  /** listTurns resolves with {turns, has_more}; options {after, before, limit, branch} as in API.md. */
  listTurns(id, { after, before, limit, branch } = {}) {
    return this.request("GET", `/v1/sessions/${enc(id)}/turns`, undefined, { query: { after, before, limit, branch } });
  }
  /**
   * postTurns appends turns and optionally starts a generation; body is
   * {turns, generate?, model?, parent_id?}. Resolves with {turns, generation}.
   * An idempotencyKey makes a retry safe (one is made if absent).
   */
  postTurns(id, body, { idempotencyKey = newKey() } = {}) {
    return this.request("POST", `/v1/sessions/${enc(id)}/turns`, { turns: [], ...body }, { idempotencyKey });
  }
  /** getGeneration resolves with {id, status, turn_id, offset, error}. */
  getGeneration(id, generationId) {
    return this.request("GET", `/v1/sessions/${enc(id)}/generations/${enc(generationId)}`);
  }
  /** cancel cancels a generation (idempotent) and resolves with its final state. */
  cancel(id, generationId) {
    return this.request("POST", `/v1/sessions/${enc(id)}/generations/${enc(generationId)}/cancel`);
  }
  /** fork copies the branch up to turnId into a new session and resolves with it. */
  fork(id, turnId) {
    return this.request("POST", `/v1/sessions/${enc(id)}/fork`, { turn_id: turnId });
  }
  /** createTicket resolves with {ticket, expires_at}, the pass of one WebSocket. */
  createTicket(sessionId) {
    return this.request("POST", "/v1/tickets", { session_id: sessionId });
  }

  /**
   * connect opens a live connection to a session (see Connection). It
   * starts connecting at the next tick, so handlers added right away see
   * every event.
   * @param {string} sessionId
   * @param {{resume?: {generation: string, after: number}}} [options] where to resume
   */
  connect(sessionId, options = {}) {
    return new Connection(this, sessionId, options);
  }
}

function enc(s) {
  return encodeURIComponent(String(s));
}

// Reconnect backoff: the first retry is quick, then doubling up to the cap,
// with ±25% jitter so that many tabs do not come back in step.
const BACKOFF_MIN = 250;
const BACKOFF_MAX = 10_000;
// A ping this often; a ping that nothing answers within PONG_WAIT means the
// link is dead (a network that vanished sends no close frame). Silence
// alone says nothing: a background tab's timers may run once a minute.
const PING_EVERY = 20_000;
const PONG_WAIT = 15_000;
// Close reasons of a refused socket (1008) that stand: anything else is
// retried.
const FINAL_REFUSALS = new Set(["not_found", "forbidden", "unauthorized", "invalid_request", "policy_violation"]);

/**
 * Connection is the live view of one session over a WebSocket. It keeps
 * itself connected: when the socket drops it reconnects with backoff and
 * resumes the generation it was following after the last offset it saw, so
 * every delta reaches its handlers exactly once, in order.
 *
 * Events (on(type, fn)):
 *   ready   {type, session}             after every (re)connect
 *   turn    {type, turn}                every committed turn (upsert by id)
 *   delta   {type, generation, offset, text | tool_call}
 *   done    {type, generation, offset, turn, usage, finish_reason}
 *   error   {type, generation?, offset?, code, message}
 *   status  {status, attempt?, retryIn?, error?}  status is connecting | open | resuming | closed
 */
export class Connection extends Emitter {
  #client;
  #ws = null;
  #epoch = 0; // bumps with each socket, so events of a stale one are ignored
  #attempt = 0;
  #timer = null;
  #heartbeat = null;
  #lastHeard = 0;
  #pingAt = 0; // when the unanswered ping, if any, was sent
  #closed = false;
  #everOpen = false;
  #seen = new Map(); // generation → last offset delivered
  #following = null; // the generation whose events are expected next
  #pending = []; // sends written to the socket, not yet confirmed
  #onOnline = () => this.#wake();
  // The browser says the network is gone: a socket may still look open for
  // a while (until the heartbeat misses), so resume now; attempts fail
  // until "online" wakes it.
  #onOffline = () => {
    if (!this.#closed && this.status === "open") this.#drop(BACKOFF_MIN);
  };

  constructor(client, sessionId, options = {}) {
    super();
    this.#client = client;
    /** The session id. */
    this.sessionId = sessionId;
    /** connecting | open | resuming | closed */
    this.status = "connecting";
    /** The session as the last ready message had it. */
    this.session = null;
    if (options.resume?.generation) {
      this.#seen.set(options.resume.generation, options.resume.after || 0);
      this.#following = options.resume.generation;
    }
    globalThis.addEventListener?.("online", this.#onOnline);
    globalThis.addEventListener?.("offline", this.#onOffline);
    setTimeout(() => this.#connect(), 0);
  }

  /** position is where a reconnect resumes: {generation, after}, or null. */
  get position() {
    const g = this.#following;
    return g ? { generation: g, after: this.#seen.get(g) ?? 0 } : null;
  }

  /**
   * send posts turns (e.g. [{role: "user", content: "hi"}]) and, unless
   * generate is false, starts a generation. Over the socket when it is
   * open, else over REST; a send cut off by a dropped socket is retried
   * over REST with the same idempotency key, so it happens exactly once,
   * for as long as this connection lives while the server is out of reach.
   * Resolves with {turns} (and, over REST, generation) once committed;
   * rejects with a SessiondError the server gave.
   */
  send(turns, { generate = true, idempotencyKey = newKey(), model } = {}) {
    const p = { turns, generate, idempotencyKey, model };
    p.promise = new Promise((resolve, reject) => {
      p.resolve = resolve;
      p.reject = reject;
    });
    const ws = this.#ws;
    if (this.status === "open" && ws?.readyState === 1) {
      const msg = { type: "send", turns, generate, idempotency_key: idempotencyKey };
      if (model) msg.model = model;
      p.matched = [];
      this.#pending.push(p);
      ws.send(JSON.stringify(msg));
    } else {
      this.#restSend(p);
    }
    return p.promise;
  }

  /** cancel stops a generation (idempotent) and resolves with its final state. */
  cancel(generationId) {
    // Over REST: its answer is definite, where the socket's cancel has none.
    return this.#client.cancel(this.sessionId, generationId);
  }

  /** reconnect drops the socket and connects again now, resuming. */
  reconnect() {
    this.#drop(0);
  }

  /** close ends the connection for good. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    clearInterval(this.#heartbeat);
    globalThis.removeEventListener?.("online", this.#onOnline);
    globalThis.removeEventListener?.("offline", this.#onOffline);
    this.#epoch++;
    const ws = this.#ws;
    this.#ws = null;
    if (ws) ws.close(1000, "bye");
    for (const p of this.#pending.splice(0)) this.#restSend(p);
    this.#setStatus("closed");
  }

  #setStatus(status, extra = {}, force = false) {
    const changed = status !== this.status;
    this.status = status;
    if (changed || force || extra.retryIn !== undefined) this.emit("status", { status, ...extra });
  }

  async #connect() {
    if (this.#closed) return;
    const epoch = ++this.#epoch;
    this.#setStatus(this.#everOpen ? "resuming" : "connecting", { attempt: this.#attempt }, epoch === 1);
    let ticket;
    try {
      ({ ticket } = await this.#client.createTicket(this.sessionId));
    } catch (err) {
      if (epoch !== this.#epoch) return;
      if (err.status === 401 || err.status === 403 || err.status === 404) {
        this.emit("error", { type: "error", code: err.code, message: err.message });
        this.#fail(err);
        return;
      }
      this.#retryLater(err);
      return;
    }
    if (epoch !== this.#epoch) return;
    let ws;
    try {
      ws = new this.#client.WebSocket(
        this.#client.wsURL(`/v1/sessions/${enc(this.sessionId)}/ws?ticket=${enc(ticket)}`),
      );
    } catch (err) {
      this.#retryLater(new SessiondError(0, "network", String(err?.message || err)));
      return;
    }
    this.#ws = ws;
    ws.onopen = () => {
      if (epoch !== this.#epoch) return;
      const hello = { type: "hello" };
      const pos = this.position;
      if (pos) hello.resume = pos;
      ws.send(JSON.stringify(hello));
      this.#lastHeard = Date.now();
      this.#pingAt = 0;
      clearInterval(this.#heartbeat);
      this.#heartbeat = setInterval(() => this.#beat(epoch), PING_EVERY);
    };
    ws.onmessage = (e) => {
      if (epoch !== this.#epoch) return;
      this.#lastHeard = Date.now();
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      this.#handle(m);
    };
    ws.onclose = (e) => {
      if (epoch !== this.#epoch) return;
      this.#ws = null;
      clearInterval(this.#heartbeat);
      // 1008: the server refused this session (deleted, or access gone);
      // 1013 and 1011 (busy, stopping, failed) are retried below.
      if (e.code === 1008) {
        const [code, ...rest] = (e.reason || "not_found: session not found").split(": ");
        const err = new SessiondError(0, rest.length ? code : "policy_violation", rest.join(": ") || e.reason);
        if (FINAL_REFUSALS.has(err.code)) {
          this.emit("error", { type: "error", code: err.code, message: err.message });
          this.#fail(err);
          return;
        }
      }
      this.#retryLater(new SessiondError(0, "connection_lost", e.reason || "connection lost"));
    };
    ws.onerror = () => {}; // a close event follows
  }

  #beat(epoch) {
    if (epoch !== this.#epoch || !this.#ws) return;
    const now = Date.now();
    if (this.#pingAt && this.#lastHeard < this.#pingAt) {
      // The last ping is unanswered: dead once it has had its time.
      if (now - this.#pingAt > PONG_WAIT) this.#drop(0);
      return;
    }
    try {
      this.#ws.send('{"type":"ping"}');
      this.#pingAt = now;
    } catch {
      this.#drop(0);
    }
  }

  #handle(m) {
    switch (m.type) {
      case "ready":
        this.session = m.session;
        this.#attempt = 0;
        this.#everOpen = true;
        this.#setStatus("open");
        this.emit("ready", m);
        return;
      case "delta":
      case "done":
      case "error": {
        if (!m.generation) {
          const g = this.#following;
          if (m.code === "not_found" && g && String(m.message).includes(g)) {
            // The generation this client resumed is gone: stop asking.
            this.#following = null;
            this.emit("error", m);
            return;
          }
          // An answer to something this client sent: the oldest send fails.
          const p = this.#pending.shift();
          if (p) p.reject(new SessiondError(0, m.code, m.message));
          this.emit("error", m);
          return;
        }
        const last = this.#seen.get(m.generation) ?? 0;
        if (m.offset <= last) return; // seen already (a resume overlaps)
        if (m.type === "delta" && m.offset > last + 1) {
          // A hole: this socket joined the generation late. Resume it.
          this.#following = m.generation;
          this.#drop(0);
          return;
        }
        // A final event may follow a hole: the committed turn it carries
        // (or the turn message before it) stands for what was missed.
        this.#remember(m.generation, m.offset);
        if (m.type === "delta") this.#following = m.generation;
        else if (this.#following === m.generation) this.#following = null;
        this.emit(m.type, m);
        return;
      }
      case "turn": {
        const t = m.turn;
        if (t?.role === "assistant" && t.status === "streaming" && t.generation_id && !this.#seen.has(t.generation_id)) {
          this.#remember(t.generation_id, 0);
          this.#following = t.generation_id;
        }
        this.#confirm(t);
        this.emit("turn", m);
        return;
      }
      case "resume_required": {
        // Resume from where the server says, or earlier if this client has
        // seen less; repeats are dropped by offset.
        const seen = this.#seen.get(m.generation) ?? 0;
        this.#seen.set(m.generation, Math.min(seen, m.after ?? 0));
        this.#following = m.generation;
        this.#drop(0);
        return;
      }
      case "pong":
      default:
        return;
    }
  }

  #remember(generation, offset) {
    this.#seen.delete(generation); // keep insertion order = recency
    this.#seen.set(generation, offset);
    if (this.#seen.size > 32) this.#seen.delete(this.#seen.keys().next().value);
  }

  // confirm resolves the send whose turns the server just committed.
  #confirm(t) {
    if (!t || t.role === "assistant") {
      // A generation-only send (no turns) is confirmed by its assistant turn.
      const p = this.#pending[0];
      if (p && p.turns.length === 0 && t?.status === "streaming") {
        this.#pending.shift();
        p.resolve({ turns: [] });
      }
      return;
    }
    const p = this.#pending[0];
    if (!p) return;
    const want = p.turns[p.matched.length];
    if (!want || want.role !== t.role || JSON.stringify(want.content) !== JSON.stringify(t.content)) return;
    p.matched.push(t);
    if (p.matched.length === p.turns.length) {
      this.#pending.shift();
      p.resolve({ turns: p.matched });
    }
  }

  async #restSend(p) {
    const body = { turns: p.turns, generate: p.generate };
    if (p.model) body.model = p.model;
    for (let i = 0; ; i++) {
      try {
        p.resolve(await this.#client.postTurns(this.sessionId, body, { idempotencyKey: p.idempotencyKey }));
        return;
      } catch (err) {
        // A server out of reach (the network, or a restart: 503) is waited
        // for as long as this connection lives, so that what the person
        // typed is never dropped for an outage longer than a few tries;
        // other refusals worth a retry (429, 500) get five.
        const unreachable = err.status === 0 || err.status === 503;
        const transient = unreachable || err.status === 429 || err.status >= 500;
        if (!transient || (i >= 5 && !(unreachable && !this.#closed))) {
          p.reject(err);
          return;
        }
        await sleep(Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (Math.min(i, 10) + 1)));
      }
    }
  }

  // drop closes the socket (if any) and reconnects after delay ms.
  #drop(delay) {
    if (this.#closed) return;
    this.#epoch++;
    clearInterval(this.#heartbeat);
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      try {
        ws.close(1000, "reconnecting");
      } catch {}
    }
    for (const p of this.#pending.splice(0)) this.#restSend(p);
    clearTimeout(this.#timer);
    if (this.#everOpen) this.#setStatus("resuming", { attempt: this.#attempt, retryIn: delay });
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  #retryLater(err) {
    if (this.#closed) return;
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** this.#attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.#attempt++;
    this.#epoch++;
    this.#ws = null;
    for (const p of this.#pending.splice(0)) this.#restSend(p);
    clearTimeout(this.#timer);
    this.#setStatus("resuming", { attempt: this.#attempt, retryIn: delay, error: err });
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  // wake reconnects at once when the browser says it is back online.
  #wake() {
    if (!this.#closed && this.status === "resuming") {
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => this.#connect(), 0);
    }
  }

  #fail(err) {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearInterval(this.#heartbeat);
    globalThis.removeEventListener?.("online", this.#onOnline);
    globalThis.removeEventListener?.("offline", this.#onOffline);
    for (const p of this.#pending.splice(0)) p.reject(err);
    this.#setStatus("closed", { error: err });
  }
}
