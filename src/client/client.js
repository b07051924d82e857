// The hub's browser client: one ES module, no dependencies, no build step.
//
//   import { connect } from 'https://your-hub.example/client.js';
//   const room = connect('https://your-hub.example/rooms/lobby');
//   room.on('message', (m) => console.log(m.id, m.event, m.data));
//   room.on('status', (s) => console.log(s.state, s.transport, s.error));
//   await room.publish({ text: 'hi' });
//
// Guarantees:
// - The page sees every message once, in id order, whichever transport
//   carries it and however often it reconnects; when the hub could not keep
//   what was missed (or its log is not the one the page saw), one `reset`
//   says so and delivery continues from the hub's first kept id.
// - Every publish settles exactly once: with its stored id, or with an
//   error that belongs to it (matched by its `cid`), or a timeout. Publishes
//   carry an idempotency key (WebSocket `cid`, HTTP `Idempotency-Key`), so a
//   retry after a drop, a rate limit or a transport change never stores a
//   message twice. Sends are paced to the hub's rate, so the hub never
//   closes a page for catching up.
// - Every failure is told once: `status` says why (`error`, `message`) and
//   one `error` event carries the code. Nothing the room's publishers send
//   can trigger the client's own events: app events are `message` (all of
//   them) and `event:<name>`.
// - Connections are watched: a silent WebSocket (no frame for 3 ping
//   intervals) or SSE stream (no heartbeat for ~3 heartbeats) is replaced
//   and resumed; `online` and `visibilitychange` reconnect at once.

const TRANSPORTS = ['ws', 'sse', 'poll'];
const DEFAULTS = {
  connectTimeoutMs: 5000,
  pingIntervalMs: 10000,
  heartbeatTimeoutMs: null, // SSE: 3 observed heartbeats + 1 s; 50 s until two are seen
  publishTimeoutMs: 30000,
  probeIntervalMs: 30000,
  longPollSecs: 25,
  requestTimeoutMs: 10000,
  maxPending: 1000,
};
// The options a connection reads (through its sink).
const CONN_OPTIONS = ['connectTimeoutMs', 'pingIntervalMs', 'heartbeatTimeoutMs', 'pollIntervalMs', 'longPollSecs', 'requestTimeoutMs'];
const BACKOFF = { baseMs: 500, capMs: 15000 };
const PROBE_CAP_MS = 5 * 60 * 1000;
const SSE_DEFAULT_TIMEOUT_MS = 50000;
const PING_EVERY_BYTES = 512 * 1024;
const POLL_LIMIT = 1000;
// Lifecycle events: only the client emits them, never a room's message.
const LIFECYCLE = new Set(['message', 'status', 'error', 'reset', 'presence', 'join', 'leave', 'open', 'close']);
// Event names the hub keeps for itself (publishing them is refused).
const RESERVED_EVENTS = new Set(['reset', 'join', 'leave', 'presence', 'error', 'open', 'close']);
// HTTP statuses and WebSocket closes after which retrying unchanged cannot help.
const FATAL_STATUSES = new Set([400, 401, 403, 404]);
const CLOSE_NAMES = {
  1008: 'policy_violation',
  1009: 'too_large',
  1011: 'internal',
  4001: 'token_expired',
  4003: 'disconnected',
  4004: 'room_deleted',
  4008: 'slow_consumer',
};

/**
 * Picks a transport from what the page needs: two-way traffic wants a
 * WebSocket; frequent one-way updates want Server-Sent Events; rare
 * updates are cheapest as polling.
 */
export function chooseTransport({ bidirectional = false, updatesPerMinute = 60 } = {}) {
  if (bidirectional) return 'ws';
  if (updatesPerMinute >= 1) return 'sse';
  return 'poll';
}

/** Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)]. */
export function backoffDelay(attempt, base = BACKOFF.baseMs, cap = BACKOFF.capMs) {
  return Math.random() * Math.min(cap, base * 2 ** attempt);
}

/** An error from the hub or the client: `code` is stable, `status` the HTTP status if any. */
export class HubError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = 'HubError';
    this.code = code;
    Object.assign(this, extra);
  }
}

function randomId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

const utf8Length = (s) => (globalThis.TextEncoder ? new TextEncoder().encode(s).length : s.length);

/**
 * Connects to a room. `url` is the room's URL (`https://hub/rooms/NAME`,
 * absolute or relative to the page). See client.d.ts for every option.
 */
export function connect(url, options = {}) {
  return new Room(url, options);
}

/**
 * A room: it owns the protocol state (the cursor, the publishes waiting,
 * presence, the hub's limits, retries and transports) in private fields,
 * and decides what every frame from the hub means. Its connections only
 * pass up what they receive (see #makeConn). The page sees what client.d.ts
 * documents; what it reads are copies.
 */
class Room {
  // Where and how.
  #url;
  #opts;
  #connOpts;
  #backoff;
  #tokenSource;
  #token;
  #order; // transports to try, best first
  #auto;
  #current; // index in #order of the transport in use

  // What the page has seen: the cursor, kept across reloads when asked.
  #storage;
  #storageKey;
  #lastId;
  #historyWanted;

  // What the hub said.
  #presence = []; // replaced on each change, never changed in place
  #presenceCount = 0;
  #limits = null;
  #status;

  // Listeners: lifecycle events, and app events by name.
  #life = new Map();
  #app = new Map();

  // Publishes: those not yet settled, and those going over HTTP.
  #outbox = new Map(); // cid -> record (see publish())
  #session = randomId();
  #counter = 0;
  #httpQueue = [];
  #httpActive = 0;
  #httpPausedUntil = 0;
  #httpTimer = null;

  // Connecting: the connection, the probe of a better transport, retries.
  #attempt = 0;
  #gen = 0; // bumped whenever a connection's callbacks must no longer count
  #conn = null;
  #probe = null;
  #probeDelay;
  #timer = null;
  #probeTimer = null;
  #reported = new Set(); // error codes told since the last open
  #closed = false;
  #userClosed = false;
  #everOpened = false;
  #openedAt = 0;
  #tokenRefreshes = 0;
  #ready;
  #readyResolve;
  #readyReject;
  #onOnline = () => this.#wake('online');
  #onVisible = () => {
    if (globalThis.document?.visibilityState === 'visible') this.#wake('visible');
  };

  constructor(url, options) {
    const base = new URL(url, globalThis.location?.href);
    base.pathname = base.pathname.replace(/\/+$/, '');
    base.search = '';
    base.hash = '';
    this.#url = base;
    this.#opts = { ...DEFAULTS, ...options };
    // What a connection may read of the options: its timings.
    this.#connOpts = Object.freeze(pick(this.#opts, ...CONN_OPTIONS));
    this.#backoff = { ...BACKOFF, ...(options.backoff ?? {}) };
    this.#tokenSource = options.token ?? null;
    this.#token = typeof this.#tokenSource === 'string' ? this.#tokenSource : null;
    const mode = options.transport ?? 'auto';
    if (mode === 'hints') this.#order = [chooseTransport(options.hints)];
    else if (mode === 'auto') this.#order = TRANSPORTS.slice();
    else if (TRANSPORTS.includes(mode)) this.#order = [mode];
    else throw new TypeError(`unknown transport '${mode}'`);
    this.#auto = mode === 'auto';
    this.#current = 0;

    this.#storage = resumeStorage(options.resume);
    this.#storageKey = `hub-cursor:${this.#url.href}`;
    const stored = this.#readCursor();
    this.#lastId = stored ?? (Number.isInteger(options.since) ? options.since : null);
    this.#historyWanted = this.#lastId === null && Number.isInteger(options.history) ? options.history : null;

    this.#status = { state: 'connecting', transport: this.#order[0] };
    this.#probeDelay = this.#opts.probeIntervalMs;

    this.#ready = new Promise((resolve, reject) => {
      this.#readyResolve = resolve;
      this.#readyReject = reject;
    });
    this.#ready.catch(() => {}); // observed by whoever awaits it; never unhandled

    globalThis.addEventListener?.('online', this.#onOnline);
    globalThis.document?.addEventListener?.('visibilitychange', this.#onVisible);

    queueMicrotask(() => this.#open());
  }

  // ---------------------------------------------------------------- what the page reads

  get url() {
    return new URL(this.#url);
  }

  get status() {
    return { ...this.#status };
  }

  get transport() {
    return this.#order[this.#current];
  }

  /** The id of the last message delivered (the resume cursor). */
  get lastId() {
    return this.#lastId;
  }

  get ready() {
    return this.#ready;
  }

  get limits() {
    return this.#limits && { ...this.#limits };
  }

  get presence() {
    return [...this.#presence];
  }

  get presenceCount() {
    return this.#presenceCount;
  }

  // ---------------------------------------------------------------- events

  /**
   * Listens to a lifecycle event (`message`, `status`, `error`, `reset`,
   * `presence`, `join`, `leave`, `open`, `close`) or to the room's messages
   * of one event name: `event:<name>`. Returns a function that unsubscribes.
   */
  on(name, fn) {
    const [map, key] = this.#slot(name);
    if (!map.has(key)) map.set(key, new Set());
    map.get(key).add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    const [map, key] = this.#slot(name);
    const set = map.get(key);
    if (!set) return;
    for (const f of set) if (f === fn || f.original === fn) set.delete(f);
    if (set.size === 0) map.delete(key);
  }

  /** Like `on`, once; without `fn`, a promise of the next value. */
  once(name, fn) {
    if (!fn) return new Promise((resolve) => this.once(name, resolve));
    const wrapper = (v) => {
      this.off(name, wrapper);
      fn(v);
    };
    wrapper.original = fn;
    return this.on(name, wrapper);
  }

  #slot(name) {
    if (typeof name !== 'string') throw new TypeError('event name must be a string');
    if (name.startsWith('event:')) return [this.#app, name.slice(6)];
    if (LIFECYCLE.has(name)) return [this.#life, name];
    // Shorthand kept from earlier versions: a bare app event name.
    return [this.#app, name];
  }

  #emit(name, value) {
    dispatch(this.#life.get(name), value);
  }

  #setStatus(state, extra = {}) {
    const next = { state, transport: this.transport, ...extra };
    const prev = this.#status;
    const same =
      prev.state === next.state &&
      prev.transport === next.transport &&
      prev.error === next.error &&
      prev.retryInMs === next.retryInMs;
    this.#status = next;
    if (!same) this.#emit('status', this.status);
  }

  /** Says a failure once (until the next successful open): one `error` event. */
  #report(err) {
    if (this.#reported.has(err.code)) return;
    this.#reported.add(err.code);
    this.#emit('error', err);
  }

  // ---------------------------------------------------------------- cursor

  #readCursor() {
    try {
      const v = this.#storage?.getItem(this.#storageKey);
      return v !== null && v !== undefined && /^\d+$/.test(v) ? Number(v) : null;
    } catch (_) {
      return null;
    }
  }

  #setLastId(id) {
    this.#lastId = id;
    try {
      this.#storage?.setItem(this.#storageKey, String(id));
    } catch (_) {}
  }

  /** Delivers a message at most once and in id order. */
  #deliver(msg) {
    if (typeof msg?.id !== 'number') return;
    if (this.#lastId !== null && msg.id <= this.#lastId) return;
    this.#setLastId(msg.id);
    const { type, ...envelope } = msg;
    dispatch(this.#life.get('message'), envelope);
    dispatch(this.#app.get(envelope.event), envelope);
  }

  /**
   * A `reset`: the hub resumes at `first_id` (history dropped, or a log
   * that is not the one we saw: `cursor_ahead`). Move the cursor there so
   * the new log is delivered, and say it once.
   */
  #onReset(reset) {
    if (!reset || typeof reset.first_id !== 'number') return;
    const at = Math.max(0, reset.first_id - 1);
    if (this.#lastId !== null && reset.reason !== 'cursor_ahead' && at <= this.#lastId) return;
    this.#setLastId(at);
    this.#emit('reset', { reason: reset.reason, first_id: reset.first_id });
  }

  // ---------------------------------------------------------------- publish

  /**
   * Publishes; resolves to the stored message's id, or rejects with a
   * HubError (`too_large`, `reserved_event`, `forbidden`, `rate_limited`
   * never: it waits instead, `timeout`, `aborted`, `queue_full`, `closed`).
   */
  publish(data, { event, timeoutMs, signal } = {}) {
    if (this.#closed) return Promise.reject(new HubError('closed', 'the room is closed'));
    if (event !== undefined && RESERVED_EVENTS.has(event)) {
      return Promise.reject(new HubError('reserved_event', `'${event}' is reserved by the hub`));
    }
    if (signal?.aborted) return Promise.reject(new HubError('aborted', 'the publish was aborted'));
    if (this.#outbox.size >= this.#opts.maxPending) {
      return Promise.reject(new HubError('queue_full', `more than ${this.#opts.maxPending} publishes waiting`));
    }
    const seq = ++this.#counter;
    const cid = `${this.#session}-${seq}`;
    const body = event === undefined ? { data } : { event, data };
    let frame;
    try {
      frame = JSON.stringify({ type: 'publish', ...body, cid });
    } catch (e) {
      return Promise.reject(new HubError('invalid_json', String(e?.message ?? e)));
    }
    return new Promise((resolve, reject) => {
      const bytes = utf8Length(frame);
      // `wire` is all a socket is given of a publish: what to send, and its size.
      const rec = { cid, seq, body, bytes, wire: Object.freeze({ cid, frame, bytes }), resolve, reject, via: null, signal };
      this.#outbox.set(cid, rec);
      const ms = timeoutMs ?? this.#opts.publishTimeoutMs;
      if (ms > 0) {
        rec.timer = setTimeout(() => this.#settle(rec, new HubError('timeout', `not acknowledged within ${ms} ms`)), ms);
      }
      if (signal) {
        rec.onAbort = () => this.#settle(rec, new HubError('aborted', 'the publish was aborted'));
        signal.addEventListener('abort', rec.onAbort, { once: true });
      }
      if (this.#tooLarge(rec)) return;
      this.#route(rec);
    });
  }

  #tooLarge(rec) {
    const max = this.#limits?.max_message_bytes;
    if (max && rec.bytes > max) {
      this.#settle(rec, new HubError('too_large', `the message is larger than ${max} bytes`, { status: 413 }));
      return true;
    }
    return false;
  }

  /** Sends a publish over the WebSocket when that is the transport, else over HTTP. */
  #route(rec) {
    if (this.transport === 'ws') {
      rec.via = 'ws';
      if (this.#conn?.ready) this.#conn.send([rec.wire]);
      // Otherwise it is sent after the next welcome.
    } else {
      this.#sendHttp(rec);
    }
  }

  /** Settles a publish exactly once: an id, or an error. */
  #settle(rec, err, id) {
    if (rec.settled) return;
    rec.settled = true;
    this.#outbox.delete(rec.cid);
    clearTimeout(rec.timer);
    if (rec.onAbort) rec.signal.removeEventListener('abort', rec.onAbort);
    this.#conn?.forget?.(rec.cid);
    if (err) rec.reject(err);
    else rec.resolve(id);
  }

  #sendHttp(rec) {
    rec.via = 'http';
    this.#httpQueue.push(rec);
    this.#pumpHttp();
  }

  #pumpHttp() {
    clearTimeout(this.#httpTimer);
    const wait = this.#httpPausedUntil - Date.now();
    if (wait > 0) {
      this.#httpTimer = setTimeout(() => this.#pumpHttp(), wait);
      return;
    }
    while (this.#httpActive < 4 && this.#httpQueue.length) {
      const rec = this.#httpQueue.shift();
      if (rec.settled) continue;
      this.#httpActive += 1;
      this.#postOnce(rec).finally(() => {
        this.#httpActive -= 1;
        this.#pumpHttp();
      });
    }
  }

  async #postOnce(rec) {
    let res;
    try {
      res = await fetch(`${this.#url}/messages`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Idempotency-Key': rec.cid, ...this.#authHeader() },
        body: JSON.stringify(rec.body),
      });
    } catch (_) {
      return this.#retryHttp(rec, backoffDelay(Math.min(rec.tries = (rec.tries ?? 0) + 1, 6), this.#backoff.baseMs, this.#backoff.capMs));
    }
    if (rec.settled) return undefined;
    if (res.status === 201) {
      const body = await res.json().catch(() => ({}));
      return this.#settle(rec, null, body.id);
    }
    const err = await errorFrom(res);
    if (res.status === 429) {
      this.#httpPausedUntil = Date.now() + (err.retryAfterMs ?? 1000);
      return this.#retryHttp(rec, 0);
    }
    if (res.status >= 500) {
      return this.#retryHttp(rec, backoffDelay(Math.min(rec.tries = (rec.tries ?? 0) + 1, 6), this.#backoff.baseMs, this.#backoff.capMs));
    }
    if (res.status === 401 && typeof this.#tokenSource === 'function' && !rec.refreshed) {
      rec.refreshed = true;
      if (await this.#refreshToken().then(() => true, () => false)) return this.#retryHttp(rec, 0);
    }
    return this.#settle(rec, err);
  }

  #retryHttp(rec, delay) {
    if (rec.settled || this.#closed) return undefined;
    // Same key: if the first try was stored, the hub answers with its id.
    if (delay > 0) setTimeout(() => !rec.settled && this.#sendHttp(rec), delay);
    else this.#httpQueue.unshift(rec);
    return undefined;
  }

  /** WebSocket publishes go over HTTP with the same key (nothing is stored twice). */
  #movePublishesToHttp() {
    for (const rec of [...this.#outbox.values()].sort((a, b) => a.seq - b.seq)) {
      if (rec.via !== 'http') this.#sendHttp(rec);
    }
  }

  // ---------------------------------------------------------------- tokens and URLs

  async #refreshToken() {
    if (typeof this.#tokenSource !== 'function') return;
    const t = await this.#tokenSource();
    if (typeof t !== 'string' || !t) throw new HubError('unauthorized', 'the token function returned no token');
    this.#token = t;
  }

  #authHeader() {
    return this.#token ? { Authorization: `Bearer ${this.#token}` } : {};
  }

  #endpoint(path, params = {}, withToken = true) {
    const u = new URL(`${this.#url}${path}`);
    if (path === '/ws') u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) u.searchParams.set(k, v);
    if (withToken && this.#token) u.searchParams.set('token', this.#token);
    return u.toString();
  }

  /**
   * The WebSocket URL. With a token, the token itself stays out of the URL
   * (browsers print the URL of a failed WebSocket, and servers log it): it
   * is traded in `Authorization` for a single-use connect ticket, and the
   * URL carries that. Rejects with the hub's error (a 401 makes a token
   * function fetch a new token) or `unreachable`.
   */
  async #socketUrl(params) {
    if (!this.#token) return this.#endpoint('/ws', params, false);
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), this.#opts.connectTimeoutMs);
    let res;
    try {
      res = await fetch(this.#endpoint('/ticket', {}, false), { method: 'POST', headers: this.#authHeader(), cache: 'no-store', signal: ctl.signal });
    } catch (_) {
      throw new HubError('unreachable', 'the hub cannot be reached', { transient: true });
    } finally {
      clearTimeout(t);
    }
    if (res.status !== 200) throw await errorFrom(res);
    const { ticket } = await res.json();
    return this.#endpoint('/ws', { ...params, ticket }, false);
  }

  /** GET /rooms/{room} with the page's token: why did a connection fail? */
  async #diagnose() {
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), this.#opts.connectTimeoutMs);
    try {
      const res = await fetch(this.#endpoint('', {}, false), { headers: this.#authHeader(), cache: 'no-store', signal: ctl.signal });
      if (res.ok) {
        const body = await res.json().catch(() => null);
        // The room says whether it would take one more connection from us.
        const refused = body?.connect_refused;
        if (refused) return { kind: 'http', err: new HubError(refused.error, refused.message, { status: 429 }) };
        return { kind: 'ok', body };
      }
      return { kind: 'http', err: await errorFrom(res) };
    } catch (_) {
      return { kind: 'network' };
    } finally {
      clearTimeout(t);
    }
  }

  // ---------------------------------------------------------------- connecting

  async #open() {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    const gen = ++this.#gen;
    if (this.#status.state !== 'connecting' && this.#status.state !== 'reconnecting') this.#setStatus('reconnecting');
    else if (this.#status.transport !== this.transport) this.#setStatus(this.#status.state, pick(this.#status, 'error', 'message'));
    try {
      await this.#refreshToken();
    } catch (e) {
      if (gen === this.#gen) this.#onFailure(gen, e instanceof HubError ? e : new HubError('token_error', String(e?.message ?? e)), {});
      return;
    }
    if (gen !== this.#gen || this.#closed) return;
    if (this.#historyWanted !== null && this.#lastId === null) {
      const d = await this.#diagnose();
      if (gen !== this.#gen || this.#closed) return;
      if (d.kind === 'ok' && typeof d.body?.last_id === 'number') {
        const first = typeof d.body.first_id === 'number' ? d.body.first_id : 1;
        this.#setLastId(Math.max(0, first - 1, d.body.last_id - this.#historyWanted));
        this.#historyWanted = null;
      }
    }
    this.#conn = this.#makeConn(this.transport, {
      opened: () => gen === this.#gen && this.#onOpened(),
      failed: (err, info) => gen === this.#gen && this.#onFailure(gen, err, info),
    });
  }

  /**
   * A connection over `transport`. All it is given is a `sink`: through it
   * it reads what connecting needs (its timings, the cursor, URLs, the
   * token) and passes up what it receives. What a frame means is decided
   * here, in #onFrame(); the connection keeps only its transport's
   * mechanics. `handlers` say what its opening and failing mean to the
   * room (a probe's differ, and change when it is adopted).
   */
  #makeConn(transport, handlers) {
    let conn = null;
    const sink = Object.freeze({
      opts: this.#connOpts,
      /** The resume cursor: the id of the last message delivered, or null. */
      cursor: () => this.#lastId,
      endpoint: (path, params, withToken) => this.#endpoint(path, params, withToken),
      /** The WebSocket URL, with a fresh connect ticket when there is a token. */
      socketUrl: (params) => this.#socketUrl(params),
      authHeader: () => this.#authHeader(),
      diagnose: () => this.#diagnose(),
      /** Where the hub's log stands: the cursor starts there when it has none (live from now on). */
      position: (id) => {
        if (this.#lastId === null) this.#setLastId(id);
      },
      /** The connection is established. */
      opened: () => handlers.opened(),
      /** A frame from the hub, in the WebSocket's vocabulary (docs/PROTOCOL.md). */
      frame: (msg) => this.#onFrame(msg, conn, handlers),
      /** The hub refused a publish without a frame naming it (a socket closed with 1009). */
      refused: (cid, err) => {
        const rec = this.#outbox.get(cid);
        if (rec) this.#settle(rec, err);
      },
      /** The connection failed; it says so once and sends nothing more. */
      failed: (err, info) => handlers.failed(err, info),
    });
    if (transport === 'ws') conn = new SocketConnection(sink);
    else if (transport === 'sse') conn = new StreamConnection(sink);
    else conn = new PollConnection(sink);
    return conn;
  }

  /** What each frame from the hub means, whichever transport carried it. */
  #onFrame(msg, conn, handlers) {
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'welcome':
        this.#onWelcome(msg, conn, handlers);
        break;
      case 'message':
        this.#deliver(msg);
        break;
      case 'ack': {
        const rec = this.#outbox.get(msg.cid);
        if (rec) this.#settle(rec, null, msg.id);
        break;
      }
      case 'error':
        this.#onError(msg);
        break;
      case 'reset':
        this.#onReset(msg);
        break;
      case 'more':
        // A replay batch ended: the socket asks for the next one itself,
        // in order after the frames before it.
        break;
      case 'join':
        if (!this.#presence.includes(msg.user)) {
          this.#presence = [...this.#presence, msg.user].sort();
          this.#presenceCount = Math.max(this.#presenceCount + 1, this.#presence.length);
        }
        this.#emit('join', msg.user);
        this.#emit('presence', this.presence);
        break;
      case 'leave':
        this.#presence = this.#presence.filter((u) => u !== msg.user);
        this.#presenceCount = Math.max(this.#presence.length, this.#presenceCount - 1);
        this.#emit('leave', msg.user);
        this.#emit('presence', this.presence);
        break;
      case 'presence':
        this.#presence = msg.members ?? [];
        this.#presenceCount = msg.count ?? this.#presence.length;
        this.#emit('presence', this.presence);
        break;
      default:
    }
  }

  /** A socket's welcome: the hub's limits, where its log stands, who is here; then it is open. */
  #onWelcome(msg, conn, handlers) {
    // The hub that serves this client always sends its limits.
    this.#limits = msg.limits ?? null;
    if (this.#lastId === null) this.#setLastId(msg.last_id);
    this.#presence = msg.presence ?? [];
    this.#presenceCount = msg.presence_count ?? this.#presence.length;
    handlers.opened();
    if (this.#conn !== conn) return; // closed (or not adopted) meanwhile
    this.#emit('presence', this.presence);
    // Everything not yet acknowledged goes again, in order, paced: the hub
    // answers a repeated cid with the original id.
    const again = [];
    for (const rec of [...this.#outbox.values()].sort((a, b) => a.seq - b.seq)) {
      if (rec.via === 'ws' && !this.#tooLarge(rec)) again.push(rec.wire);
    }
    conn.send(again);
  }

  /**
   * An error frame answers the publish its cid names; one without a cid
   * (or naming none still waiting) answers no publish and is told.
   */
  #onError(msg) {
    // Rate limited: the socket waits and sends the same cid again.
    if (msg.code === 'rate_limited') return;
    const rec = typeof msg.cid === 'string' ? this.#outbox.get(msg.cid) : null;
    if (rec) this.#settle(rec, new HubError(msg.code, msg.message));
    else this.#report(new HubError(msg.code, msg.message));
  }

  #onOpened() {
    const resumed = this.#everOpened;
    this.#everOpened = true;
    this.#openedAt = Date.now();
    this.#reported.clear();
    this.#tokenRefreshes = 0;
    this.#setStatus('open');
    this.#emit('open', { transport: this.transport, resumed });
    this.#readyResolve();
    if (this.transport !== 'ws') this.#movePublishesToHttp();
    this.#scheduleProbe(true);
  }

  /**
   * A connection failed: decide whether to retry, fall back, refresh the
   * token or give up, and say why once.
   */
  async #onFailure(gen, err, { everOpened = false, diagnose = false } = {}) {
    if (this.#closed || gen !== this.#gen) return;
    this.#conn = null;
    this.#cancelProbe();
    if (everOpened && Date.now() - (this.#openedAt ?? 0) > 2000) this.#attempt = 0;

    if (diagnose) {
      // A browser tells nothing about a refused upgrade (1006): ask the
      // room's HTTP endpoint with the same token.
      const d = await this.#diagnose();
      if (this.#closed || gen !== this.#gen) return;
      if (d.kind === 'http') err = d.err;
      else if (d.kind === 'network') err = new HubError('unreachable', 'the hub cannot be reached', { transient: true });
      else if (this.#auto && this.#current < this.#order.length - 1) {
        // HTTP works but this transport does not: something blocks it.
        this.#current += 1;
        if (this.transport !== 'ws') this.#movePublishesToHttp();
        this.#attempt = 0;
        this.#open();
        return;
      } else {
        err = new HubError(err.code ?? 'unreachable', `${this.transport} cannot connect`, { transient: true });
      }
    }

    const code = err.code;
    if (code === 'unauthorized' || code === 'token_expired') {
      if (typeof this.#tokenSource === 'function' && this.#tokenRefreshes < 2) {
        this.#tokenRefreshes += 1;
        return this.#retry(0, err);
      }
      return this.#fail(err);
    }
    if (err.fatal || (err.status && FATAL_STATUSES.has(err.status)) || code === 'policy_violation' || code === 'disconnected') {
      return this.#fail(err);
    }
    if (code === 'slow_consumer' || code === 'stalled') {
      // Catching up or replacing a dead connection: at once, not a failure.
      return this.#retry(0, null);
    }
    if (code === 'room_deleted') {
      // The room starts again from id 1: an old cursor would skip the new
      // room's first messages once it has more than we had seen.
      this.#setLastId(0);
    }
    if (code === 'too_many_connections' || code === 'room_full' || code === 'room_deleted') {
      this.#report(err);
      const delay = err.retryAfterMs ?? backoffDelay(this.#attempt++, this.#backoff.baseMs, this.#backoff.capMs);
      return this.#retry(delay, err);
    }
    if (this.#auto && !everOpened && code === 'timeout' && this.#current < this.#order.length - 1) {
      // Connected but nothing arrived: a proxy buffering this transport.
      this.#current += 1;
      if (this.transport !== 'ws') this.#movePublishesToHttp();
      return this.#retry(0, null);
    }
    const delay = everOpened && this.#attempt === 0 ? 0 : backoffDelay(this.#attempt, this.#backoff.baseMs, this.#backoff.capMs);
    this.#attempt += 1;
    return this.#retry(delay, err.transient || !everOpened ? err : null);
  }

  #retry(delay, err) {
    delay = Math.round(delay);
    const extra = { retryInMs: delay };
    if (err) Object.assign(extra, { error: err.code, message: err.message });
    this.#setStatus('reconnecting', extra);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#open(), delay);
  }

  /** Gives up: one error event, status closed with the reason, every publish rejected. */
  #fail(err) {
    this.#report(err);
    this.#shutdown(err);
  }

  #shutdown(err) {
    this.#closed = true;
    this.#gen += 1;
    clearTimeout(this.#timer);
    clearTimeout(this.#httpTimer);
    this.#cancelProbe();
    this.#conn?.close();
    this.#conn = null;
    for (const rec of [...this.#outbox.values()]) this.#settle(rec, err ?? new HubError('closed', 'the room is closed'));
    this.#httpQueue = [];
    this.#setStatus('closed', err ? { error: err.code, message: err.message } : {});
    this.#readyReject(err ?? new HubError('closed', 'the room is closed'));
    this.#emit('close', err ? { error: err } : {});
  }

  /** Closes the room's connection for good. */
  close() {
    this.#userClosed = true;
    globalThis.removeEventListener?.('online', this.#onOnline);
    globalThis.document?.removeEventListener?.('visibilitychange', this.#onVisible);
    if (!this.#closed) this.#shutdown(null);
  }

  /**
   * Drops the connection and connects again now, from the best transport
   * (also after a fatal error, e.g. once the page has a new token).
   */
  reconnect() {
    if (this.#userClosed) throw new HubError('closed', 'the room was closed');
    if (this.#closed) {
      this.#closed = false;
      this.#ready = new Promise((resolve, reject) => {
        this.#readyResolve = resolve;
        this.#readyReject = reject;
      });
      this.#ready.catch(() => {});
    }
    this.#cancelProbe();
    this.#gen += 1;
    this.#conn?.close();
    this.#conn = null;
    this.#current = 0;
    this.#attempt = 0;
    this.#tokenRefreshes = 0;
    this.#setStatus('reconnecting');
    this.#open();
  }

  /** The network is back or the page is visible again: do not wait for a backoff. */
  #wake() {
    if (this.#closed) return;
    if (this.#timer && this.#status.state === 'reconnecting') {
      this.#attempt = 0;
      this.#open();
    } else if (this.#conn) {
      this.#conn.checkAlive?.();
    }
  }

  // ---------------------------------------------------------------- moving back up

  /** On a fallback transport, try the better ones now and then. */
  #scheduleProbe(reset) {
    if (!this.#auto || this.#current === 0 || this.#closed) return;
    if (reset) this.#probeDelay = this.#opts.probeIntervalMs;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = setTimeout(() => this.#runProbe(0), this.#probeDelay);
  }

  #runProbe(index) {
    if (this.#closed || !this.#conn || this.#status.state !== 'open' || index >= this.#current) {
      this.#probeDelay = Math.min(this.#probeDelay * 2, PROBE_CAP_MS);
      this.#scheduleProbe(false);
      return;
    }
    const gen = this.#gen;
    const handlers = {
      opened: () => {
        if (this.#probe !== probe || gen !== this.#gen) return;
        // Adopt it: the old connection goes, the cursor carries over.
        this.#probe = null;
        const old = this.#conn;
        this.#gen += 1;
        const adopted = this.#gen;
        old?.close();
        this.#current = index;
        this.#conn = probe;
        handlers.failed = (err, info) => adopted === this.#gen && this.#onFailure(adopted, err, info);
        handlers.opened = () => {};
        this.#onOpened();
      },
      failed: () => {
        if (this.#probe !== probe) return;
        this.#probe = null;
        this.#runProbe(index + 1);
      },
    };
    const probe = this.#makeConn(this.#order[index], handlers);
    this.#probe = probe;
  }

  #cancelProbe() {
    clearTimeout(this.#probeTimer);
    this.#probeTimer = null;
    const p = this.#probe;
    this.#probe = null;
    p?.close();
  }
}

function dispatch(set, value) {
  if (!set) return;
  for (const fn of [...set]) {
    try {
      fn(value);
    } catch (e) {
      console.error(e);
    }
  }
}

function pick(obj, ...keys) {
  const out = {};
  for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
  return out;
}

function resumeStorage(resume) {
  try {
    if (resume === 'session') return globalThis.sessionStorage ?? null;
    if (resume === 'local') return globalThis.localStorage ?? null;
    if (resume && typeof resume.getItem === 'function') return resume;
  } catch (_) {}
  return null;
}

/** A token bucket like the hub's, slightly slower, so paced sends are never refused. */
class Bucket {
  constructor(rate, burst) {
    this.rate = rate * 0.9;
    this.burst = Math.max(1, burst);
    this.tokens = this.burst;
    this.at = Date.now();
  }

  refill(now) {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.rate);
    this.at = now;
  }

  take(now) {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  msUntilToken(now) {
    this.refill(now);
    return Math.max(1, Math.ceil(((1 - this.tokens) / this.rate) * 1000));
  }
}

/**
 * What every transport's connection shares. It is given one object by the
 * room, its `sink` (see Room#makeConn): it reads what connecting needs
 * there and passes up what it receives (`frame`, `opened`, `failed`); what
 * a frame means is the room's business. It reports one failure, once
 * (`sink.failed`), and `close()` ends it quietly. Each subclass says what
 * ending it means in `teardown()`.
 */
class Connection {
  constructor(sink) {
    this.sink = sink;
    this.done = false;
    this.everOpened = false;
  }

  fail(err, extra = {}) {
    if (this.done) return;
    this.done = true;
    this.teardown();
    this.sink.failed(err, { everOpened: this.everOpened, ...extra });
  }

  close() {
    this.done = true;
    this.teardown();
  }
}

/**
 * A WebSocket: frames go up as they come. Its own are the pacing of
 * publishes (the room hands it what to send, `send()`, and takes back
 * what the hub answered, `forget()`), the `more` reply, pings and the
 * watchdog.
 */
class SocketConnection extends Connection {
  constructor(sink) {
    super(sink);
    this.ready = false;
    this.outgoing = new Map(); // cid -> { cid, frame, bytes }: publishes the room gave this socket, not yet settled
    this.queue = []; // cids to send, in publish order
    this.inflight = []; // cids sent on this socket, not yet answered, in send order
    this.window = 1; // set by the welcome's limits
    this.pausedUntil = 0;
    this.bucket = null;
    this.lastFrameAt = Date.now();
    this.bytesSincePing = 0;
    this.timeout = setTimeout(() => this.fail(new HubError('timeout', 'no welcome from the hub'), { diagnose: true }), sink.opts.connectTimeoutMs);
    this.start();
  }

  async start() {
    let url;
    try {
      url = await this.sink.socketUrl({ since: this.sink.cursor() });
    } catch (e) {
      this.fail(e instanceof HubError ? e : new HubError('unreachable', String(e?.message ?? e), { transient: true }));
      return;
    }
    if (this.done) return;
    try {
      this.ws = new WebSocket(url);
    } catch (e) {
      this.fail(new HubError('invalid_url', String(e?.message ?? e), { fatal: true }));
      return;
    }
    this.ws.onmessage = (ev) => this.onFrame(ev.data);
    this.ws.onclose = (ev) => this.onClose(ev);
    this.ws.onerror = () => {}; // onclose follows
  }


  teardown() {
    this.ready = false;
    clearTimeout(this.timeout);
    clearInterval(this.pinger);
    clearTimeout(this.watchdog);
    clearTimeout(this.aliveTimer);
    clearTimeout(this.pumpTimer);
    clearTimeout(this.moreTimer);
    if (this.ws) {
      this.ws.onmessage = null;
      this.ws.onclose = null;
      try {
        this.ws.close(1000);
      } catch (_) {}
    }
  }

  onClose(ev) {
    const name = CLOSE_NAMES[ev.code];
    if (!this.everOpened) {
      // A refused upgrade looks like 1006 to a page: find out why.
      return this.fail(new HubError('connect_failed', 'the WebSocket did not open'), { diagnose: true });
    }
    if (ev.code === 1009) {
      // The frame that was too big is the largest one still unanswered,
      // unless the hub's error frame before the close already named it.
      const culprit = this.toldTooLarge ? null : this.inflight
        .map((cid) => this.outgoing.get(cid))
        .filter(Boolean)
        .reduce((a, b) => (!a || b.bytes > a.bytes ? b : a), null);
      if (culprit) this.sink.refused(culprit.cid, new HubError('too_large', ev.reason || 'the message is too large', { status: 413, closeCode: 1009 }));
      return this.fail(new HubError('going_away', 'closed after a frame that was too large'));
    }
    if (ev.code === 1000 || ev.code === 1001) return this.fail(new HubError('going_away', ev.reason || 'the hub closed the connection'));
    const code = name ?? (ev.code === 1006 ? 'network' : `close_${ev.code}`);
    this.fail(new HubError(code, ev.reason || `connection closed (${ev.code})`, { closeCode: ev.code, fatal: ev.code === 1008 || ev.code === 4003 }));
  }

  onFrame(data) {
    this.lastFrameAt = Date.now();
    if (typeof data !== 'string') return;
    this.bytesSincePing += data.length;
    if (this.bytesSincePing >= PING_EVERY_BYTES) this.ping();
    if (data === 'pong') return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (_) {
      return;
    }
    // A batch is arriving: the `more` that asked for it was not refused.
    if (msg?.type === 'message') this.moreAsked = false;
    switch (msg?.type) {
      case 'welcome':
        this.onWelcome(msg);
        break;
      case 'ack':
        this.answered(msg.cid);
        this.sink.frame(msg);
        this.pump();
        break;
      case 'error':
        this.onError(msg);
        break;
      case 'more':
        this.sink.frame(msg);
        // The hub replays a long history in batches: this one has been
        // read (frames are handled in order), so ask for the next.
        this.askMore();
        break;
      default:
        this.sink.frame(msg);
    }
  }

  onWelcome(msg) {
    clearTimeout(this.timeout);
    this.everOpened = true;
    this.ready = true;
    const { rate_per_sec: rate = 0, rate_burst: burst = rate } = msg.limits ?? {};
    if (rate > 0) {
      this.bucket = new Bucket(rate, burst);
      this.window = Math.max(1, burst);
    } else {
      this.window = 64;
    }
    this.pinger = setInterval(() => this.ping(), this.sink.opts.pingIntervalMs);
    this.watch();
    // The room opens, then hands back what is still unacknowledged (send()).
    this.sink.frame(msg);
  }

  /** Publishes from the room, in order, while this socket is ready. */
  send(wires) {
    for (const w of wires) {
      this.outgoing.set(w.cid, w);
      this.queue.push(w.cid);
    }
    this.pump();
  }

  /** The room settled this publish: nothing more to send or wait for. */
  forget(cid) {
    this.answered(cid);
    this.outgoing.delete(cid);
  }

  answered(cid) {
    const i = this.inflight.indexOf(cid);
    if (i >= 0) this.inflight.splice(i, 1);
  }

  onError(msg) {
    // An error answers the publish its cid names; one without a cid
    // answers no publish.
    const cid = typeof msg.cid === 'string' ? msg.cid : null;
    if (msg.code === 'token_expired' && cid === null) {
      // The hub closes the socket next (4001); act on it now rather than
      // wait for the connection to end.
      this.fail(new HubError('token_expired', msg.message ?? 'the token expired', { status: 401, closeCode: 4001 }));
      return;
    }
    const mine = cid !== null && this.outgoing.has(cid);
    if (cid) this.answered(cid);
    if (msg.code === 'too_large' && mine) this.toldTooLarge = true;
    if (msg.code === 'rate_limited') {
      const wait = Number.isFinite(msg.retry_after_ms) ? msg.retry_after_ms : 1000;
      this.pausedUntil = Math.max(this.pausedUntil, Date.now() + wait);
      // A refused `more` (no cid) would leave the replay waiting: ask again.
      if (cid === null && this.moreAsked) {
        clearTimeout(this.moreTimer);
        this.moreTimer = setTimeout(() => this.askMore(), wait);
      }
      if (mine) this.queue.unshift(cid); // the same cid again, first
    }
    this.sink.frame(msg);
    this.pump();
  }

  askMore() {
    this.moreAsked = true;
    try {
      this.ws.send('{"type":"more"}');
    } catch (_) {}
  }

  pump() {
    clearTimeout(this.pumpTimer);
    if (!this.ready || this.done) return;
    while (this.queue.length) {
      const now = Date.now();
      if (now < this.pausedUntil) {
        this.pumpTimer = setTimeout(() => this.pump(), this.pausedUntil - now);
        return;
      }
      if (this.inflight.length >= this.window) return; // an answer pumps again
      const w = this.outgoing.get(this.queue[0]);
      if (!w || this.inflight.includes(w.cid)) {
        this.queue.shift();
        continue;
      }
      if (this.bucket && !this.bucket.take(now)) {
        this.pumpTimer = setTimeout(() => this.pump(), this.bucket.msUntilToken(now));
        return;
      }
      this.queue.shift();
      this.inflight.push(w.cid);
      try {
        this.ws.send(w.frame);
      } catch (_) {
        return; // sent again after the next welcome
      }
    }
  }

  ping() {
    this.bytesSincePing = 0;
    try {
      this.ws.send('ping');
    } catch (_) {}
  }

  /** The watchdog: no frame at all (message, pong, anything) for 3 ping intervals means dead. */
  watch() {
    const limit = 3 * this.sink.opts.pingIntervalMs;
    const left = this.lastFrameAt + limit - Date.now();
    if (left <= 0) {
      this.fail(new HubError('stalled', 'no frame from the hub for 3 ping intervals'));
      return;
    }
    this.watchdog = setTimeout(() => this.watch(), left + 10);
  }

  /** After an outage or a hidden page: ping now, and expect an answer soon. */
  checkAlive() {
    if (!this.ready) return;
    const asked = Date.now();
    this.ping();
    clearTimeout(this.aliveTimer);
    this.aliveTimer = setTimeout(() => {
      if (!this.done && this.lastFrameAt < asked) this.fail(new HubError('stalled', 'no answer to a ping'));
    }, Math.min(5000, 2 * this.sink.opts.pingIntervalMs));
  }
}

/** Server-Sent Events: messages and resets go up as frames; heartbeats feed its watchdog. */
class StreamConnection extends Connection {
  constructor(sink) {
    super(sink);
    this.abort = new AbortController();
    this.lastChunkAt = Date.now();
    this.run();
  }


  teardown() {
    clearTimeout(this.timeout);
    clearTimeout(this.watchdog);
    this.abort.abort();
  }

  /** How long the stream may be silent: explicit, or 3.5 observed heartbeats. */
  silenceLimit() {
    if (this.sink.opts.heartbeatTimeoutMs) return this.sink.opts.heartbeatTimeoutMs;
    return this.beat ? Math.max(2000, Math.round(this.beat * 3 + 1000)) : SSE_DEFAULT_TIMEOUT_MS;
  }

  /** The watchdog: wakes when the silence would exceed the limit, not before. */
  watch() {
    const left = this.lastChunkAt + this.silenceLimit() - Date.now();
    if (left <= 0) {
      this.fail(new HubError('stalled', 'no heartbeat from the hub'));
      return;
    }
    this.watchdog = setTimeout(() => this.watch(), left + 10);
  }

  async run() {
    const sink = this.sink;
    this.timeout = setTimeout(() => this.fail(new HubError('timeout', 'the event stream did not start')), sink.opts.connectTimeoutMs);
    try {
      // Live only without a cursor: learn where the log stands first, so a
      // reconnect before the first message still resumes without a gap.
      if (sink.cursor() === null) {
        const d = await sink.diagnose();
        if (this.done) return;
        if (d.kind === 'http') return this.fail(d.err);
        if (d.kind === 'network') return this.fail(new HubError('unreachable', 'the hub cannot be reached', { transient: true }));
        sink.position(d.body?.last_id ?? 0);
      }
      const headers = { Accept: 'text/event-stream', ...sink.authHeader() };
      const res = await fetch(sink.endpoint('/events', { since: sink.cursor() }, false), {
        headers,
        signal: this.abort.signal,
        cache: 'no-store',
      });
      if (this.done) return;
      if (res.status !== 200) return this.fail(await errorFrom(res));
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      this.lastChunkAt = Date.now();
      this.watch();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (this.done) return;
        if (done) break;
        this.lastChunkAt = Date.now();
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          this.onBlock(parseSseBlock(block));
          if (this.done) return;
        }
      }
      this.fail(new HubError('going_away', 'the event stream ended'));
    } catch (e) {
      if (this.done) return;
      this.fail(new HubError('network', String(e?.message ?? e)), { diagnose: !this.everOpened });
    }
  }

  onBlock(frame) {
    if (frame.comment && frame.data === undefined && frame.event === undefined) {
      const now = Date.now();
      if (this.lastBeatAt) {
        const gap = now - this.lastBeatAt;
        this.beat = this.beat ? 0.7 * this.beat + 0.3 * gap : gap;
      }
      this.lastBeatAt = now;
    }
    if (frame.retry !== undefined && !this.everOpened) {
      // The hub sends `retry:` first: the stream is established.
      clearTimeout(this.timeout);
      this.everOpened = true;
      this.sink.opened();
    }
    // The hub's own signals carry no `id:`; a message named like one does.
    if (frame.event === 'close' && frame.id === undefined) {
      let code = 'disconnected';
      try {
        code = JSON.parse(frame.data).code ?? code;
      } catch (_) {}
      this.fail(new HubError(code, `the hub ended the stream: ${code}`, { fatal: code === 'disconnected' }));
      return;
    }
    if (frame.data === undefined) return;
    let parsed;
    try {
      parsed = JSON.parse(frame.data);
    } catch (_) {
      return;
    }
    // Up in the WebSocket's vocabulary: an SSE event carries no `type`.
    if (frame.event === 'reset' && frame.id === undefined) this.sink.frame({ ...parsed, type: 'reset' });
    else this.sink.frame({ ...parsed, type: 'message' });
  }
}

/** Polling (long or at an interval): each page's reset and messages go up as frames. */
class PollConnection extends Connection {
  constructor(sink) {
    super(sink);
    this.run();
  }


  teardown() {
    clearTimeout(this.reqTimer);
    this.request?.abort();
    this.wakeUp?.();
  }

  /** Waits `ms`, or less when closed or woken; adds no listener anywhere. */
  pause(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(t);
        if (self.wakeUp === done) self.wakeUp = null;
        resolve();
      }
      this.wakeUp = done;
    });
  }

  checkAlive() {
    // A held long poll may be dead after an outage: ask again now.
    this.woken = true;
    this.request?.abort();
    this.wakeUp?.();
  }

  async run() {
    const sink = this.sink;
    const opts = sink.opts;
    let etag = null;
    for (;;) {
      if (this.done) return;
      const cursor = sink.cursor();
      const params = { limit: POLL_LIMIT };
      if (cursor === null) params.limit = 1;
      else params.since = cursor;
      let wait = 0;
      if (this.everOpened && cursor !== null && !opts.pollIntervalMs) wait = opts.longPollSecs;
      if (wait) params.wait = wait;
      const headers = { ...sink.authHeader() };
      if (etag) headers['If-None-Match'] = etag;
      const ctl = new AbortController();
      this.request = ctl;
      this.reqTimer = setTimeout(() => ctl.abort(), wait * 1000 + opts.requestTimeoutMs);
      let res;
      let body = null;
      try {
        res = await fetch(sink.endpoint('/messages', params, false), { headers, signal: ctl.signal, cache: 'no-store' });
        if (res.status === 200) body = await res.json();
      } catch (e) {
        clearTimeout(this.reqTimer);
        if (this.done) return;
        if (this.everOpened && this.woken) {
          this.woken = false;
          continue;
        }
        return this.fail(new HubError(ctl.signal.aborted ? 'stalled' : 'network', String(e?.message ?? e)), { diagnose: !this.everOpened });
      }
      clearTimeout(this.reqTimer);
      if (this.done) return;
      if (res.status !== 200 && res.status !== 304) return this.fail(await errorFrom(res));
      if (!this.everOpened) {
        this.everOpened = true;
        this.sink.opened();
        if (this.done) return;
      }
      if (body) {
        etag = res.headers.get('ETag');
        if (sink.cursor() === null) {
          sink.position(body.last_id); // live from now on, as the other transports
          continue;
        }
        // Up in the WebSocket's vocabulary: a page is a reset and messages.
        if (body.reset) sink.frame({ ...body.reset, type: 'reset' });
        const messages = Array.isArray(body.messages) ? body.messages : [];
        for (const m of messages) sink.frame({ ...m, type: 'message' });
        // A page bounded by count or bytes: fetch the next one at once.
        const last = messages.length ? messages[messages.length - 1].id : null;
        if (last !== null && typeof body.last_id === 'number' && last < body.last_id) continue;
      }
      if (opts.pollIntervalMs) await this.pause(opts.pollIntervalMs);
    }
  }
}

function parseSseBlock(block) {
  const frame = {};
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) {
      frame.comment = true;
      continue;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`;
    else if (field === 'event') frame.event = value;
    else if (field === 'id') frame.id = value;
    else if (field === 'retry') frame.retry = Number(value);
  }
  return frame;
}

async function errorFrom(res) {
  let body = null;
  try {
    body = await res.json();
  } catch (_) {}
  const extra = { status: res.status };
  const after = Number(res.headers.get('Retry-After'));
  if (Number.isFinite(after) && after >= 0 && res.headers.has('Retry-After')) extra.retryAfterMs = after * 1000;
  if (Number.isFinite(body?.retry_after_ms)) extra.retryAfterMs = body.retry_after_ms;
  return new HubError(body?.error ?? `http_${res.status}`, body?.message ?? res.statusText, extra);
}
